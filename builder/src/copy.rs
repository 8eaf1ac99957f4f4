//! Making a node image from the cached base: a reflink where the filesystem
//! supports it (btrfs, XFS: instant, no extra space), else a sparse in-kernel
//! copy that skips the holes.

use std::fs::File;
use std::io;

use rustix::fs::SeekFrom;

use crate::interrupt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CopyMethod {
    Reflink,
    Sparse,
}

/// Make `dst` (empty) a copy of `src`.
pub fn copy_image(src: &File, dst: &File) -> io::Result<CopyMethod> {
    let len = src.metadata()?.len();
    if std::env::var_os("PICLUSTER_NO_REFLINK").is_none()
        && rustix::fs::ioctl_ficlone(dst, src).is_ok()
    {
        return Ok(CopyMethod::Reflink);
    }
    sparse_copy(src, dst, len)?;
    Ok(CopyMethod::Sparse)
}

/// Copy only the data regions of `src` (SEEK_DATA/SEEK_HOLE), in the kernel.
pub fn sparse_copy(src: &File, dst: &File, len: u64) -> io::Result<()> {
    dst.set_len(len)?;
    let mut pos = 0u64;
    while pos < len {
        let data = match rustix::fs::seek(src, SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break, // only a hole remains
            Err(e) => return Err(e.into()),
        };
        let hole = rustix::fs::seek(src, SeekFrom::Hole(data))?.min(len);
        copy_range(src, dst, data, hole - data)?;
        pos = hole;
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
        let dst = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("dst"))
            .unwrap();
        sparse_copy(&src, &dst, 64 << 20).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("src")).unwrap(),
            std::fs::read(dir.path().join("dst")).unwrap()
        );
        assert!(
            dst.metadata().unwrap().blocks() * 512 < 4 << 20,
            "holes kept"
        );
    }
}
