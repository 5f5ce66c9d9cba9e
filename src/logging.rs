//! Log lines on stderr: plain and line-oriented (fan-out and cron), or JSON.
//!
//! A text line is `LEVEL message`; when stderr is neither a terminal nor the
//! journal (a log file, a pipe), it starts with the time, UTC to the second
//! (`2026-12-06T13:45:01Z INFO …`), so that a cron log says when things
//! happened. The journal and a person at a terminal know the time already.

use std::io::{self, IsTerminal as _, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::cli::{GlobalArgs, LogFormat};
use crate::hooks::{HookContext, HookOutput, HookSink, StdOutput, Step, Stream};

static JSON: AtomicBool = AtomicBool::new(false);
/// Text lines on stderr start with the time (see the module's comment).
static STAMPED: AtomicBool = AtomicBool::new(false);

/// Whether stderr is the journal: systemd sets `JOURNAL_STREAM` to the
/// `device:inode` of the stream it gives a service, which its children
/// inherit even when their stderr goes elsewhere, so the two are compared.
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd as _;
    use std::os::unix::fs::MetadataExt as _;
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let Ok(fd) = io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(fd)
        .metadata()
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

pub fn init(args: &GlobalArgs) {
    let level = match (args.quiet, args.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    // Our own crate at the chosen level; the SDK's chatter only when asked
    // for (-vv, FTL_LOG). Its warnings are multi-line debug dumps (cron mails
    // them every minute): by default the first one becomes one line of ours.
    let asked = args.verbose >= 2 || std::env::var_os("FTL_LOG").is_some();
    let default = if args.verbose >= 2 {
        level.to_owned()
    } else {
        format!("ftl={level}")
    };
    let filter = EnvFilter::try_from_env("FTL_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    JSON.store(args.log_format == LogFormat::Json, Ordering::Relaxed);
    let terminal = io::stderr().is_terminal();
    let stamped = !terminal && !stderr_is_journal();
    STAMPED.store(stamped, Ordering::Relaxed);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(|| Stderr)
        .with_target(false);
    let fmt = match args.log_format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Text => fmt
            .with_ansi(terminal)
            .event_format(TextLine { stamped })
            .boxed(),
    };
    let sdk = (!asked).then(|| {
        SdkWarnings.with_filter(tracing_subscriber::filter::filter_fn(|m| {
            !m.target().starts_with("ftl") && *m.level() <= tracing::Level::WARN
        }))
    });
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(sdk)
        .try_init();
}

/// `[time ]LEVEL message`: no padding before the level (so that
/// `grep '^WARN'` finds the warnings of a terminal or the journal), the
/// level coloured on a terminal.
struct TextLine {
    stamped: bool,
}

impl<S, N> FormatEvent<S, N> for TextLine
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        if self.stamped {
            write!(w, "{} ", utc(SystemTime::now(), false))?;
        }
        let level = *event.metadata().level();
        if w.has_ansi_escapes() {
            let colour = match level {
                tracing::Level::ERROR => "31",
                tracing::Level::WARN => "33",
                tracing::Level::INFO => "32",
                tracing::Level::DEBUG => "34",
                tracing::Level::TRACE => "35",
            };
            write!(w, "\x1b[{colour}m{level}\x1b[0m ")?;
        } else {
            write!(w, "{level} ")?;
        }
        ctx.format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// `line` as a text line of stderr: with the time in front when lines are
/// stamped.
fn stamp(line: &str) -> String {
    if STAMPED.load(Ordering::Relaxed) {
        format!("{} {line}", utc(SystemTime::now(), false))
    } else {
        line.to_owned()
    }
}

/// Stands in for the SDK's (and its libraries') warnings, which are debug
/// dumps over several lines: the first one becomes one line of ftl's,
/// naming where it came from and how to see it; the rest are not shown.
struct SdkWarnings;

static SDK_WARNED: AtomicBool = AtomicBool::new(false);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SdkWarnings {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if SDK_WARNED.swap(true, Ordering::Relaxed) {
            return;
        }
        let from = event.metadata().target();
        let crate_name = from.split("::").next().unwrap_or(from);
        tracing::warn!(
            "the AWS SDK reported a problem ({from}); FTL_LOG={crate_name}=warn shows its details"
        );
    }
}

/// The line a failed command ends with, one per failure: `ftl: error: …`
/// (after the time, when lines are stamped), or with `--log-format json` a
/// JSON line (level ERROR) like every other on stderr.
pub fn report_error(message: &str, exit_status: u8) {
    let line = if JSON.load(Ordering::Relaxed) {
        serde_json::json!({
            "timestamp": utc(SystemTime::now(), true),
            "level": "ERROR",
            "message": message,
            "exit_status": exit_status,
        })
        .to_string()
    } else {
        stamp(&format!("ftl: error: {message}"))
    };
    crate::progress::suspend(|| StdOutput.line(Stream::Stderr, &line));
}

/// stderr, with the download bars (if any) moved out of the way of each line.
struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        crate::progress::suspend(|| io::stderr().write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// Where a hook's output goes: annotated lines on our stdout and stderr; with
/// `--log-format json`, its stderr lines become JSON log lines too, so that
/// every line on stderr parses.
pub struct HookLog;

impl HookSink for HookLog {
    fn output(&self, step: Step, ctx: &HookContext) -> Arc<dyn HookOutput> {
        Arc::new(HookLines {
            json: JSON.load(Ordering::Relaxed),
            revision: ctx.revision.to_string(),
            step,
        })
    }
}

struct HookLines {
    json: bool,
    revision: String,
    step: Step,
}

impl HookOutput for HookLines {
    fn line(&self, stream: Stream, line: &str) {
        let line = if stream == Stream::Stdout {
            // stdout carries results: never stamped.
            line.to_owned()
        } else if self.json {
            serde_json::json!({
                "timestamp": utc(SystemTime::now(), true),
                "level": "INFO",
                "message": line,
                "revision": self.revision,
                "step": self.step.as_str(),
                "stream": "stderr",
            })
            .to_string()
        } else {
            stamp(line)
        };
        crate::progress::suspend(|| StdOutput.line(stream, &line));
    }
}

/// RFC 3339 in UTC: `2026-01-02T03:04:05Z`, or with `micros`
/// `2026-01-02T03:04:05.678901Z`, the format of tracing's JSON timestamps.
fn utc(t: SystemTime, micros: bool) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let whole = crate::names::utc(d.as_secs());
    match whole.strip_suffix('Z') {
        Some(seconds) if micros => format!("{seconds}.{:06}Z", d.subsec_micros()),
        _ => whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        let at = |s| utc(UNIX_EPOCH + Duration::from_micros(s), true);
        assert_eq!(at(0), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::from_micros(951_827_696_789_012);
        assert_eq!(utc(t, false), "2000-02-29T12:34:56Z");
        // 2000-02-29 (a leap day of a century leap year) 12:34:56.789012
        assert_eq!(at(951_827_696_789_012), "2000-02-29T12:34:56.789012Z");
        assert_eq!(at(1_767_225_599_000_001), "2025-12-31T23:59:59.000001Z");
    }
}
