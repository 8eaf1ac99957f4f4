//! Compressed outputs for CI artefacts: multi-threaded xz (its output depends
//! on the block size, not the thread count, so it stays reproducible) and gzip
//! with a zero header timestamp.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};

use crate::digest;
use crate::interrupt;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Compress {
    None,
    Xz,
    Gz,
}

impl Compress {
    pub fn suffix(self) -> &'static str {
        match self {
            Compress::None => ".img",
            Compress::Xz => ".img.xz",
            Compress::Gz => ".img.gz",
        }
    }
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: sha2::Sha256,
    count: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        sha2::Digest::update(&mut self.hasher, &buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Compress `src` into `dst`; returns the digest and size of what was written.
pub fn compress(
    src: &mut dyn Read,
    dst: &File,
    how: Compress,
    bar: &indicatif::ProgressBar,
) -> io::Result<(String, u64)> {
    let sink = Hashing {
        inner: BufWriter::with_capacity(1 << 20, dst),
        hasher: <sha2::Sha256 as sha2::Digest>::new(),
        count: 0,
    };
    let sink = match how {
        Compress::Xz => {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
            let stream = liblzma::stream::MtStreamBuilder::new()
                .threads(threads)
                .preset(6)
                .block_size(24 << 20)
                .check(liblzma::stream::Check::Crc64)
                .encoder()
                .map_err(io::Error::other)?;
            let mut enc = liblzma::write::XzEncoder::new_stream(sink, stream);
            pump(src, &mut enc, bar)?;
            enc.finish()?
        }
        Compress::Gz => {
            let mut enc = flate2::GzBuilder::new()
                .mtime(0)
                .write(sink, flate2::Compression::new(6));
            pump(src, &mut enc, bar)?;
            enc.finish()?
        }
        Compress::None => {
            let mut sink = sink;
            pump(src, &mut sink, bar)?;
            sink
        }
    };
    let Hashing {
        mut inner,
        hasher,
        count,
    } = sink;
    inner.flush()?;
    Ok((digest::hex(&sha2::Digest::finalize(hasher)), count))
}

fn pump(src: &mut dyn Read, dst: &mut dyn Write, bar: &indicatif::ProgressBar) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        interrupt::check().map_err(io::Error::other)?;
        let n = src.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        dst.write_all(&buf[..n])?;
        bar.inc(n as u64);
    }
}
