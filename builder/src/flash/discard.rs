//! `flash --discard`: after the image is written, tell the card that every
//! block the image does not use is free (BLKDISCARD), so an old image's
//! secrets do not stay readable in the card's free space. Where the device
//! cannot discard, the blocks are zeroed (BLKZEROOUT, which the kernel may
//! offload); a regular file gets holes punched. Flash media may still keep
//! old copies in blocks its wear levelling has retired: this is best effort.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{Context, Result};
use indicatif::ProgressBar;

use super::FlashError;
use crate::partition::Extent;

nix::ioctl_write_ptr_bad!(blkdiscard, nix::request_code_none!(0x12, 119), [u64; 2]);
nix::ioctl_write_ptr_bad!(blkzeroout, nix::request_code_none!(0x12, 127), [u64; 2]);

/// Alignment of what is discarded: the sector size every device accepts.
const ALIGN: u64 = 4096;
/// One ioctl at most this large, so Ctrl-C is noticed between them.
const STEP: u64 = 1 << 30;

/// The parts of `0..size` that `mapped` (sorted, disjoint) leaves out, from
/// `from` on, shrunk to whole 4 KiB blocks.
pub fn unmapped(mapped: &[Extent], from: u64, size: u64) -> Vec<Extent> {
    let mut out = Vec::new();
    let mut pos = from;
    let mut push = |a: u64, b: u64| {
        let (a, b) = (a.div_ceil(ALIGN) * ALIGN, b / ALIGN * ALIGN);
        if b > a {
            out.push(Extent {
                start: a,
                len: b - a,
            });
        }
    };
    for e in mapped {
        if e.end() <= pos {
            continue;
        }
        if e.start > pos {
            push(pos, e.start.min(size));
        }
        pos = pos.max(e.end());
    }
    if pos < size {
        push(pos, size);
    }
    out
}

/// Discard (or zero) `ranges` of `dev`; returns what was done, for the summary.
pub fn discard(
    dev: &File,
    dev_path: &Path,
    block: bool,
    ranges: &[Extent],
    bar: &ProgressBar,
) -> Result<&'static str> {
    let mut how = if block { "discarded" } else { "punched out" };
    for r in ranges {
        let mut pos = r.start;
        while pos < r.end() {
            crate::interrupt::check().map_err(|_| FlashError::interrupted(dev_path))?;
            let n = (r.end() - pos).min(STEP);
            let range = [pos, n];
            let done = if !block {
                nix::fcntl::fallocate(
                    dev,
                    nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                        | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
                    pos as i64,
                    n as i64,
                )
                .map(|_| ())
            } else if how == "discarded" {
                // SAFETY: the ioctl reads two u64 from a valid array.
                match unsafe { blkdiscard(dev.as_raw_fd(), &range) } {
                    Err(nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::EINVAL) => {
                        how = "zeroed";
                        // SAFETY: as above.
                        unsafe { blkzeroout(dev.as_raw_fd(), &range) }.map(|_| ())
                    }
                    r => r.map(|_| ()),
                }
            } else {
                // SAFETY: as above.
                unsafe { blkzeroout(dev.as_raw_fd(), &range) }.map(|_| ())
            };
            done.with_context(|| {
                format!(
                    "cannot clear bytes {pos}..{} of {}",
                    pos + n,
                    dev_path.display()
                )
            })?;
            bar.inc(n);
            pos += n;
        }
    }
    Ok(how)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gaps_between_mapped_ranges_in_whole_blocks() {
        let e = |start, len| Extent { start, len };
        let m = [e(0, 8192), e(20_000, 100), e(40_960, 4096)];
        assert_eq!(
            unmapped(&m, 4096, 100_000),
            [e(8192, 8192), e(20_480, 20_480), e(45_056, 53_248)]
        );
        assert_eq!(unmapped(&[], 0, 10_000), [e(0, 8192)]);
        assert!(unmapped(&[e(0, 10_000)], 0, 10_000).is_empty());
    }
}
