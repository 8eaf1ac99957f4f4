//! The compressed tail of a base image (from its root partition to its end),
//! made once per base and format and kept in the user's cache, and node
//! artefacts assembled from their own compressed head plus that tail.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{Encoder, Hashing, encode_range, xz};
use crate::atomic::{self, Staged};

/// What a cached tail is made from.
#[derive(Debug, Clone)]
pub struct TailKey {
    /// Digest of the base image as obtained (the cache's name for its raw form).
    pub base_sha256: String,
    pub start: u64,
    pub end: u64,
}

/// A compressed tail in the cache.
#[derive(Debug, Clone)]
pub struct Tail {
    pub data: PathBuf,
    pub records: Vec<xz::Record>,
    pub compressed_len: u64,
    /// Found in the cache rather than compressed now.
    pub hit: bool,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Meta {
    key: String,
    compressed_len: u64,
    records: Vec<xz::Record>,
}

impl Tail {
    /// The cached tail for `key`, or compress it from `base` and cache it.
    pub fn load_or_make(
        cache_root: &Path,
        key: &TailKey,
        base: &File,
        enc: &Encoder<'_>,
    ) -> io::Result<Tail> {
        let text = format!(
            "base {} bytes {}..{} {}",
            key.base_sha256,
            key.start,
            key.end,
            enc.how.settings()?
        );
        let name = crate::digest::hex(&Sha256::digest(text.as_bytes()));
        let dir = cache_root.join("compressed");
        std::fs::create_dir_all(&dir)?;
        let data = dir.join(format!("{}{}.tail", &name[..32], enc.how.suffix()));
        let meta_path = dir.join(format!("{}.json", &name[..32]));
        if let Some(meta) = std::fs::read(&meta_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Meta>(&b).ok())
            .filter(|m| m.key == text)
            && std::fs::metadata(&data).is_ok_and(|m| m.len() == meta.compressed_len)
        {
            enc.bar.inc(key.end - key.start);
            return Ok(Tail {
                data,
                records: meta.records,
                compressed_len: meta.compressed_len,
                hit: true,
            });
        }
        let staged = Staged::new(&data)?;
        staged.set_mode(0o644)?;
        let mut out = BufWriter::with_capacity(1 << 20, staged.file());
        let mut records = Vec::new();
        let mut len = 0u64;
        encode_range(enc, base, key.start, key.end, &mut |e| {
            out.write_all(&e.bytes)?;
            len += e.bytes.len() as u64;
            records.extend(e.record);
            Ok(())
        })?;
        out.flush()?;
        drop(out);
        staged.commit()?;
        let meta = Meta {
            key: text,
            compressed_len: len,
            records,
        };
        atomic::write(&meta_path, &serde_json::to_vec(&meta)?, 0o644)?;
        Ok(Tail {
            data,
            records: meta.records,
            compressed_len: len,
            hit: false,
        })
    }
}

/// Write one artefact: `head[..head_end]` compressed here, then the cached
/// tail as it is. Returns the artefact's SHA-256 and length.
pub fn write_artefact(
    enc: &Encoder<'_>,
    head: &File,
    head_end: u64,
    tail: &Tail,
    dst: &File,
) -> io::Result<(String, u64)> {
    let mut out = Hashing::new(BufWriter::with_capacity(1 << 20, dst));
    out.write_all(&enc.how.start())?;
    let mut records = Vec::new();
    encode_range(enc, head, 0, head_end, &mut |e| {
        records.extend(e.record);
        out.write_all(&e.bytes)
    })?;
    let mut src = File::open(&tail.data)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        crate::interrupt::check().map_err(io::Error::other)?;
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
    }
    records.extend_from_slice(&tail.records);
    out.write_all(&enc.how.end(&records))?;
    out.finish()
}
