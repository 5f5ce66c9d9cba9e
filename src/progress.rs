//! Progress bars, on a terminal only: fan-out and cron get plain log lines.

use std::io::IsTerminal;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};

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

/// A byte-count bar on stderr, or `None` when stderr is not a terminal.
pub fn bytes(total: u64, label: &str) -> Option<Bar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(label.to_owned());
    Some(Bar(bar))
}
