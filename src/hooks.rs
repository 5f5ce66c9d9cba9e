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
mod tests {
    use super::*;
    use std::fs;
    use std::sync::Mutex;
    use std::time::Instant;

    #[derive(Default)]
    struct Collect(Mutex<Vec<(Stream, String, Instant)>>);

    impl HookOutput for Collect {
        fn line(&self, stream: Stream, line: &str) {
            self.0
                .lock()
                .unwrap()
                .push((stream, line.to_owned(), Instant::now()));
        }
    }

    impl Collect {
        fn lines(&self, stream: Stream) -> Vec<String> {
            let all = self.0.lock().unwrap();
            all.iter()
                .filter(|l| l.0 == stream)
                .map(|l| l.1.clone())
                .collect()
        }
    }

    const REV: &str = "my_site.2026112643200Ab";
    const PREFIX: &str = "my_site.2026112643200Ab post-sync: ";

    struct Fixture {
        _dir: tempfile::TempDir,
        ctx: HookContext,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let revision_path = dir.path().join("my_site/revs/2026112643200Ab");
        fs::create_dir_all(&revision_path).unwrap();
        let ctx = HookContext {
            root: dir.path().to_owned(),
            revision: REV.parse().unwrap(),
            revision_path,
            current: Some("my_site.2026010100000AA".parse().unwrap()),
            previous: None,
            timeout: Some(Duration::from_secs(20)),
        };
        Fixture { _dir: dir, ctx }
    }

