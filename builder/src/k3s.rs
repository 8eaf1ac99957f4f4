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
    #[error(
        "{sums} is not a K3s checksum list (no line \"<64 hex digits>  {BINARY}\"); it was not cached. Check k3s_mirror and k3s_version"
    )]
    NotASumsList { sums: String },
    #[error(
        "refusing {sums}: over plain http:// the checksum list proves nothing (it could be swapped along with the binary). Use an https:// mirror or pin k3s_sha256 (and k3s_airgap_sha256) under [cluster]"
    )]
    PlainHttp { sums: String },
    #[error(
        "{sums} lists k3s-arm64 as {listed}, but {version} is pinned as {pinned}: the mirror answers for another release (or was tampered with); it was not cached"
    )]
    WrongRelease {
        sums: String,
        version: String,
        listed: String,
        pinned: String,
    },
}

fn release(cluster: &Cluster) -> Location {
    Location::parse(&cluster.k3s.mirror).join(&cluster.k3s.version)
}

/// A K3s checksum list is a sha256sum file naming `k3s-arm64`: an HTML error
/// page, an empty answer or a list for other files is not one.
fn is_sums_list(text: &str) -> bool {
    digest::parse_sums(text, Some(BINARY)).is_some()
}

/// A list that names another `k3s-arm64` than the pinned one is for another
/// release (a mirror that redirects to "latest") or forged.
fn check_release(text: &str, cluster: &Cluster, sums: &Location) -> Result<(), K3sError> {
    let listed = digest::parse_sums(text, Some(BINARY));
    match (&cluster.k3s.binary_sha256, listed) {
        (Some(pinned), Some(listed)) if *pinned != listed => Err(K3sError::WrongRelease {
            sums: sums.to_string(),
            version: cluster.k3s.version.clone(),
            listed,
            pinned: pinned.clone(),
        }),
        _ => Ok(()),
    }
}

/// The release's checksum list: from the cache if this version was fetched
/// before. Only a real checksum list is cached.
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
    let loc = release(cluster).join(SUMS);
    if let Ok(text) = std::fs::read_to_string(&cached)
        && is_sums_list(&text)
        && check_release(&text, cluster, &loc).is_ok()
    {
        return Ok(text);
    }
    if matches!(&loc, Location::Http(u) if u.starts_with("http://")) {
        return Err(K3sError::PlainHttp {
            sums: loc.to_string(),
        });
    }
    let text = fetcher.text(&loc)?;
    if !is_sums_list(&text) {
        return Err(K3sError::NotASumsList {
            sums: loc.to_string(),
        });
    }
    check_release(&text, cluster, &loc)?;
    if let Some(dir) = cached.parent()
        && std::fs::create_dir_all(dir).is_ok()
    {
        // Best effort: without it the next build just asks the mirror again.
        let _ = atomic::write(&cached, text.as_bytes(), 0o644);
    }
    Ok(text)
}

/// Fetch (or find cached) and verify the assets the cluster needs: against
/// the pinned digests (cluster file, images/k3s.toml) where there are pins,
/// else against the release's checksum list. The list is not even read when
/// everything needed is pinned, so a pinned build works with any mirror.
pub fn fetch_assets(fetcher: &Fetcher, cluster: &Cluster) -> Result<K3sAssets, K3sError> {
    let k = &cluster.k3s;
    let needs_list = k.binary_sha256.is_none() || (k.airgap && k.airgap_sha256.is_none());
    let sums = if needs_list {
        Some(sums(fetcher, cluster)?)
    } else {
        None
    };
    let base = release(cluster);
    let get = |name: &str, pin: &Option<String>| -> Result<Asset, K3sError> {
        let sha = match (pin, &sums) {
            (Some(p), _) => p.clone(),
            (None, Some(list)) => {
                digest::parse_sums(list, Some(name)).ok_or_else(|| K3sError::NotListed {
                    sums: base.join(SUMS).to_string(),
                    name: name.to_string(),
                    version: k.version.clone(),
                })?
            }
            (None, None) => unreachable!("the list is read whenever a pin is missing"),
        };
        let f = fetcher.fetch(
            &base.join(name),
            &Expect::Sha256(sha),
            &format!("{name} {}", k.version),
        )?;
        Ok(Asset {
            path: f.path,
            sha256: f.sha256,
            size: f.size,
        })
    };
    Ok(K3sAssets {
        version: k.version.clone(),
        binary: get(BINARY, &k.binary_sha256)?,
        airgap: if k.airgap {
            Some(get(AIRGAP, &k.airgap_sha256)?)
        } else {
            None
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_real_checksum_lists_count() {
        let d = "a".repeat(64);
        assert!(is_sums_list(&format!("{d}  k3s\n{d}  k3s-arm64\n")));
        assert!(!is_sums_list("<html><body>Not found</body></html>"));
        assert!(!is_sums_list(""));
        assert!(!is_sums_list(&format!("{d}  k3s\n")));
        assert!(!is_sums_list(&format!("{}  k3s-arm64\n", "a".repeat(63))));
    }
}
