//! Finding and running a revision's hook scripts.
//!
//! A hook for step `post-sync` is `post-sync.sh` at the top of the revision,
//! or `ftl/post-sync` (the ftl 0.2.x layout, where `ftl/post-spool` is the old
//! name of post-sync); the first one found runs. It must resolve to a regular
//! file inside the revision: anything else present under those names is
//! refused with an error rather than silently skipped.
//!
//! It runs in the revision directory, stdin from /dev/null, in its own process
//! group (so a timeout kills everything it started), with `FTL_*` variables
//! added to the inherited environment. Its stdout and stderr are re-emitted
//! line by line as they arrive, each line prefixed with `<revision> <step>: `.
//!
//! When to run which step is the caller's business.

use std::fmt;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures::future::FusedFuture;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{ChildStderr, ChildStdout, Command};

use crate::names::RevisionName;

/// Longest line re-emitted as one: longer ones are split, so a hook printing
/// megabytes without a newline never makes us buffer them.
const MAX_LINE: usize = 64 * 1024;
/// How long we keep reading a hook's output after it exited: background
/// processes it left may hold the pipes open forever.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);
/// Retries of a spawn failing with ETXTBSY: a file just written by this
/// (multi-threaded) process can be briefly held open by a concurrent fork.
const BUSY_RETRIES: u32 = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    PostSync,
    PreJump,
    UnJump,
    PostJump,
    PreRemove,
    Validate,
}

