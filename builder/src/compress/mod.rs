//! Compressed outputs for CI artefacts, made of independently compressed
//! pieces so that the bytes every node shares are compressed once.
//!
//! An image is cut into pieces of [`PIECE`] bytes, counted from the start of
//! each region (the node's own head, the base's shared tail). Each piece
//! becomes one xz block, one gzip member or one zstd frame; all three formats
//! allow a file to hold many of them and every standard decoder reads them as
//! one stream of bytes (RFC 1952 section 2.2 "a gzip file consists of a series
//! of members"; RFC 8878 section 3.1 "a Zstandard compressed data is made of
//! one or more frames"; xz: see [`xz`]). The output depends only on the bytes
//! and the settings here, never on the thread count or on the cache.

mod pieces;
mod tail;
pub mod xz;

use std::io::{self, Write};

pub use pieces::{Encoded, Encoder, Stats, encode_range};
pub use tail::{Tail, TailKey, write_artefact};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Compress {
    None,
    Xz,
    Gz,
    Zst,
}

/// Uncompressed bytes per piece: xz's own block size for `-6` (three times
/// its 8 MiB dictionary, liblzma's default for threaded `xz -T0 -6`), so a
/// piece loses nothing to the cut that `xz -T0` does not lose too.
pub const PIECE: u64 = 24 << 20;

/// xz preset (what `xz` uses by default).
pub const XZ_PRESET: u32 = 6;
/// gzip level (what `gzip` uses by default).
pub const GZ_LEVEL: u32 = 6;
/// zstd level: near xz's ratio at many times its speed on disk images.
pub const ZSTD_LEVEL: i32 = 12;

impl Compress {
    pub fn suffix(self) -> &'static str {
        match self {
            Compress::None => ".img",
            Compress::Xz => ".img.xz",
            Compress::Gz => ".img.gz",
            Compress::Zst => ".img.zst",
        }
    }

    /// Everything that decides the compressed bytes of a piece, for cache
    /// keys: the settings, and the digest of what this build's encoder makes
    /// of a fixed sample (a library update that changes the output changes it).
    pub fn settings(self) -> io::Result<String> {
        let sample: Vec<u8> = (0..64 << 10)
            .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8 & 0x3f)
            .collect();
        let probe = self.encode(&sample)?;
        let digest = crate::digest::hex(&<sha2::Sha256 as sha2::Digest>::digest(&probe.bytes));
        Ok(format!(
            "{self:?} xz-preset {XZ_PRESET} gz-level {GZ_LEVEL} zstd-level {ZSTD_LEVEL} piece {PIECE} probe {digest}"
        ))
    }

    /// Compress one piece.
    pub fn encode(self, data: &[u8]) -> io::Result<Encoded> {
        Ok(match self {
            Compress::Xz => {
                let b = xz::encode_block(data, XZ_PRESET)?;
                Encoded {
                    record: Some(b.record()),
                    bytes: b.bytes,
                }
            }
            Compress::Gz => {
                let mut enc = flate2::GzBuilder::new()
                    .mtime(0)
                    .write(Vec::new(), flate2::Compression::new(GZ_LEVEL));
                enc.write_all(data)?;
                Encoded {
                    bytes: enc.finish()?,
                    record: None,
                }
            }
            Compress::Zst => {
                let mut c = zstd::bulk::Compressor::new(ZSTD_LEVEL)?;
                c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))?;
                Encoded {
                    bytes: c.compress(data)?,
                    record: None,
                }
            }
            Compress::None => Encoded {
                bytes: data.to_vec(),
                record: None,
            },
        })
    }

    /// What comes before the first piece.
    pub fn start(self) -> Vec<u8> {
        match self {
            Compress::Xz => xz::stream_header().to_vec(),
            _ => Vec::new(),
        }
    }

    /// What comes after the last piece.
    pub fn end(self, records: &[xz::Record]) -> Vec<u8> {
        match self {
            Compress::Xz => xz::stream_end(records),
            _ => Vec::new(),
        }
    }
}

/// Threads for compressing pieces: `PICLUSTER_THREADS`, else one per core.
pub fn threads() -> usize {
    std::env::var("PICLUSTER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// A writer that hashes and counts what passes through it.
pub struct Hashing<W> {
    inner: W,
    hasher: sha2::Sha256,
    count: u64,
}

impl<W: Write> Hashing<W> {
    pub fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: <sha2::Sha256 as sha2::Digest>::new(),
            count: 0,
        }
    }

    /// Flush, and return the digest and length of everything written.
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        self.inner.flush()?;
        Ok((
            crate::digest::hex(&sha2::Digest::finalize(self.hasher)),
            self.count,
        ))
    }
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
