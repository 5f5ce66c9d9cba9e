//! The command line as clap sees it: raw flags and help texts, no I/O.
//! `settings.rs` turns this into validated settings.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::unpack::Limits;

#[derive(Debug, Parser)]
#[command(
    name = "ftl",
    version = crate::VERSION,
    about = "Deploy software to a fleet through S3: spool, sync, jump.",
    long_about = "Deploy software to a fleet through S3.\n\n\
        An operator spools a package into the bucket and blesses a revision; every node \
        runs `ftl sync` (by hand through ssh, and from cron) to download new revisions and \
        switch to the blessed one.\n\n\
        Configuration is environment variables only: FTL_BUCKET, FTL_ROOT, and the AWS \
        SDK's usual variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, \
        AWS_REGION or AWS_DEFAULT_REGION, AWS_ENDPOINT_URL).",
    after_help = "Examples:\n  ftl spool my_site.tgz\n  ftl jump --master my_site.2026112643200Ab\n  ftl sync\n  ftl status\n\n\
        Exit status: 0 success; 2 usage error; a failed hook's own status; 3 from `ftl status` and \
        `ftl fleet`: not in step, from `--wait`: timed out; 1 any other failure. Guide: docs/guide.md; `ftl man` for the manual page."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    /// `--master` before the command, as ftl 0.2.x's parser allowed
    /// (`ftl --master list`); see [`Cli::into_parts`].
    #[arg(long = "master", hide = true)]
    pub master_first: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The bucket: `name`, `name/prefix`, or `file:///abs/dir` for a local directory
    #[arg(long, global = true, env = "FTL_BUCKET", value_name = "BUCKET")]
    pub bucket: Option<String>,

    /// More output (-v: debug, -vv: trace)
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Only errors and warnings
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Format of the log lines on stderr
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "FTL_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// Requests for object bodies in flight at once, across all downloads
    /// (a large object is fetched as several byte ranges at once)
    #[arg(
        long,
        global = true,
        env = "FTL_CONNECTIONS",
        value_name = "N",
        default_value_t = 16,
        value_parser = clap::value_parser!(u16).range(1..=256)
    )]
    pub connections: u16,

    /// Install, switch to and follow only what a key in this OpenSSH
    /// allowed_signers file signed (see docs/security.md)
    #[arg(long, global = true, env = "FTL_ALLOWED_SIGNERS", value_name = "FILE")]
    pub allowed_signers: Option<PathBuf>,

    /// With FTL_ALLOWED_SIGNERS: follow a bless only when this many distinct
    /// allowed principals signed it (`ftl jump --master --cosign` adds one)
    #[arg(
        long,
        global = true,
        env = "FTL_REQUIRE_SIGNERS",
        value_name = "N",
        default_value_t = 1,
        value_parser = clap::value_parser!(u8).range(1..=16)
    )]
    pub require_signers: u8,

    /// With FTL_ALLOWED_SIGNERS: a signed bless older than this many seconds
    /// makes `status` report the package stale (exit 3): the bucket's view may
    /// be frozen (`ftl jump --master --refresh` re-signs it; 0: no limit)
    #[arg(long, global = true, env = "FTL_MAX_BLESS_AGE", value_name = "SECS")]
    pub max_bless_age: Option<u64>,
}

/// The key that signs what the command writes to the bucket.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// Sign with this key: an OpenSSH private key file (a passphrase is
    /// asked on the terminal), or a public key whose private half is in
    /// ssh-agent (SSH_AUTH_SOCK), as `ssh-keygen -Y sign -f` takes it
    #[arg(long = "sign", env = "FTL_SIGNING_KEY", value_name = "KEY")]
    pub key: Option<PathBuf>,
}

/// The node's root, for the commands that read it.
#[derive(Debug, Args)]
pub struct RootArgs {
    /// The deployment directory on this node
    #[arg(long, env = "FTL_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
}

/// Seconds a hook may run by default: a hung hook holds the root's lock, so
/// without a bound every later sync and an emergency `ftl jump` would wait.
pub const DEFAULT_HOOK_TIMEOUT: u64 = 600;

/// For the commands that change the node: its root, its lock, its hooks.
#[derive(Debug, Args)]
pub struct ChangeArgs {
    #[command(flatten)]
    pub root: RootArgs,

