//! The user's cache: verified downloads stored by SHA-256, and decompressed
//! base images keyed by the digest of their compressed form.
//!
//! `$PICLUSTER_CACHE_DIR`, else `$XDG_CACHE_HOME/picluster`, else `~/.cache/picluster`.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    pub fn from_env() -> std::io::Result<Cache> {
        let root = if let Some(d) = std::env::var_os("PICLUSTER_CACHE_DIR") {
            PathBuf::from(d)
        } else if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
            PathBuf::from(d).join("picluster")
        } else if let Some(home) = std::env::var_os("HOME") {
            PathBuf::from(home).join(".cache/picluster")
        } else {
            return Err(std::io::Error::other(
                "cannot find a cache directory: set PICLUSTER_CACHE_DIR or HOME",
            ));
        };
        Cache::at(root)
    }

    pub fn at(root: PathBuf) -> std::io::Result<Cache> {
        for sub in ["blobs", "partial", "bases"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        Ok(Cache { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A verified download, by content digest.
    pub fn blob(&self, sha256: &str) -> PathBuf {
        self.root.join("blobs").join(sha256)
    }

    /// Where an unfinished download of `url` is kept for resuming.
    pub fn partial(&self, url: &str) -> PathBuf {
        let key = crate::digest::hex(&Sha256::digest(url.as_bytes()));
        self.root
            .join("partial")
            .join(format!("{}.part", &key[..32]))
    }

    /// The decompressed base image whose compressed form has digest `sha256`.
    pub fn base(&self, sha256: &str) -> PathBuf {
        self.root.join("bases").join(format!("{sha256}.img"))
    }
}
