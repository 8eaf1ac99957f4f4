//! K3s release assets for the pinned version, from the release base URL or the
//! cluster's mirror (`<base>/<version>/k3s-arm64`, `sha256sum-arm64.txt`, and
//! with `airgap = true` the image archive), each verified against the release's
//! checksum list. The list is cached per version, so rebuilds work offline.

use std::path::PathBuf;

use picluster_profiles::cluster::Cluster;

use crate::atomic;
use crate::digest;
use crate::fetch::{Expect, FetchError, Fetcher, Location};

pub const BINARY: &str = "k3s-arm64";
pub const SUMS: &str = "sha256sum-arm64.txt";
pub const AIRGAP: &str = "k3s-airgap-images-arm64.tar.zst";

#[derive(Debug, Clone)]
pub struct Asset {
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct K3sAssets {
    pub version: String,
    pub binary: Asset,
    pub airgap: Option<Asset>,
}

#[derive(Debug, thiserror::Error)]
pub enum K3sError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(
        "{sums} lists no {name}; is {version} a real K3s release and the mirror laid out as <base>/<version>/{name}?"
    )]
    NotListed {
        sums: String,
        name: String,
        version: String,
    },
}

fn release(cluster: &Cluster) -> Location {
    Location::parse(&cluster.k3s.mirror).join(&cluster.k3s.version)
}

/// The release's checksum list: from the cache if this version was fetched before.
fn sums(fetcher: &Fetcher, cluster: &Cluster) -> Result<String, K3sError> {
    let key = digest::hex(&<sha2::Sha256 as sha2::Digest>::digest(
        format!("{}\n{}", cluster.k3s.mirror, cluster.k3s.version).as_bytes(),
    ));
    let cached = fetcher
        .cache()
        .root()
        .join("k3s")
        .join(&key[..32])
        .join(SUMS);
    if let Ok(text) = std::fs::read_to_string(&cached) {
        return Ok(text);
    }
    let text = fetcher.text(&release(cluster).join(SUMS))?;
    if let Some(dir) = cached.parent()
        && std::fs::create_dir_all(dir).is_ok()
    {
        // Best effort: without it the next build just asks the mirror again.
        let _ = atomic::write(&cached, text.as_bytes(), 0o644);
    }
    Ok(text)
}

/// Fetch (or find cached) and verify the assets the cluster needs.
pub fn fetch_assets(fetcher: &Fetcher, cluster: &Cluster) -> Result<K3sAssets, K3sError> {
    let sums = sums(fetcher, cluster)?;
    let base = release(cluster);
    let get = |name: &str| -> Result<Asset, K3sError> {
        let sha = digest::parse_sums(&sums, Some(name)).ok_or_else(|| K3sError::NotListed {
            sums: base.join(SUMS).to_string(),
            name: name.to_string(),
            version: cluster.k3s.version.clone(),
        })?;
        let f = fetcher.fetch(
            &base.join(name),
            &Expect::Sha256(sha),
            &format!("{name} {}", cluster.k3s.version),
        )?;
        Ok(Asset {
            path: f.path,
            sha256: f.sha256,
            size: f.size,
        })
    };
    Ok(K3sAssets {
        version: cluster.k3s.version.clone(),
        binary: get(BINARY)?,
        airgap: if cluster.k3s.airgap {
            Some(get(AIRGAP)?)
        } else {
            None
        },
    })
}
