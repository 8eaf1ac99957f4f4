//! Bounded write-behind: start writeback of each window of written data as
//! it fills and wait for the window before it. The disk then works while the
//! CPU hashes and copies, instead of all at the final fsync, and dirty memory
//! stays bounded (so progress bars show what reached the disk).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Dirty data allowed per file before waiting for the disk.
pub const WINDOW: u64 = 64 << 20;

pub struct WriteBehind<'f> {
    file: &'f File,
    cur: Option<(u64, u64)>,
    prev: Option<(u64, u64)>,
    bytes: u64,
    /// The filesystem does not take the hint: the final fsync does it all.
    unsupported: bool,
}

impl<'f> WriteBehind<'f> {
    pub fn new(file: &'f File) -> Self {
        WriteBehind {
            file,
            cur: None,
            prev: None,
            bytes: 0,
            unsupported: false,
        }
    }

    /// Start writeback of `off..off + len` without waiting for it.
    pub fn start(&mut self, off: u64, len: u64) -> io::Result<()> {
        self.sync(off, len, nix::libc::SYNC_FILE_RANGE_WRITE)
    }

    /// Record that `len` bytes were written at `off`.
    pub fn wrote(&mut self, off: u64, len: u64) -> io::Result<()> {
        let (lo, hi) = self.cur.unwrap_or((off, off));
        self.cur = Some((lo.min(off), hi.max(off + len)));
        self.bytes += len;
        if self.bytes < WINDOW {
            return Ok(());
        }
        let (lo, hi) = self.cur.take().unwrap();
        self.sync(lo, hi - lo, nix::libc::SYNC_FILE_RANGE_WRITE)?;
        if let Some((plo, phi)) = self.prev.replace((lo, hi)) {
            self.sync(
                plo,
                phi - plo,
                nix::libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | nix::libc::SYNC_FILE_RANGE_WRITE
                    | nix::libc::SYNC_FILE_RANGE_WAIT_AFTER,
            )?;
        }
        self.bytes = 0;
        Ok(())
    }

    fn sync(&mut self, off: u64, len: u64, flags: u32) -> io::Result<()> {
        if self.unsupported {
            return Ok(());
        }
        // SAFETY: plain syscall on an open descriptor; no memory is passed.
        let r = unsafe {
            nix::libc::sync_file_range(self.file.as_raw_fd(), off as i64, len as i64, flags)
        };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(nix::libc::EINVAL | nix::libc::ENOSYS | nix::libc::EOPNOTSUPP) => {
                self.unsupported = true;
                Ok(())
            }
            _ => Err(e),
        }
    }
}