    /// How long to wait for another ftl holding the root's lock, in seconds
    #[arg(
        long,
        env = "FTL_LOCK_TIMEOUT",
        value_name = "SECS",
        default_value_t = 120
    )]
    pub lock_timeout: u64,

    /// Kill a hook script that runs longer than this many seconds (0: no limit)
    #[arg(
        long,
        env = "FTL_HOOK_TIMEOUT",
        value_name = "SECS",
        default_value_t = DEFAULT_HOOK_TIMEOUT
    )]
    pub hook_timeout: u64,
}

/// Where `sync` and `status` leave the node's metrics.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// After the run, write the node's metrics to this file, atomically, in
    /// the Prometheus text format (node_exporter's textfile collector)
    #[arg(long, env = "FTL_METRICS_FILE", value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
}

/// Reports of what this node runs, for `ftl fleet` (see docs/operations.md).
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// After each change on this node (and at least every FTL_REPORT_EVERY),
    /// write a small report of what it runs to the bucket, for `ftl fleet`
    /// (FTL_REPORT=1; 0, false, no, off or empty: off)
    #[arg(
        long,
        env = "FTL_REPORT",
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub report: bool,

    /// This node's name in its reports: letters, digits, '.', '_', '-'
    /// (default: the host name)
    #[arg(long, env = "FTL_NODE_ID", value_name = "NAME")]
    pub node_id: Option<String>,

    /// A node writes its report again at least this often, changed or not;
    /// `fleet` calls a report older than twice this (plus 5m) stale
    /// (e.g. 3600, 90s, 30m, 1h)
    #[arg(
        long,
        env = "FTL_REPORT_EVERY",
        value_name = "DURATION",
        default_value = "1h"
    )]
    pub report_every: String,
}

/// `jump --master --wait`: wait for the fleet's reports.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// With --master: after the bless, wait until PERCENT of the nodes that
    /// report (FTL_REPORT) run it; exit 3 at the timeout, 1 when too many
    /// failed it. Put it after the revision: `--wait 95%`
    #[arg(
        long,
        requires = "master",
        value_name = "PERCENT",
        num_args = 0..=1,
        default_missing_value = "100"
    )]
    pub wait: Option<String>,

    /// With --wait: give up after this long (e.g. 90s, 15m, 1h)
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub wait_timeout: String,
}

