//! One line per event: to stderr (the systemd journal, and the console through
//! the unit's `StandardOutput=journal+console`), to a log file on the boot
//! partition that can be read by pulling the card, and kept in memory for tests.
//! Nothing secret is ever logged: commands show their stdin by size only.

use std::fs::OpenOptions;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::timefmt::utc;

/// Past this size the boot-partition log starts over (the old one is kept as `.old`).
const BOOT_LOG_LIMIT: u64 = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    /// sd-daemon priority prefix understood by journald.
    fn journal_prefix(self) -> &'static str {
        match self {
            Level::Debug => "<7>",
            Level::Info => "<6>",
            Level::Warn => "<4>",
            Level::Error => "<3>",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warning",
            Level::Error => "error",
        }
    }
}

pub struct Log {
    boot_log: Option<PathBuf>,
    console: Option<PathBuf>,
    stderr: bool,
    lines: Mutex<Vec<(Level, String)>>,
}

impl Log {
    /// Log to stderr and, when given, append to `boot_log`; errors also go to
    /// `console` (a device such as `/dev/console`) if it exists.
    pub fn new(boot_log: Option<PathBuf>, console: Option<PathBuf>) -> Log {
        Log {
            boot_log,
            console,
            stderr: true,
            lines: Mutex::new(Vec::new()),
        }
    }

    /// Memory only (tests).
    pub fn memory() -> Log {
        Log {
            boot_log: None,
            console: None,
            stderr: false,
            lines: Mutex::new(Vec::new()),
        }
    }

    /// Memory plus a boot-partition log file (tests).
    pub fn memory_with_boot_log(path: &Path) -> Log {
        Log {
            boot_log: Some(path.to_path_buf()),
            ..Log::memory()
        }
    }

    pub fn debug(&self, msg: &str) {
        self.emit(Level::Debug, msg);
    }

    pub fn info(&self, msg: &str) {
        self.emit(Level::Info, msg);
    }

    pub fn warn(&self, msg: &str) {
        self.emit(Level::Warn, msg);
    }

    pub fn error(&self, msg: &str) {
        self.emit(Level::Error, msg);
    }

    /// Everything logged so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .expect("log lock")
            .iter()
            .map(|(l, m)| format!("{}: {m}", l.label()))
            .collect()
    }

    fn emit(&self, level: Level, msg: &str) {
        self.lines
            .lock()
            .expect("log lock")
            .push((level, msg.to_string()));
        if self.stderr {
            let mut err = std::io::stderr().lock();
            let prefix = if std::env::var_os("JOURNAL_STREAM").is_some() {
                level.journal_prefix()
            } else {
                ""
            };
            let label = match level {
                Level::Warn | Level::Error if prefix.is_empty() => format!("{}: ", level.label()),
                _ => String::new(),
            };
            for line in msg.lines() {
                let _ = writeln!(err, "{prefix}picluster-node: {label}{line}");
            }
        }
        if level == Level::Debug {
            return;
        }
        let stamped = format!("{} {}: {msg}\n", utc(wall_clock()), level.label());
        if let Some(path) = &self.boot_log {
            append_capped(path, &stamped);
        }
        // When stderr is a terminal the message is already on screen.
        let console = match &self.console {
            Some(c) if level == Level::Error && !std::io::stderr().is_terminal() => c,
            _ => return,
        };
        // Only an existing device: never create a file named console.
        if let Ok(mut c) = OpenOptions::new().write(true).open(console) {
            let _ = write!(c, "\r\npicluster-node: {msg}\r\n");
        }
    }
}

fn wall_clock() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Append to a log file, starting over past [`BOOT_LOG_LIMIT`]. Best effort:
/// a read-only or full boot partition must not stop the agent.
fn append_capped(path: &Path, text: &str) {
    if std::fs::metadata(path).is_ok_and(|m| m.len() > BOOT_LOG_LIMIT) {
        let mut old = path.as_os_str().to_owned();
        old.push(".old");
        let _ = std::fs::rename(path, PathBuf::from(old));
    }
    if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
        let _ = f.write_all(text.as_bytes());
        let _ = f.sync_data();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_log_gets_timestamped_lines_but_not_debug() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("picluster-node.log");
        let log = Log::memory_with_boot_log(&path);
        log.debug("running: true");
        log.info("step x: done");
        log.error("step y failed: boom");
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].ends_with("Z info: step x: done"), "{text}");
        assert!(lines[1].ends_with("Z error: step y failed: boom"), "{text}");
        assert_eq!(log.lines().len(), 3);
    }

    #[test]
    fn boot_log_starts_over_when_large() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("picluster-node.log");
        std::fs::write(&path, vec![b'x'; BOOT_LOG_LIMIT as usize + 1]).unwrap();
        Log::memory_with_boot_log(&path).info("fresh");
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .ends_with("info: fresh\n")
        );
        assert_eq!(
            std::fs::metadata(dir.path().join("picluster-node.log.old"))
                .unwrap()
                .len(),
            BOOT_LOG_LIMIT + 1
        );
    }
}
