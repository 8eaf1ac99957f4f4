//! Copying image data: a reflink where the filesystem supports it (btrfs,
//! XFS: instant, no extra space), else sparse in-kernel copies that skip holes.

use std::fs::File;
use std::io;

use rustix::fs::SeekFrom;

use crate::interrupt;
use crate::partition::Extent;

/// Make the empty `dst` share all of `src`'s blocks, where the filesystem can.
/// (`PICLUSTER_NO_REFLINK` turns this off, to measure the copying path.)
pub fn reflink(src: &File, dst: &File) -> bool {
    std::env::var_os("PICLUSTER_NO_REFLINK").is_none()
        && rustix::fs::ioctl_ficlone(dst, src).is_ok()
}

/// The data regions of `file` within `start..end` (everything else is holes).
/// Files without SEEK_DATA support are reported as all data.
pub fn data_extents(file: &File, start: u64, end: u64) -> io::Result<Vec<Extent>> {
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end {
        let data = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break, // only a hole remains
            Err(rustix::io::Errno::INVAL) if out.is_empty() && pos == start => {
                return Ok(vec![Extent {
                    start,
                    len: end - start,
                }]);
            }
            Err(e) => return Err(e.into()),
        };
        if data >= end {
            break;
        }
        let hole = rustix::fs::seek(file, SeekFrom::Hole(data))?.min(end);
        out.push(Extent {
            start: data,
            len: hole - data,
        });
        pos = hole;
    }
    Ok(out)
}

/// A piece of a sparse file, in order: a hole of so many bytes, or data to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    Hole(u64),
    Data(Extent),
}

/// `start..end` of `file` as holes and data pieces of at most `max` bytes, in
/// order, so that callers can read the data and account for the holes.
pub fn spans(file: &File, start: u64, end: u64, max: u64) -> io::Result<Vec<Span>> {
    let mut out = Vec::new();
    let mut pos = start;
    for e in data_extents(file, start, end)? {
        if e.start > pos {
            out.push(Span::Hole(e.start - pos));
        }
        let mut off = e.start;
        while off < e.end() {
            let len = (e.end() - off).min(max);
            out.push(Span::Data(Extent { start: off, len }));
            off += len;
        }
        pos = e.end();
    }
    if end > pos {
        out.push(Span::Hole(end - pos));
    }
    Ok(out)
}

/// Copy the data regions of `src` within `start..end` to the same offsets of
/// `dst` (which must already be long enough), in the kernel.
pub fn sparse_copy_range(src: &File, dst: &File, start: u64, end: u64) -> io::Result<()> {
    for e in data_extents(src, start, end)? {
        copy_range(src, dst, e.start, e.len)?;
    }
    Ok(())
}

fn copy_range(src: &File, dst: &File, start: u64, len: u64) -> io::Result<()> {
    const CHUNK: u64 = 256 << 20;
    let (mut off_in, mut off_out) = (start, start);
    let end = start + len;
    while off_in < end {
        interrupt::check().map_err(io::Error::other)?;
        let want = (end - off_in).min(CHUNK) as usize;
        match rustix::fs::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), want) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "source shrank during copy",
                ));
            }
            Ok(_) => {}
            Err(rustix::io::Errno::XDEV | rustix::io::Errno::NOSYS | rustix::io::Errno::INVAL) => {
                return copy_range_userspace(src, dst, off_in, end - off_in);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn copy_range_userspace(src: &File, dst: &File, start: u64, len: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 4 << 20];
    let mut off = start;
    while off < start + len {
        interrupt::check().map_err(io::Error::other)?;
        let n = ((start + len - off) as usize).min(buf.len());
        src.read_exact_at(&mut buf[..n], off)?;
        dst.write_all_at(&buf[..n], off)?;
        off += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileExt, MetadataExt};

    #[test]
    fn sparse_copy_keeps_data_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = File::create(dir.path().join("src")).unwrap();
        src.set_len(64 << 20).unwrap();
        src.write_all_at(b"hello", 1 << 20).unwrap();
        src.write_all_at(b"world", 40 << 20).unwrap();
        let src = File::open(dir.path().join("src")).unwrap();
        let ext = data_extents(&src, 0, 64 << 20).unwrap();
        assert_eq!(ext.len(), 2);
        assert!(ext[0].start <= 1 << 20 && ext[0].end() >= (1 << 20) + 5);
        let dst = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("dst"))
            .unwrap();
        dst.set_len(64 << 20).unwrap();
        sparse_copy_range(&src, &dst, 0, 64 << 20).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("src")).unwrap(),
            std::fs::read(dir.path().join("dst")).unwrap()
        );
        assert!(
            dst.metadata().unwrap().blocks() * 512 < 4 << 20,
            "holes kept"
        );
        assert_eq!(
            data_extents(&src, 2 << 20, 30 << 20).unwrap(),
            vec![],
            "a pure hole has no data"
        );
        let s = spans(&src, 0, 64 << 20, 1 << 20).unwrap();
        let len = |s: &Span| match s {
            Span::Hole(n) => *n,
            Span::Data(e) => e.len,
        };
        assert_eq!(
            s.iter().map(len).sum::<u64>(),
            64 << 20,
            "spans cover it all"
        );
        assert!(matches!(s[0], Span::Hole(_)) && matches!(s.last(), Some(Span::Hole(_))));
        assert!(s.iter().all(|s| len(s) > 0));
        assert!(
            s.iter()
                .all(|s| !matches!(s, Span::Data(e) if e.len > 1 << 20)),
            "data pieces are at most max"
        );
        assert_eq!(
            spans(&src, 2 << 20, 30 << 20, 1 << 20).unwrap(),
            vec![Span::Hole(28 << 20)]
        );
    }
}