/// Caps on what one revision may unpack to.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Refuse a revision that unpacks to more than this many bytes (0: no limit)
    #[arg(
        long,
        env = "FTL_MAX_UNPACKED_BYTES",
        value_name = "BYTES",
        default_value_t = Limits::default().max_unpacked_bytes
    )]
    pub max_unpacked_bytes: u64,

    /// Refuse a revision whose archive has more than this many entries (0: no limit)
    #[arg(
        long,
        env = "FTL_MAX_ENTRIES",
        value_name = "N",
        default_value_t = Limits::default().max_entries
    )]
    pub max_entries: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upload a file as a new revision; prints the revision name
    #[command(
        after_help = "Example:\n  tar -czf my_site.tgz -C build .\n  ftl spool my_site.tgz   # prints my_site.2026112643200Ab"
    )]
    Spool(SpoolArgs),

    /// List packages, or a package's revisions (locally, or in the bucket with --master)
    #[command(
        after_help = "Examples:\n  ftl list\n  ftl list my_site\n  ftl list --master my_site"
    )]
    List(ListArgs),

    /// Show whether this node is in step with the bucket, per package
    #[command(
        long_about = "Show, per package, this node's current and previous revisions, the bucket's \
            blessed and previous ones, and what `ftl sync` would download or remove.\n\n\
            A package is in step when `ftl sync` would change nothing. Read-only: takes no lock.",
        after_help = "Examples:\n  ftl status\n  ftl status my_site --json\n  pssh -h fleet -i ftl status -q   # the laggards exit with status 3\n\n\
            Exit status: 0 every package in step; 3 at least one is not; 1 a package could not be read, or no package directory to check; 2 usage error."
    )]
    Status(StatusArgs),

    /// Download new revisions, switch to the blessed one, drop revisions the bucket no longer has
    #[command(
        after_help = "Examples:\n  ftl sync\n  ftl sync my_site --jobs 8\n  ftl sync --dry-run\n  ftl sync --splay 30 -q   # from cron or a systemd timer"
    )]
    Sync(SyncArgs),

    /// Make a revision current on this node, or bless it in the bucket with --master
    #[command(
        after_help = "Examples:\n  ftl jump my_site.2026112643200Ab\n  ftl jump --master my_site.2026112643200Ab\n  ftl jump --master --refresh my_site   # from a periodic CI job (FTL_MAX_BLESS_AGE)\n  ftl jump --master my_site.2026112643200Ab --wait 95% --wait-timeout 15m   # with FTL_REPORT on the nodes"
    )]
    Jump(JumpArgs),

    /// Swap current and previous revisions, on this node or in the bucket with --master
    #[command(
        name = "jump-back",
        after_help = "Examples:\n  ftl jump-back my_site\n  ftl jump-back --master my_site"
    )]
    JumpBack(JumpBackArgs),

    /// Sign a revision in the bucket that was spooled unsigned (or re-sign it with another key)
    #[command(
        after_help = "Example:\n  ftl sign --sign ~/.ssh/deploy_ed25519 my_site.2026112643200Ab\n\n\
            The object is downloaded and hashed: what is signed is what the nodes will get."
    )]
    Sign(SignCmdArgs),

    /// The bucket's history: each bless and jump-back, newest first (with --master)
    #[command(
        long_about = "Print the blesses of a package (every package without PKG), newest first: \
            when, which revision, which previous, by whom ($USER@host of the blessing client) \
            and, when signed, with which key (its SHA256 fingerprint). `jump --master`, \
            `jump-back --master` and `--cosign` record them in the bucket; sync never reads them.",
        after_help = "Examples:\n  ftl log --master my_site\n  ftl log --master --limit 0 --json"
    )]
    Log(LogArgs),

    /// What every reporting node runs, from their reports in the bucket (FTL_REPORT)
    #[command(
        long_about = "Print one line per node and package, from the reports nodes write with \
            FTL_REPORT=1: node, revision, in step with the blessed revision or not, result, age \
            of the report; failures and laggards first, then a summary line per package. Needs \
            FTL_BUCKET only; reads the listing of reports, the pointers, and failed reports.",
        after_help = "Examples:\n  ftl fleet\n  ftl fleet my_site --json\n\n\
            Exit status: 0 every fresh report in step; 3 at least one is not; 1 no report \
            to show, or the bucket could not be read; 2 usage error."
    )]
    Fleet(FleetArgs),

    /// Delete a revision from the bucket (never the blessed one; the previous one only with --force)
    #[command(
        after_help = "Examples:\n  ftl purge --master my_site.2026112643200Ab\n  ftl purge --master --dry-run my_site.2026112643200Ab"
    )]
    Purge(PurgeArgs),

    /// Delete a revision from this node (never the current or the previous one)
    #[command(after_help = "Example:\n  ftl remove my_site.2026112643200Ab")]
    Remove(RemoveArgs),

    /// Delete local revisions beyond the newest N, never current or previous nor what sync wants
    #[command(
        long_about = "Delete local revisions beyond the newest N, never current or previous, nor \
            any revision the next sync would download again: from the older of the bucket's \
            blessed and previous revisions on, as the last sync saw them (see docs/node.md).",
        after_help = "Examples:\n  ftl clean\n  ftl clean my_site --keep 3\n  ftl clean --dry-run"
    )]
    Clean(CleanArgs),

    /// Print a shell completion script on stdout
    #[command(
        after_help = "Examples:\n  ftl completions bash > /etc/bash_completion.d/ftl\n  ftl completions zsh > \"${fpath[1]}/_ftl\"\n  ftl completions fish > ~/.config/fish/completions/ftl.fish"
    )]
    Completions(CompletionsArgs),

    /// Print the manual page (roff) on stdout, or write one per command into a directory
    #[command(
        after_help = "Examples:\n  ftl man | man -l -\n  ftl man --dir /usr/local/share/man/man1"
    )]
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct SpoolArgs {
    /// The file; its name up to the first '.' is the package name
    pub file: PathBuf,
    /// Upload a delta-ready archive (.tar.zst, .tgz, .tar.gz): one compressed
    /// piece per entry and an index, so that nodes holding an earlier revision
    /// fetch only what changed (see docs/performance.md)
    #[arg(long, env = "FTL_DELTA", value_parser = clap::builder::FalseyValueParser::new())]
    pub delta: bool,
    #[command(flatten)]
    pub sign: SignArgs,
}

