//! Decompressing a base image once into a sparse raw file. Zero runs become
//! holes, so a 2.6 GiB image with 1.6 GiB in use costs 1.6 GiB of disk and every
//! later copy of it skips the holes. Multi-block `.xz` files (pi-gen writes
//! them with `xz -T0`) are decoded on all cores.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::digest::ZEROS;
use crate::interrupt;
use crate::progress;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Xz,
    Gzip,
    Zstd,
    None,
}

impl Compression {
    /// Recognise a file by its magic bytes.
    pub fn detect(path: &Path) -> io::Result<Compression> {
        let mut head = [0u8; 6];
        let n = File::open(path)?.read(&mut head)?;
        Ok(Compression::from_magic(&head[..n]))
    }

    pub fn from_magic(head: &[u8]) -> Compression {
        if head.starts_with(&[0xFD, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else if head.starts_with(&[0x1F, 0x8B]) {
            Compression::Gzip
        } else if head.starts_with(&ZSTD_MAGIC) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// A zstd frame's magic number, little-endian (RFC 8878 section 3.1.1).
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

impl Compression {
    /// How people call it, for messages.
    pub fn label(self) -> &'static str {
        match self {
            Compression::Xz => "xz",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "raw",
        }
    }
}

/// A zstd decoder over `r`: it reads every frame of a multi-frame file.
pub fn zstd_reader<'a, R: io::BufRead + Send + 'a>(r: R) -> io::Result<Box<dyn Read + Send + 'a>> {
    Ok(Box::new(zstd::stream::read::Decoder::with_buffer(r)?))
}

/// A reader that reports how much of its source has been consumed.
struct Counting<R> {
    inner: R,
    bar: indicatif::ProgressBar,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

/// A decoder for `src`'s compression, with a progress bar over its compressed bytes.
pub fn open(src: &Path, label: &str) -> io::Result<Box<dyn Read>> {
    let file = File::open(src)?;
    let len = file.metadata()?.len();
    let bar = progress::bytes(len, label);
    let counting = Counting { inner: file, bar };
    Ok(match Compression::detect(src)? {
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new_stream(
            BufReader::with_capacity(1 << 20, counting),
            xz_decoder()?,
        )),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(
            1 << 20,
            counting,
        ))),
        Compression::Zstd => zstd_reader(BufReader::with_capacity(1 << 20, counting))?,
        Compression::None => Box::new(counting),
    })
}

/// liblzma's multi-threaded decoder. It decodes blocks in parallel only when
/// given a threading memory limit; single-block files fall back to one thread.
pub fn xz_decoder() -> io::Result<liblzma::stream::Stream> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    liblzma::stream::MtStreamBuilder::new()
        .threads(threads)
        .memlimit_threading(1 << 30)
        .memlimit_stop(u64::MAX)
        .decoder()
        .map_err(io::Error::other)
}

const BLOCK: usize = 4096;

/// Copy `r` into `dst` from offset 0, leaving holes for all-zero 4 KiB blocks.
/// Returns the number of bytes of the stream (the file's new length).
pub fn write_sparse(r: &mut dyn Read, dst: &File) -> io::Result<u64> {
    let mut buf = vec![0u8; 4 << 20];
    let mut offset = 0u64;
    loop {
        interrupt::check().map_err(io::Error::other)?;
        let n = read_full(r, &mut buf)?;
        if n == 0 {
            break;
        }
        // Coalesce runs of non-zero blocks into single writes.
        let mut i = 0;
        while i < n {
            let end = (i + BLOCK).min(n);
            if buf[i..end] == ZEROS[..end - i] {
                i = end;
                continue;
            }
            let start = i;
            while i < n {
                let end = (i + BLOCK).min(n);
                if buf[i..end] == ZEROS[..end - i] {
                    break;
                }
                i = end;
            }
            dst.write_all_at(&buf[start..i], offset + start as u64)?;
        }
        offset += n as u64;
    }
    dst.set_len(offset)?;
    Ok(offset)
}

/// Fill `buf` from `r` as far as it goes; fewer bytes only at the end of the stream.
pub fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn zero_runs_become_holes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let f = File::create(&path).unwrap();
        let mut data = vec![0u8; 8 << 20];
        data[100] = 1;
        data[(6 << 20) + 5] = 2;
        let n = write_sparse(&mut &data[..], &f).unwrap();
        assert_eq!(n, 8 << 20);
        assert_eq!(std::fs::read(&path).unwrap(), data);
        // Two 4 KiB blocks hold data; the rest are holes.
        assert!(f.metadata().unwrap().blocks() * 512 <= 64 << 10);
    }

    #[test]
    fn magic() {
        assert_eq!(Compression::from_magic(b"\xFD7zXZ\0"), Compression::Xz);
        assert_eq!(Compression::from_magic(b"\x1F\x8B\x08"), Compression::Gzip);
        assert_eq!(Compression::from_magic(b"\0\0"), Compression::None);
        assert_eq!(
            Compression::from_magic(&zstd::bulk::compress(b"x", 3).unwrap()),
            Compression::Zstd
        );
    }
}