    fn script(ctx: &HookContext, rel: &str, body: &str, mode: u32) {
        let path = ctx.revision_path.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, body).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    }

    async fn run_collect(step: Step, ctx: &HookContext) -> (Result<bool, HookError>, Arc<Collect>) {
        let out = Arc::new(Collect::default());
        let r = run(step, ctx, out.clone()).await;
        (r, out)
    }

    fn strip(lines: Vec<String>) -> Vec<String> {
        lines
            .into_iter()
            .map(|l| {
                l.strip_prefix(PREFIX)
                    .unwrap_or_else(|| panic!("not annotated: {l}"))
                    .to_owned()
            })
            .collect()
    }

    /// Whether `pid` is gone (or a zombie nobody reaped yet).
    fn dead(pid: &str) -> bool {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .unwrap()
                .trim_start()
                .starts_with('Z'),
        }
    }

    #[tokio::test]
    async fn absent_hook_is_not_an_error() {
        let f = fixture();
        fs::create_dir(f.ctx.revision_path.join("ftl")).unwrap();
        script(&f.ctx, "pre-jump.sh", "exit 1", 0o644);
        let (r, out) = run_collect(Step::PostSync, &f.ctx).await;
        assert!(!r.unwrap());
        assert!(out.0.lock().unwrap().is_empty());
        // `ftl` being a file is fine too.
        fs::remove_dir(f.ctx.revision_path.join("ftl")).unwrap();
        fs::write(f.ctx.revision_path.join("ftl"), "").unwrap();
        assert!(!run_collect(Step::PostSync, &f.ctx).await.0.unwrap());
    }

    #[tokio::test]
    async fn env_cwd_and_non_executable_script_under_sh() {
        let mut f = fixture();
        // No previous revision: FTL_PREVIOUS_REVISION must be absent.
        script(
            &f.ctx,
            "post-sync.sh",
            // FTL_TEST_* are the test run's own (FTL_TEST_STRICT in .ci/run).
            "echo \"cwd=$(pwd)\"\nenv | grep '^FTL_' | grep -v '^FTL_TEST_' | sort\n",
            0o644,
        );
        f.ctx.timeout = None;
        let (r, out) = run_collect(Step::PostSync, &f.ctx).await;
        assert!(r.unwrap());
        let lines = strip(out.lines(Stream::Stdout));
        let rp = f.ctx.revision_path.display().to_string();
        let expected = vec![
            format!("cwd={rp}"),
            "FTL_CURRENT_REVISION=my_site.2026010100000AA".to_owned(),
            "FTL_PACKAGE=my_site".to_owned(),
            format!("FTL_REVISION={REV}"),
            format!("FTL_REVISION_PATH={rp}"),
            format!("FTL_ROOT={}", f.ctx.root.display()),
            "FTL_STEP=post-sync".to_owned(),
        ];
        assert_eq!(lines, expected);
    }

    #[tokio::test]
    async fn executable_script_runs_directly() {
        let f = fixture();
        // Run directly, the kernel hands it to cat; under sh it would echo.
        script(&f.ctx, "ftl/pre-jump", "#!/bin/cat\necho via-sh\n", 0o755);
        let (r, out) = run_collect(Step::PreJump, &f.ctx).await;
        assert!(r.unwrap());
        let lines = out.lines(Stream::Stdout);
        let p = format!("{REV} pre-jump: ");
        assert_eq!(lines, [format!("{p}#!/bin/cat"), format!("{p}echo via-sh")]);
    }

    #[tokio::test]
    async fn executable_without_shebang_still_runs() {
        let f = fixture();
        script(&f.ctx, "post-sync.sh", "echo plain\n", 0o755);
        let (r, out) = run_collect(Step::PostSync, &f.ctx).await;
        assert!(r.unwrap());
        assert_eq!(strip(out.lines(Stream::Stdout)), ["plain"]);
    }

    #[tokio::test]
    async fn exit_status_is_propagated() {
        let f = fixture();
        script(&f.ctx, "post-sync.sh", "echo before; exit 7\n", 0o644);
        let (r, out) = run_collect(Step::PostSync, &f.ctx).await;
        let e = r.unwrap_err();
        assert_eq!(e.exit_code(), 7);
        assert_eq!(
            e.to_string(),
            format!("the post-sync hook of {REV} failed with exit status 7")
        );
        assert_eq!(strip(out.lines(Stream::Stdout)), ["before"]);
    }

    #[tokio::test]
    async fn killed_by_signal_is_status_1() {
        let f = fixture();
        script(&f.ctx, "post-sync.sh", "kill -9 $$\n", 0o644);
        let e = run_collect(Step::PostSync, &f.ctx).await.0.unwrap_err();
        assert!(
            matches!(
                e,
                HookError::Failed {
                    status: 1,
                    signal: Some(9),
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().contains("killed by signal 9"), "{e}");
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let mut f = fixture();
        script(
            &f.ctx,
            "post-sync.sh",
            "sleep 60 &\necho $! > bg.pid\necho started\nsleep 60\n",
            0o644,
        );
        f.ctx.timeout = Some(Duration::from_millis(500));
        let start = Instant::now();
        let (r, out) = run_collect(Step::PostSync, &f.ctx).await;
        let e = r.unwrap_err();
        assert!(matches!(e, HookError::TimedOut { .. }), "{e:?}");
        assert_eq!(e.exit_code(), 1);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(strip(out.lines(Stream::Stdout)), ["started"]);
        let bg = fs::read_to_string(f.ctx.revision_path.join("bg.pid")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !dead(bg.trim()) {
            assert!(
                Instant::now() < deadline,
                "background process {bg} survived"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[tokio::test]
    async fn background_process_holding_output_does_not_hang() {
        let f = fixture();
        script(
            &f.ctx,
            "post-jump.sh",
            "sleep 60 &\necho $! > bg.pid\necho done\n",
            0o644,
        );
        let start = Instant::now();
        let (r, out) = run_collect(Step::PostJump, &f.ctx).await;
        assert!(r.unwrap());
        assert!(start.elapsed() < OUTPUT_GRACE + Duration::from_secs(3));
        assert_eq!(
            out.lines(Stream::Stdout),
            [format!("{REV} post-jump: done")]
        );
        // A daemon started on purpose is left alone; clean up after the test.
        let bg = fs::read_to_string(f.ctx.revision_path.join("bg.pid")).unwrap();
        assert!(!dead(bg.trim()));
        let _ = std::process::Command::new("kill").arg(bg.trim()).status();
    }

    #[tokio::test]
    async fn output_annotated_split_by_stream_and_streamed() {
        let f = fixture();
        script(
            &f.ctx,
            "post-sync.sh",
            "echo out1\necho err1 >&2\nprintf 'crlf\\r\\n'\nprintf '\\377bad\\n'\nsleep 1\necho out2\nprintf 'no newline'\n",
            0o644,
        );
        let (r, out) = run_collect(Step::PostSync, &f.ctx).await;
        assert!(r.unwrap());
        assert_eq!(
            strip(out.lines(Stream::Stdout)),
            ["out1", "crlf", "\u{FFFD}bad", "out2", "no newline"]
        );
        assert_eq!(strip(out.lines(Stream::Stderr)), ["err1"]);
        // Lines arrive as printed, not at the end.
        let all = out.0.lock().unwrap();
        let at = |s: &str| all.iter().find(|l| l.1.ends_with(s)).unwrap().2;
        assert!(at("out2") - at("out1") >= Duration::from_millis(700));
    }

    #[tokio::test]
    async fn huge_lines_are_split_not_buffered() {
        let f = fixture();
        // 200,000 'a' and a 3-byte character straddling the 64 KiB boundary.
        script(
            &f.ctx,
            "post-sync.sh",
            "head -c 65535 /dev/zero | tr '\\0' a; printf '\\342\\202\\254'; head -c 200000 /dev/zero | tr '\\0' a; echo\n",
            0o644,
        );
        let (r, out) = run_collect(Step::PostSync, &f.ctx).await;
        assert!(r.unwrap());
        let lines = strip(out.lines(Stream::Stdout));
        assert!(lines.len() >= 4, "{}", lines.len());
        assert!(lines.iter().all(|l| l.len() <= MAX_LINE));
        let joined: String = lines.concat();
        assert_eq!(joined.len(), 65535 + 3 + 200_000);
        assert!(!joined.contains('\u{FFFD}'));
        assert!(lines[1].starts_with('€'));
    }

    #[tokio::test]
    async fn post_spool_is_the_old_name_of_post_sync() {
        let f = fixture();
        script(&f.ctx, "ftl/post-spool", "echo old\n", 0o644);
        let (r, out) = run_collect(Step::PostSync, &f.ctx).await;
        assert!(r.unwrap());
        assert_eq!(strip(out.lines(Stream::Stdout)), ["old"]);
        // With an `ftl/` directory, a top-level `<step>.sh` is not a hook.
        script(&f.ctx, "post-sync.sh", "echo stray\n", 0o644);
        let (_, out) = run_collect(Step::PostSync, &f.ctx).await;
        assert_eq!(strip(out.lines(Stream::Stdout)), ["old"]);
        // `ftl/post-sync` wins over its old name.
        script(&f.ctx, "ftl/post-sync", "echo new\n", 0o644);
        let (_, out) = run_collect(Step::PostSync, &f.ctx).await;
        assert_eq!(strip(out.lines(Stream::Stdout)), ["new"]);
    }

    #[tokio::test]
    async fn an_ftl_directory_hides_top_level_scripts() {
        let f = fixture();
        // An application's own scripts that happen to have hook names.
        script(&f.ctx, "validate.sh", "exit 1\n", 0o755);
        script(&f.ctx, "pre-remove.sh", "exit 1\n", 0o755);
        script(&f.ctx, "ftl/pre-jump", "echo hooked\n", 0o755);
        for step in [Step::Validate, Step::PreRemove, Step::PostJump] {
            let (r, out) = run_collect(step, &f.ctx).await;
            assert!(!r.unwrap(), "{step}: no hook expected");
            assert!(out.lines(Stream::Stdout).is_empty());
        }
        let (r, out) = run_collect(Step::PreJump, &f.ctx).await;
        assert!(r.unwrap());
        assert_eq!(
            out.lines(Stream::Stdout),
            [format!("{REV} pre-jump: hooked")]
        );
        // Without `ftl/`, the top-level names are the hooks.
        fs::remove_dir_all(f.ctx.revision_path.join("ftl")).unwrap();
        let (r, _) = run_collect(Step::Validate, &f.ctx).await;
        assert!(r.is_err(), "validate.sh is the hook now");
    }

    #[tokio::test]
    async fn hooks_must_stay_inside_the_revision() {
        let f = fixture();
        let outside = tempfile::tempdir().unwrap();
        let evil = outside.path().join("evil.sh");
        fs::write(&evil, "echo escaped\n").unwrap();
        std::os::unix::fs::symlink(&evil, f.ctx.revision_path.join("post-sync.sh")).unwrap();
        let e = run_collect(Step::PostSync, &f.ctx).await.0.unwrap_err();
        assert!(e.to_string().contains("points outside the revision"), "{e}");

        // A directory is not a hook; a link within the revision is fine.
        fs::create_dir(f.ctx.revision_path.join("un-jump.sh")).unwrap();
        let e = run_collect(Step::UnJump, &f.ctx).await.0.unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        script(&f.ctx, "scripts/deploy.sh", "echo inside\n", 0o644);
        std::os::unix::fs::symlink("scripts/deploy.sh", f.ctx.revision_path.join("validate.sh"))
            .unwrap();
        let (r, out) = run_collect(Step::Validate, &f.ctx).await;
        assert!(r.unwrap());
        assert_eq!(
            out.lines(Stream::Stdout),
            [format!("{REV} validate: inside")]
        );

        // Through a linked `ftl/` directory as well.
        std::os::unix::fs::symlink(outside.path(), f.ctx.revision_path.join("ftl")).unwrap();
        fs::rename(&evil, outside.path().join("pre-jump")).unwrap();
        let e = run_collect(Step::PreJump, &f.ctx).await.0.unwrap_err();
        assert!(matches!(e, HookError::Refused { .. }), "{e:?}");
    }

    #[test]
    fn steps_display_as_in_the_spec() {
        let names: Vec<String> = Step::ALL.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            names,
            [
                "post-sync",
                "pre-jump",
                "un-jump",
                "post-jump",
                "pre-remove",
                "validate"
            ]
        );
    }
}
