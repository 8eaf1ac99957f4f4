//! Progress bars for long work. Bars draw only on a terminal; elsewhere (CI
//! logs, pipes) the commands print one line per finished step instead.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

static QUIET: AtomicBool = AtomicBool::new(false);

/// Silence bars and step lines (`--quiet`).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// A byte-counting bar with throughput and ETA; hidden when stderr is not a terminal.
///
/// Rate and ETA are averages over the whole run so far, not indicatif's
/// short-window estimate: copies skip holes and compressors meet long zero
/// runs, which made that estimate jump (22 min, then 3 s). No ETA is shown
/// until a rate is known.
pub fn bytes(len: u64, message: impl Into<String>) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), draw_target());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:24} [{bar:30}] {bytes:>10}/{total_bytes:<10} {mean_rate:>12} {mean_eta}",
        )
        .expect("valid template")
        .with_key(
            "mean_rate",
            |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&rate_text(s.pos(), s.elapsed()));
            },
        )
        .with_key(
            "mean_eta",
            |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&eta_text(s.pos(), s.len().unwrap_or(0), s.elapsed()));
            },
        )
        .progress_chars("=> "),
    );
    bar.set_message(message.into());
    bar
}

/// Before this much time has passed, no rate is trusted.
const SETTLE: Duration = Duration::from_secs(2);

fn rate_text(pos: u64, elapsed: Duration) -> String {
    if elapsed < SETTLE || pos == 0 {
        return String::new();
    }
    format!("{}/s", size((pos as f64 / elapsed.as_secs_f64()) as u64))
}

fn eta_text(pos: u64, len: u64, elapsed: Duration) -> String {
    if elapsed < SETTLE || pos == 0 || len <= pos {
        return String::new();
    }
    let left = elapsed.as_secs_f64() * (len - pos) as f64 / pos as f64;
    let secs = left.round() as u64;
    if secs >= 3600 {
        format!("ETA {}h{:02}m", secs / 3600, secs / 60 % 60)
    } else if secs >= 60 {
        format!("ETA {}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("ETA {secs}s")
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_eta_until_a_rate_is_known_then_the_mean_rate() {
        let s = Duration::from_secs;
        assert_eq!(eta_text(0, 100, s(30)), "", "nothing done yet");
        assert_eq!(
            eta_text(50, 100, Duration::from_millis(500)),
            "",
            "too early"
        );
        assert_eq!(eta_text(50, 100, s(10)), "ETA 10s");
        assert_eq!(eta_text(10, 100, s(60)), "ETA 9m00s");
        assert_eq!(eta_text(1, 100, s(60)), "ETA 1h39m");
        assert_eq!(eta_text(100, 100, s(60)), "", "done");
        // A jump (a hole skipped) moves the estimate by the mean, not to zero.
        assert_eq!(eta_text(80, 100, s(20)), "ETA 5s");
        assert_eq!(rate_text(0, s(5)), "");
        assert_eq!(rate_text(10 << 20, s(5)), "2.00 MiB/s");
    }
}
