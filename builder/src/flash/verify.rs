//! Read back what was written, bypassing the page cache, and compare each
//! unit's SHA-256 with what was meant to be written.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use super::FlashError;
use super::buf::{ALIGN, AlignedBuf};
use super::device::{Opened, reopen};
use super::writer::Unit;
use crate::digest::hex;

const BUF: usize = 8 << 20;

/// A reader of the device that does not see the page cache.
pub struct Reader {
    file: File,
    direct: bool,
}

impl Reader {
    /// Open the target again with O_DIRECT (through its open descriptor);
    /// where the filesystem refuses that (tmpfs), fall back to dropping the
    /// file's cached pages after the sync.
    pub fn open(target: &Opened) -> Result<Reader> {
        let path = &target.target.path;
        match reopen(target, false, nix::libc::O_DIRECT) {
            Ok(file) => Ok(Reader { file, direct: true }),
            Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                let file = reopen(target, false, 0)
                    .with_context(|| format!("cannot open {} to verify", path.display()))?;
                Ok(Reader {
                    file,
                    direct: false,
                })
            }
            Err(e) => Err(e).with_context(|| format!("cannot open {} to verify", path.display())),
        }
    }

    fn drop_cache(&self) {
        if !self.direct {
            let _ = nix::fcntl::posix_fadvise(
                &self.file,
                0,
                0,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            );
        }
    }

    /// Read `buf.len()` bytes at `off`; with O_DIRECT the request is rounded
    /// up to whole 4 KiB pages (short at the end of the device is fine).
    fn read_at<'a>(
        &mut self,
        scratch: &'a mut AlignedBuf,
        off: u64,
        len: usize,
    ) -> io::Result<&'a [u8]> {
        let buf = scratch.spare();
        let want = if self.direct {
            len.div_ceil(ALIGN) * ALIGN
        } else {
            len
        };
        let mut got = 0;
        while got < len {
            let n = match self.file.read_at(&mut buf[got..want], off + got as u64) {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) && self.direct => {
                    // Unaligned for this device: continue through the cache,
                    // after dropping it.
                    self.direct = false;
                    self.drop_cache();
                    return self.read_at(scratch, off, len);
                }
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            got += n;
        }
        Ok(&scratch.spare()[..len])
    }
}

/// Compare every unit; the first mismatch fails with its byte range.
pub fn verify(target: &Opened, units: &[Unit], bar: &ProgressBar) -> Result<()> {
    let path = target.target.path.as_path();
    let mut r = Reader::open(target)?;
    r.drop_cache();
    let mut scratch = AlignedBuf::new(BUF);
    for u in units {
        crate::interrupt::check().map_err(|_| FlashError::interrupted(path))?;
        let mut h = Sha256::new();
        let mut pos = u.extent.start;
        while pos < u.extent.end() {
            let n = (u.extent.end() - pos).min(BUF as u64) as usize;
            let data = r.read_at(&mut scratch, pos, n).with_context(|| {
                format!(
                    "reading back bytes {pos}..{} of {}",
                    pos + n as u64,
                    path.display()
                )
            })?;
            h.update(data);
            pos += n as u64;
            bar.inc(n as u64);
        }
        let got: [u8; 32] = h.finalize().into();
        if got != u.sha256 {
            return Err(FlashError::Mismatch(format!(
                "{}: bytes {}..{} (4 KiB blocks {}-{}) read back differently from what was written (SHA-256 {} instead of {}); the card may be failing or counterfeit",
                path.display(),
                u.extent.start,
                u.extent.end(),
                u.extent.start / 4096,
                (u.extent.end() - 1) / 4096,
                hex(&got),
                hex(&u.sha256)
            ))
            .into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::Extent;

    #[test]
    fn a_mismatch_names_its_range_and_exits_5() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.img");
        let data: Vec<u8> = (0..3 * 4096u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let unit = |start: u64, len: u64, content: &[u8]| Unit {
            extent: Extent { start, len },
            sha256: Sha256::digest(content).into(),
        };
        let good = [
            unit(0, 4096, &data[..4096]),
            unit(8192, 4096, &data[8192..]),
        ];
        let sys = crate::flash::device::System::default();
        let target = crate::flash::device::open_target(&path, true, &sys).unwrap();
        verify(&target, &good, &ProgressBar::hidden()).unwrap();
        let bad = [good[0].clone(), unit(8192, 4096, &[0; 4096])];
        let err = verify(&target, &bad, &ProgressBar::hidden()).unwrap_err();
        assert_eq!(super::super::exit_code(&err), 5);
        let msg = format!("{err:#}");
        assert!(
            msg.contains("bytes 8192..12288 (4 KiB blocks 2-2)"),
            "{msg}"
        );
    }
}
