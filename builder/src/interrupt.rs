//! Ctrl-C handling. Long loops call [`check`] between chunks; an interrupted
//! command unwinds normally, so temporary files are removed by their guards and
//! no half-written image or download is ever left under its final name.

use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

#[derive(Debug, thiserror::Error)]
#[error("interrupted (Ctrl-C)")]
pub struct Interrupted;

/// Install the SIGINT/SIGTERM handler (idempotent). A second Ctrl-C exits at once.
pub fn install() {
    INSTALL.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\ninterrupting: cleaning up (press Ctrl-C again to exit at once)");
        });
    });
}

/// `Err(Interrupted)` once Ctrl-C was pressed.
pub fn check() -> Result<(), Interrupted> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        Err(Interrupted)
    } else {
        Ok(())
    }
}

/// Whether `err` comes from Ctrl-C. Copy loops carry [`Interrupted`] inside an
/// `io::Error`, whose `source()` skips the error it wraps, so look inside.
pub fn caused(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<Interrupted>().is_some()
            || e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.downcast_ref::<Interrupted>().is_some())
    })
}

/// For tests: pretend Ctrl-C was pressed (or reset).
pub fn simulate(on: bool) {
    INTERRUPTED.store(on, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctrl_c_inside_an_io_error_is_still_ctrl_c() {
        let io = std::io::Error::other(Interrupted);
        let err = anyhow::Error::new(io).context("cannot copy the base image");
        assert!(caused(&err));
        assert!(!caused(&anyhow::anyhow!("disk full")));
    }
}