#[derive(Debug, Args)]
pub struct SignCmdArgs {
    /// The revision, `<package>.<id>`
    pub revision: String,
    #[command(flatten)]
    pub sign: SignArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// A package: list its revisions
    pub package: Option<String>,
    /// List the bucket instead of this node
    #[arg(long)]
    pub master: bool,
    /// One JSON document on stdout, every package with its revisions (see docs/json.md)
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub root: RootArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only these packages (default: every package directory under the root)
    pub packages: Vec<String>,
    /// One JSON document on stdout (see docs/json.md)
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub root: RootArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Only these packages (default: every package directory under the root)
    pub packages: Vec<String>,
    /// Downloads in parallel
    #[arg(long, short, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Print the plan and change nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// List the bucket at least this often (seconds), even when its change
    /// marker says nothing changed
    #[arg(
        long,
        env = "FTL_FULL_EVERY",
        value_name = "SECS",
        default_value_t = 600
    )]
    pub full_every: u64,
    /// Wait a random time in [0, SECS) first, so a fleet's timers do not hit the bucket at once
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub splay: u64,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    /// Try revisions that failed on this node at once, instead of waiting
    /// for their back-off (1 min after a failure, doubling up to 1 h)
    #[arg(long)]
    pub retry_failed: bool,
    /// Give every revision installed to this user (and group) before its
    /// hooks run; ftl must run as root. Default: ftl's own user
    #[arg(long, env = "FTL_OWNER", value_name = "USER[:GROUP]")]
    pub owner: Option<String>,
    /// Install a delta-ready revision from the node's earlier one and the
    /// pieces that changed; 0: always download whole revisions
    #[arg(
        long,
        env = "FTL_DELTA",
        value_name = "0|1",
        default_value = "1",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub delta: bool,
    #[command(flatten)]
    pub node: ChangeArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub report: ReportArgs,
}

#[derive(Debug, Args)]
pub struct JumpArgs {
    /// The revision, `<package>.<id>` (with --refresh: the package, or its
    /// blessed revision)
    pub revision: String,
    /// Bless the revision in the bucket instead (every node follows on its next sync)
    #[arg(long)]
    pub master: bool,
    /// With --master: add a signature (--sign KEY) to the signed bless of
    /// REV, for nodes that need more than one signer (FTL_REQUIRE_SIGNERS)
    #[arg(long, requires = "master")]
    pub cosign: bool,
    /// With --master: sign the package's signed bless again (same revisions,
    /// higher sequence, time now) for nodes with FTL_MAX_BLESS_AGE; it must
    /// verify against FTL_ALLOWED_SIGNERS, which this needs too
    #[arg(long, requires = "master", conflicts_with = "cosign")]
    pub refresh: bool,
    /// Switch even if the old revision's un-jump hook fails (the failure is still reported)
    #[arg(long)]
    pub ignore_unjump_failure: bool,
    #[command(flatten)]
    pub sign: SignArgs,
    #[command(flatten)]
    pub node: ChangeArgs,
    #[command(flatten)]
    pub report: ReportArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args)]
pub struct JumpBackArgs {
    pub package: String,
    /// Swap the blessed and previous revisions in the bucket instead
    #[arg(long)]
    pub master: bool,
    /// Switch even if the old revision's un-jump hook fails (the failure is still reported)
    #[arg(long)]
    pub ignore_unjump_failure: bool,
    #[command(flatten)]
    pub sign: SignArgs,
    #[command(flatten)]
    pub node: ChangeArgs,
    #[command(flatten)]
    pub report: ReportArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Only this package
    pub package: Option<String>,
    /// Required: the history is the bucket's
    #[arg(long)]
    pub master: bool,
    /// One JSON document on stdout (see docs/json.md)
    #[arg(long)]
    pub json: bool,
    /// The last N blesses of each package (0: all)
    #[arg(long, short = 'n', value_name = "N", default_value_t = 20)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct FleetArgs {
    /// Only these packages (default: every package that has reports)
    pub packages: Vec<String>,
    /// A JSON array on stdout, one object per node and package (see docs/json.md)
    #[arg(long)]
    pub json: bool,
    /// How often nodes write their reports at least: a report older than
    /// twice this (plus 5m) is stale
    #[arg(
        long,
        env = "FTL_REPORT_EVERY",
        value_name = "DURATION",
        default_value = "1h"
    )]
    pub report_every: String,
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    pub revision: String,
    /// Required: purge acts on the bucket
    #[arg(long)]
    pub master: bool,
    /// Purge the bucket's previous revision too (never the blessed one)
    #[arg(long)]
    pub force: bool,
    /// Print what would be deleted and change nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    pub revision: String,
    /// Print what would be deleted and change nothing (no hook runs, no lock)
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    #[command(flatten)]
    pub node: ChangeArgs,
}