impl Step {
    pub const ALL: [Step; 6] = [
        Step::PostSync,
        Step::PreJump,
        Step::UnJump,
        Step::PostJump,
        Step::PreRemove,
        Step::Validate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::PostSync => "post-sync",
            Step::PreJump => "pre-jump",
            Step::UnJump => "un-jump",
            Step::PostJump => "post-jump",
            Step::PreRemove => "pre-remove",
            Step::Validate => "validate",
        }
    }

    /// Where the hook may be, relative to the revision, first match wins. A
    /// revision with an `ftl/` directory takes its hooks from there only, as
    /// ftl 0.2.x did (so an application's own `validate.sh` is never taken
    /// for a hook); one without uses the top-level `<step>.sh` names.
    fn candidates(self, ftl_dir: bool) -> &'static [&'static str] {
        match (self, ftl_dir) {
            (Step::PostSync, true) => &["ftl/post-sync", "ftl/post-spool"],
            (Step::PreJump, true) => &["ftl/pre-jump"],
            (Step::UnJump, true) => &["ftl/un-jump"],
            (Step::PostJump, true) => &["ftl/post-jump"],
            (Step::PreRemove, true) => &["ftl/pre-remove"],
            (Step::Validate, true) => &["ftl/validate"],
            (Step::PostSync, false) => &["post-sync.sh"],
            (Step::PreJump, false) => &["pre-jump.sh"],
            (Step::UnJump, false) => &["un-jump.sh"],
            (Step::PostJump, false) => &["post-jump.sh"],
            (Step::PreRemove, false) => &["pre-remove.sh"],
            (Step::Validate, false) => &["validate.sh"],
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a hook is told about where it runs.
#[derive(Debug, Clone)]
pub struct HookContext {
    pub root: PathBuf,
    pub revision: RevisionName,
    pub revision_path: PathBuf,
    pub current: Option<RevisionName>,
    pub previous: Option<RevisionName>,
    /// `None`: no limit.
    pub timeout: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("the {step} hook of {revision} {}", describe_failure(*.status, *.signal))]
    Failed {
        revision: RevisionName,
        step: Step,
        /// The exit code, or 1 when killed by a signal.
        status: i32,
        signal: Option<i32>,
    },
    #[error("the {step} hook of {revision} did not finish within {timeout:?}; killed it")]
    TimedOut {
        revision: RevisionName,
        step: Step,
        timeout: Duration,
    },
    #[error("cannot run the {step} hook {path} of {revision}: {source}")]
    Spawn {
        revision: RevisionName,
        step: Step,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("refusing to run the {step} hook {path} of {revision}: {reason}")]
    Refused {
        revision: RevisionName,
        step: Step,
        path: PathBuf,
        reason: &'static str,
    },
}

fn describe_failure(status: i32, signal: Option<i32>) -> String {
    match signal {
        Some(sig) => format!("was killed by signal {sig}"),
        None => format!("failed with exit status {status}"),
    }
}

impl HookError {
    /// The exit status ftl ends with: the hook's own, 1 when it was killed
    /// (by a signal or by our timeout) or could not run.
    pub fn exit_code(&self) -> i32 {
        match self {
            HookError::Failed { status, .. } if *status != 0 => *status,
            _ => 1,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Where annotated hook output goes. The default, [`StdOutput`], writes to
/// our stdout/stderr; a caller with progress bars can route it around them.
pub trait HookOutput: Send + Sync {
    /// One line, already prefixed, without its newline.
    fn line(&self, stream: Stream, line: &str);
}

/// Hook stdout to our stdout, hook stderr to our stderr.
pub struct StdOutput;

impl HookOutput for StdOutput {
    fn line(&self, stream: Stream, line: &str) {
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        // One write under the lock: lines of hooks running at once never mix.
        // A closed stdout must not fail the hook, so errors are dropped.
        let _ = match stream {
            Stream::Stdout => io::stdout().lock().write_all(&buf),
            Stream::Stderr => io::stderr().lock().write_all(&buf),
        };
    }
}

/// Makes the sink of each hook run, so that the caller (the command, which
/// knows the terminal and the log format) decides where hook output goes.
pub trait HookSink: Send + Sync {
    fn output(&self, step: Step, ctx: &HookContext) -> Arc<dyn HookOutput>;
}

/// Every hook's output to our stdout and stderr as it is.
impl HookSink for StdOutput {
    fn output(&self, _: Step, _: &HookContext) -> Arc<dyn HookOutput> {
        Arc::new(StdOutput)
    }
}

/// Runs the hook of `step`, if the revision has one, its output going to
/// `output`: `Ok(true)` when it ran and succeeded, `Ok(false)` when there is none.
pub async fn run(
    step: Step,
    ctx: &HookContext,
    output: Arc<dyn HookOutput>,
) -> Result<bool, HookError> {
    let Some(hook) = find(step, ctx).await? else {
        return Ok(false);
    };
    tracing::info!(
        "running the {step} hook {} of {}",
        hook.shown.display(),
        ctx.revision
    );
    let spawn_err = |source| HookError::Spawn {
        revision: ctx.revision.clone(),
        step,
        path: hook.shown.clone(),
        source,
    };

    let mut via_shell = !hook.executable;
    let mut busy = 0;
    let mut child = loop {
        match command(step, ctx, &hook.real, via_shell).spawn() {
            Ok(child) => break child,
            Err(e) if e.kind() == io::ErrorKind::ExecutableFileBusy && busy < BUSY_RETRIES => {
                busy += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Executable but no `#!` line: do what a shell would do.
            Err(e) if e.raw_os_error() == Some(libc::ENOEXEC) && !via_shell => via_shell = true,
            Err(e) => return Err(spawn_err(e)),
        }
    };
    // Until we have reaped the hook, anything that stops us (timeout, error,
    // our future being dropped) kills its whole group.
    let mut group = GroupKiller(child.id());

    let prefix = format!("{} {}: ", ctx.revision, step);
    let pumps = [
        child.stdout.take().map(|r| {
            Pump::start(
                r,
                ChildStdout::into_owned_fd,
                &prefix,
                Stream::Stdout,
                &output,
            )
        }),
        child.stderr.take().map(|r| {
            Pump::start(
                r,
                ChildStderr::into_owned_fd,
                &prefix,
                Stream::Stderr,
                &output,
            )
        }),
    ];

    let waited = match ctx.timeout {
        None => Some(child.wait().await),
        Some(limit) => tokio::time::timeout(limit, child.wait()).await.ok(),
    };
    let status = match waited {
        Some(Ok(status)) => {
            // Reaped: the pid may be reused, never signal it again. Processes
            // it left in the background are on their own (a hook may start a
            // daemon on purpose).
            group.0 = None;
            status
        }
        Some(Err(e)) => {
            group.kill();
            let _ = child.wait().await;
            drain(pumps, &ctx.revision, step).await;
            return Err(spawn_err(e));
        }
        None => {
            group.kill();
            let _ = child.wait().await;
            drain(pumps, &ctx.revision, step).await;
            return Err(HookError::TimedOut {
                revision: ctx.revision.clone(),
                step,
                timeout: ctx.timeout.unwrap_or_default(),
            });
        }
    };
    drain(pumps, &ctx.revision, step).await;

    if status.success() {
        return Ok(true);
    }
    let signal = status.signal();
    Err(HookError::Failed {
        revision: ctx.revision.clone(),
        step,
        // Killed by a signal: no exit code, the contract says 1.
        status: status.code().filter(|c| *c != 0).unwrap_or(1),
        signal,
    })
}

/// A hook found in a revision.
struct Hook {
    /// As found (for messages).
    shown: PathBuf,
    /// Resolved, inside the revision (what runs).
    real: PathBuf,
    executable: bool,
}

async fn find(step: Step, ctx: &HookContext) -> Result<Option<Hook>, HookError> {
    // A handful of stats of a local directory: done right here, as handing
    // each to the blocking pool (tokio::fs) costs two context switches apiece.
    find_blocking(step, ctx)
}

fn find_blocking(step: Step, ctx: &HookContext) -> Result<Option<Hook>, HookError> {
    let err = |path: &Path, source| HookError::Spawn {
        revision: ctx.revision.clone(),
        step,
        path: path.to_owned(),
        source,
    };
    let refuse = |path: &Path, reason| HookError::Refused {
        revision: ctx.revision.clone(),
        step,
        path: path.to_owned(),
        reason,
    };
    let base = std::fs::canonicalize(&ctx.revision_path).map_err(|e| err(&ctx.revision_path, e))?;
    // A symlink named `ftl` counts when it leads to a directory; where it
    // leads is checked below like any hook's path.
    let ftl_dir = std::fs::metadata(ctx.revision_path.join("ftl")).is_ok_and(|m| m.is_dir());
    for candidate in step.candidates(ftl_dir) {
        let shown = ctx.revision_path.join(candidate);
        match std::fs::symlink_metadata(&shown) {
            Ok(_) => {}
            // NotADirectory: `ftl` is a file, so there is no `ftl/<step>`.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                continue;
            }
            Err(e) => return Err(err(&shown, e)),
        }
        // Resolves every symlink on the way (the hook itself, or `ftl/`).
        let real = match std::fs::canonicalize(&shown) {
            Ok(real) => real,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(refuse(&shown, "it is a dangling symlink"));
            }
            Err(e) => return Err(err(&shown, e)),
        };
        if !real.starts_with(&base) {
            return Err(refuse(&shown, "it points outside the revision"));
        }
        let meta = std::fs::metadata(&real).map_err(|e| err(&shown, e))?;
        if !meta.is_file() {
            return Err(refuse(&shown, "it is not a regular file"));
        }
        return Ok(Some(Hook {
            shown,
            real,
            executable: meta.permissions().mode() & 0o111 != 0,
        }));
    }
    Ok(None)
}

fn command(step: Step, ctx: &HookContext, script: &Path, via_shell: bool) -> Command {
    let mut cmd = if via_shell {
        let mut c = Command::new("/bin/sh");
        c.arg(script);
        c
    } else {
        Command::new(script)
    };
    cmd.current_dir(&ctx.revision_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so a timeout can kill what it started too.
        .process_group(0)
        .kill_on_drop(true)
        .env("FTL_ROOT", &ctx.root)
        .env("FTL_PACKAGE", ctx.revision.package.as_str())
        .env("FTL_REVISION", ctx.revision.to_string())
        .env("FTL_REVISION_PATH", &ctx.revision_path)
        .env("FTL_STEP", step.as_str());
    // Removed when absent, so a value inherited from an outer ftl never leaks.
    for (name, value) in [
        ("FTL_CURRENT_REVISION", &ctx.current),
        ("FTL_PREVIOUS_REVISION", &ctx.previous),
    ] {
        match value {
            Some(rev) => cmd.env(name, rev.to_string()),
            None => cmd.env_remove(name),
        };
    }
    cmd
}

/// Kills a hook's process group when armed (holds the group id, which is the
/// hook's pid) and dropped or told to.
struct GroupKiller(Option<u32>);

impl GroupKiller {
    fn kill(&mut self) {
        let Some(pid) = self.0.take() else { return };
        // Guard against 0 and 1: kill(0) is our own group, kill(-1) everyone.
        let Ok(pgid) = i32::try_from(pid) else { return };
        if pgid > 1 {
            // SAFETY: plain syscall on integers; a failure (ESRCH: all gone)
            // needs no handling.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A task re-emitting one output stream of a hook, which can be told to stop
/// and give the pipe back.
struct Pump {
    task: tokio::task::JoinHandle<Option<OwnedFd>>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl Pump {
    fn start<R: AsyncRead + Unpin + Send + 'static>(
        reader: R,
        into_fd: fn(R) -> io::Result<OwnedFd>,
        prefix: &str,
        stream: Stream,
        output: &Arc<dyn HookOutput>,
    ) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let lines = LineSplitter::new(prefix.to_owned(), stream, output.clone());
        let task = tokio::spawn(async move {
            let reader = pump(reader, lines, stopped).await?;
            into_fd(reader).ok()
        });
        Self { task, stop }
    }
}

/// Waits for the output pumps to reach end of file, for a bounded time. Past
/// it, processes the hook left in the background still hold its output (a
/// daemon started with `&`): the pipes go to a `cat` that outlives us and
/// discards what they write, so that they never die of SIGPIPE.
async fn drain(pumps: [Option<Pump>; 2], revision: &RevisionName, step: Step) {
    let (tasks, stops): (Vec<_>, Vec<_>) = pumps
        .into_iter()
        .flatten()
        .map(|p| (p.task, p.stop))
        .unzip();
    let mut tasks: Vec<_> = tasks.into_iter().map(futures::FutureExt::fuse).collect();
    let all = futures::future::join_all(tasks.iter_mut());
    if tokio::time::timeout(OUTPUT_GRACE, all).await.is_ok() {
        return;
    }
    for stop in stops {
        let _ = stop.send(());
    }
    let mut handed = true;
    for task in tasks {
        if task.is_terminated() {
            continue;
        }
        if let Ok(Some(fd)) = task.await {
            handed &= discard_elsewhere(fd).is_ok();
        }
    }
    let fate = if handed {
        "its output is discarded from now on"
    } else {
        "it may die at its next write"
    };
    tracing::warn!(
        "the {step} hook of {revision} left a process holding its output \
         (a daemon started in the background?): {fate}"
    );
}

/// Hands the read end of a hook's pipe to a detached `cat >/dev/null`.
fn discard_elsewhere(fd: OwnedFd) -> io::Result<()> {
    // Tokio made the pipe non-blocking; cat expects to block.
    // SAFETY: fcntl on a descriptor we own, with no pointer arguments.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0
        || unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0
    {
        return Err(io::Error::last_os_error());
    }
    std::process::Command::new("cat")
        .stdin(std::process::Stdio::from(fd))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // Its own group: a Ctrl-C meant for ftl does not reach it.
        .process_group(0)
        .spawn()
        .map(drop)
}

/// Re-emits `reader` line by line, as it arrives, each line prefixed, until
/// end of file; when told to stop, gives the reader back.
async fn pump<R: AsyncRead + Unpin>(
    reader: R,
    mut lines: LineSplitter,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> Option<R> {
    let mut reader = BufReader::new(reader);
    let mut stop = std::pin::pin!(stop);
    let mut stopped = false;
    loop {
        tokio::select! {
            read = reader.fill_buf() => match read {
                Ok([]) => break,
                Ok(buf) => {
                    let used = lines.feed(buf);
                    reader.consume(used);
                }
                // EIO or the like: the rest is lost, but the hook still runs.
                Err(_) => break,
            },
            r = &mut stop, if !stop.is_terminated() => {
                // A dropped sender (our caller went away) is no stop.
                if r.is_ok() {
                    stopped = true;
                    break;
                }
            }
        }
    }
    lines.finish();
    stopped.then(|| reader.into_inner())
}

/// Bytes in, bounded annotated lines out.
struct LineSplitter {
    prefix: String,
    stream: Stream,
    output: Arc<dyn HookOutput>,
    line: Vec<u8>,
}

impl LineSplitter {
    fn new(prefix: String, stream: Stream, output: Arc<dyn HookOutput>) -> Self {
        Self {
            prefix,
            stream,
            output,
            line: Vec::new(),
        }
    }

    /// Takes what it can of `buf`; returns how many bytes it used.
    fn feed(&mut self, buf: &[u8]) -> usize {
        if self.line.len() >= MAX_LINE {
            // Cannot happen (a full line is split at once), but taking nothing
            // would spin forever.
            self.emit_split();
        }
        let room = MAX_LINE - self.line.len();
        match buf.iter().position(|&b| b == b'\n') {
            Some(nl) if nl <= room => {
                self.line.extend_from_slice(&buf[..nl]);
                if self.line.last() == Some(&b'\r') {
                    self.line.pop();
                }
                self.emit_all();
                nl + 1
            }
            _ => {
                let take = buf.len().min(room);
                self.line.extend_from_slice(&buf[..take]);
                if self.line.len() >= MAX_LINE {
                    self.emit_split();
                }
                take
            }
        }
    }

    fn finish(&mut self) {
        if !self.line.is_empty() {
            self.emit_all();
        }
    }

    fn emit_all(&mut self) {
        let line = std::mem::take(&mut self.line);
        self.emit(&line);
    }

    /// Emits a too-long line's head, keeping an incomplete UTF-8 character
    /// at its end for the next piece rather than mangling it.
    fn emit_split(&mut self) {
        let cut = match std::str::from_utf8(&self.line) {
            Err(e) if e.error_len().is_none() && e.valid_up_to() > 0 => e.valid_up_to(),
            _ => self.line.len(),
        };
        let rest = self.line.split_off(cut);
        let head = std::mem::replace(&mut self.line, rest);
        self.emit(&head);
    }

    fn emit(&self, bytes: &[u8]) {
        let text = format!("{}{}", self.prefix, String::from_utf8_lossy(bytes));
        self.output.line(self.stream, &text);
    }
}

#[cfg(test)]
mod tests;
