//! Obtaining the base image: fetch and verify it, then decompress it once into
//! the cache as a sparse raw image. Later builds start from that copy.

use std::path::{Path, PathBuf};

use picluster_profiles::cluster::{BaseSource, Cluster};

use crate::atomic::{self, Staged};
use crate::decompress::{self, Compression};
use crate::fetch::{Expect, FetchError, Fetcher, Location};
use crate::progress;

/// Where the base comes from and what it must hash to.
#[derive(Debug, Clone)]
pub struct BaseRequest {
    pub location: Location,
    pub expect: Expect,
}

impl BaseRequest {
    /// From the cluster file, or from `--base` when given (which then trusts the
    /// `.sha256` beside it, if any).
    pub fn new(cluster: &Cluster, base_override: Option<&str>) -> BaseRequest {
        if let Some(b) = base_override {
            return BaseRequest {
                location: Location::parse(b),
                expect: Expect::Sibling,
            };
        }
        match &cluster.image.source {
            BaseSource::Catalog(c) => BaseRequest {
                location: Location::parse(&c.url),
                expect: Expect::Sha256(c.sha256.clone()),
            },
            BaseSource::Url { url, sha256 } => BaseRequest {
                location: Location::parse(url),
                expect: sha256.clone().map_or(Expect::Sibling, Expect::Sha256),
            },
        }
    }
}

/// A raw base image ready to copy.
#[derive(Debug, Clone)]
pub struct ObtainedBase {
    /// The raw image (in the cache, or the user's own uncompressed file).
    pub raw: PathBuf,
    /// Digest of what was fetched (the compressed file, if it was compressed).
    pub source_sha256: String,
    pub source_name: String,
    /// The raw image was already in the cache.
    pub warm: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ObtainError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("cannot decompress {name}")]
    Decompress {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

pub fn obtain(fetcher: &Fetcher, req: &BaseRequest) -> Result<ObtainedBase, ObtainError> {
    let name = req.location.file_name();
    let dec_err = |source| ObtainError::Decompress {
        name: name.clone(),
        source,
    };
    // A base decompressed before is used without reading its source again,
    // as long as it still has the size it was written with.
    if let Some(sha) = fetcher.expected_digest(&req.location, &req.expect)? {
        let raw = fetcher.cache().base(&sha);
        if intact(&raw).map_err(dec_err)? {
            return Ok(ObtainedBase {
                raw,
                source_sha256: sha,
                source_name: name,
                warm: true,
            });
        }
    }
    let fetched = fetcher.fetch(&req.location, &req.expect, &format!("base {name}"))?;
    let compression = Compression::detect(&fetched.path).map_err(dec_err)?;
    if compression == Compression::None {
        return Ok(ObtainedBase {
            raw: fetched.path,
            source_sha256: fetched.sha256,
            source_name: name,
            warm: true,
        });
    }
    let raw = fetcher.cache().base(&fetched.sha256);
    if intact(&raw).map_err(dec_err)? {
        return Ok(ObtainedBase {
            raw,
            source_sha256: fetched.sha256,
            source_name: name,
            warm: true,
        });
    }
    let started = std::time::Instant::now();
    let staged = Staged::new(&raw).map_err(dec_err)?;
    let mut reader =
        decompress::open(&fetched.path, &format!("decompress {name}")).map_err(dec_err)?;
    let size = decompress::write_sparse(&mut reader, staged.file()).map_err(dec_err)?;
    staged.commit().map_err(dec_err)?;
    atomic::write(&size_record(&raw), format!("{size}\n").as_bytes(), 0o644).map_err(dec_err)?;
    progress::step(format!(
        "base {name}: decompressed once into the cache ({} in {:.1}s)",
        progress::size(size),
        started.elapsed().as_secs_f64()
    ));
    Ok(ObtainedBase {
        raw,
        source_sha256: fetched.sha256,
        source_name: name,
        warm: false,
    })
}

/// Beside each decompressed base: its size when it was written.
fn size_record(raw: &Path) -> PathBuf {
    raw.with_extension("img.size")
}

/// Whether the cached decompressed base is there and whole. One that was cut
/// short, grew, or has no size record (older caches, a crash between the two
/// writes) is removed, so it is made again instead of embedded.
fn intact(raw: &Path) -> std::io::Result<bool> {
    let len = match std::fs::metadata(raw) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let recorded = std::fs::read_to_string(size_record(raw))
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok());
    if recorded == Some(len) {
        return Ok(true);
    }
    progress::step(format!(
        "cached base {} {}; decompressing it again",
        raw.display(),
        match recorded {
            Some(r) => format!("is {len} bytes, not the {r} it was written with"),
            None => "has no size record".to_string(),
        }
    ));
    std::fs::remove_file(raw)?;
    Ok(false)
}