#[derive(Debug, Args)]
pub struct CleanArgs {
    pub packages: Vec<String>,
    /// How many of the newest revisions to keep (besides those sync wants)
    #[arg(long, default_value_t = 5)]
    pub keep: usize,
    /// Print what would be deleted and change nothing (no hook runs, no lock)
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    #[command(flatten)]
    pub node: ChangeArgs,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write ftl.1 and one ftl-<command>.1 per command into this directory
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

impl Cli {
    /// The global flags and the command, with a `--master` given before the
    /// command moved to it.
    pub fn into_parts(self) -> Result<(GlobalArgs, Command), String> {
        let mut command = self.command;
        if self.master_first {
            match &mut command {
                Command::List(ListArgs { master, .. })
                | Command::Jump(JumpArgs { master, .. })
                | Command::JumpBack(JumpBackArgs { master, .. })
                | Command::Purge(PurgeArgs { master, .. })
                | Command::Log(LogArgs { master, .. }) => *master = true,
                _ => {
                    return Err("--master applies to list, jump, jump-back, purge and log".into());
                }
            }
        }
        Ok((self.global, command))
    }
}

impl Command {
    /// Whether the process sets its allocator's parameters (see
    /// [`crate::memory`]): every command but spool, whose rewrite takes and
    /// frees blocks of a few MiB over and over on several threads, which
    /// glibc's own rule serves best.
    pub fn tunes_allocator(&self) -> bool {
        !matches!(self, Self::Spool(_))
    }

    /// Commands that only touch the local root: a few file-system calls in
    /// sequence, best run on one thread (no worker pool to start, no hand-over
    /// between threads).
    pub fn is_local(&self) -> bool {
        match self {
            Self::List(ListArgs { master, .. })
            | Self::Jump(JumpArgs { master, .. })
            | Self::JumpBack(JumpBackArgs { master, .. }) => !master,
            Self::Remove(_) | Self::Clean(_) => true,
            _ => false,
        }
    }
}

/// `Cli::try_parse_from`, with clap's errors fitted to configuration by
/// environment: a bad value that came from a variable names the variable
/// (not only the flag it stands for), and the usage line is the command's
/// plain one (clap's shows the options the environment set as if typed).
pub fn parse_from(args: Vec<std::ffi::OsString>) -> Result<Cli, clap::Error> {
    use clap::CommandFactory as _;
    use clap::error::{ContextKind, ContextValue};
    let mut error = match Cli::try_parse_from(&args) {
        Ok(cli) => return Ok(cli),
        Err(e) => e,
    };
    // Help and version are not errors.
    if !error.use_stderr() {
        return Err(error);
    }
    let mut cli = Cli::command();
    cli.build();
    let used = Cli::command()
        .ignore_errors(true)
        .try_get_matches_from(&args)
        .ok()
        .and_then(|m| m.subcommand_name().map(str::to_owned));
    let mut cmd = used
        .and_then(|name| cli.find_subcommand(name).cloned())
        .unwrap_or(cli);
    if let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) = (
        error.get(ContextKind::InvalidArg),
        error.get(ContextKind::InvalidValue),
    ) && let Some(var) = from_environment(&cmd, &args, arg, value)
    {
        // clap's own line, the flag's name replaced by where the value came from.
        let text = error.render().to_string();
        let first = text.split("\n\n").next().unwrap_or_default();
        let message = first
            .trim_start_matches("error: ")
            .replace(&format!("'{arg}'"), &format!("{var} (which sets {arg})"));
        return Err(clap::Error::raw(error.kind(), message).format(&mut cmd));
    }
    if error.get(ContextKind::Usage).is_some() {
        error.insert(
            ContextKind::Usage,
            ContextValue::StyledStr(cmd.render_usage()),
        );
    }
    Err(error)
}

/// The variable that gave `value` to the flag `arg` (`--lock-timeout <SECS>`),
/// if the flag was not on the command line.
fn from_environment(
    cmd: &clap::Command,
    args: &[std::ffi::OsString],
    arg: &str,
    value: &str,
) -> Option<String> {
    let long = arg.split_whitespace().next()?.strip_prefix("--")?;
    let env = cmd
        .get_arguments()
        .find(|a| a.get_long() == Some(long))?
        .get_env()?
        .to_str()?
        .to_owned();
    let flag = format!("--{long}");
    let typed = args.iter().skip(1).any(|a| {
        let a = a.to_string_lossy();
        a == flag || a.starts_with(&format!("{flag}="))
    });
    (!typed && std::env::var_os(&env).is_some_and(|v| v == value)).then_some(env)
}
