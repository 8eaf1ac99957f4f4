//! Progress bars for long work. Bars draw only on a terminal; elsewhere (CI
//! logs, pipes) the commands print one line per finished step instead.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

static QUIET: AtomicBool = AtomicBool::new(false);

/// Silence bars and step lines (`--quiet`).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// A byte-counting bar with throughput and ETA; hidden when stderr is not a terminal.
pub fn bytes(len: u64, message: impl Into<String>) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), draw_target());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:24} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(message.into());
    bar
}

fn draw_target() -> ProgressDrawTarget {
    if quiet() || !std::io::stderr().is_terminal() {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    }
}

/// One line about a finished step, on stderr (stdout stays for results).
pub fn step(line: impl AsRef<str>) {
    if !quiet() {
        eprintln!("{}", line.as_ref());
    }
}

/// Human-readable size.
pub fn size(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}
