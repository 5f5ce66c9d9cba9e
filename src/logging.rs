//! Log lines on stderr: plain and line-oriented (fan-out and cron), or JSON.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::cli::{GlobalArgs, LogFormat};
use crate::hooks::{HookContext, HookOutput, HookSink, StdOutput, Step, Stream};

static JSON: AtomicBool = AtomicBool::new(false);

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
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(|| Stderr)
        .with_target(false);
    let fmt = match args.log_format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Text => fmt
            .without_time()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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

/// The one line a failed command ends with: `ftl: error: …`, or with
/// `--log-format json` a JSON line (level ERROR) like every other on stderr.
pub fn report_error(message: &str, exit_status: u8) {
    let line = if JSON.load(Ordering::Relaxed) {
        serde_json::json!({
            "timestamp": rfc3339(SystemTime::now()),
            "level": "ERROR",
            "message": message,
            "exit_status": exit_status,
        })
        .to_string()
    } else {
        format!("ftl: error: {message}")
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
        let line = if self.json && stream == Stream::Stderr {
            serde_json::json!({
                "timestamp": rfc3339(SystemTime::now()),
                "level": "INFO",
                "message": line,
                "revision": self.revision,
                "step": self.step.as_str(),
                "stream": "stderr",
            })
            .to_string()
        } else {
            line.to_owned()
        };
        crate::progress::suspend(|| StdOutput.line(stream, &line));
    }
}

/// `2026-01-02T03:04:05.678901Z`, the format of tracing's JSON timestamps.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = crate::names::civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        d.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        let at = |s| rfc3339(UNIX_EPOCH + Duration::from_micros(s));
        assert_eq!(at(0), "1970-01-01T00:00:00.000000Z");
        // 2000-02-29 (a leap day of a century leap year) 12:34:56.789012
        assert_eq!(at(951_827_696_789_012), "2000-02-29T12:34:56.789012Z");
        assert_eq!(at(1_767_225_599_000_001), "2025-12-31T23:59:59.000001Z");
    }
}
