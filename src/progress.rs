//! Progress bars, on a terminal only: fan-out and cron get plain log lines.

use std::io::IsTerminal;
use std::sync::{Arc, OnceLock};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::store::Progress;

pub struct Bar(ProgressBar);

impl Bar {
    pub fn callback(&self) -> Progress {
        let bar = self.0.clone();
        Arc::new(move |n| bar.set_position(n))
    }

    pub fn finish(self) {
        self.0.finish_and_clear();
    }
}

fn style() -> ProgressStyle {
    ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// A byte-count bar on stderr, or `None` when stderr is not a terminal.
pub fn bytes(total: u64, label: &str) -> Option<Bar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(total);
    bar.set_style(style());
    bar.set_message(label.to_owned());
    Some(Bar(bar))
}

/// The bars of parallel downloads, when stderr is a terminal.
fn downloads() -> Option<&'static MultiProgress> {
    static MULTI: OnceLock<Option<MultiProgress>> = OnceLock::new();
    MULTI
        .get_or_init(|| std::io::stderr().is_terminal().then(MultiProgress::new))
        .as_ref()
}

/// The bars of `ftl sync`'s downloads, when stderr is a terminal.
pub struct Bars;

impl crate::sync::Progress for Bars {
    fn start(&self, label: &str, total: u64) -> Box<dyn Fn(u64) + Send + Sync> {
        let Some(multi) = downloads() else {
            return Box::new(|_| {});
        };
        let bar = multi.add(ProgressBar::new(total));
        bar.set_style(style());
        bar.set_message(label.to_owned());
        // The bar goes away with the callback, that is with the download.
        let guard = ClearOnDrop(bar);
        Box::new(move |n| guard.0.inc(n))
    }
}

struct ClearOnDrop(ProgressBar);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// Run `f` (which writes a line to the terminal) with the download bars
/// hidden, so that log and hook lines are not drawn over.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    match downloads() {
        Some(multi) => multi.suspend(f),
        None => f(),
    }
}
