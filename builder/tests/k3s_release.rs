//! K3s release assets: pinned digests, and checksum lists that are checked
//! before they are cached (an HTML error page or another release's list is
//! never remembered).

mod support;

use std::path::Path;

use picluster::cache::Cache;
use picluster::fetch::Fetcher;
use picluster::k3s::{self, K3sError};
use picluster_profiles::{Cluster, SAMPLE_CLUSTER};

/// The sample cluster with K3s `version` from the `file://` mirror `mirror`.
fn cluster(version: &str, mirror: &Path, extra: &str) -> Cluster {
    let text = SAMPLE_CLUSTER
        .replacen("v1.33.5+k3s1", version, 1)
        .replacen(
            "# k3s_mirror = \"https://mirror.lan/k3s\"",
            &format!("k3s_mirror = \"file://{}\"\n{extra}", mirror.display()),
            1,
        );
    Cluster::parse(Path::new("cluster.toml"), &text).unwrap()
}

fn cached_lists(cache: &Path) -> usize {
    walk(&cache.join("k3s"))
}

fn walk(p: &Path) -> usize {
    std::fs::read_dir(p).map_or(0, |d| {
        d.flatten()
            .map(|e| {
                if e.path().is_dir() {
                    walk(&e.path())
                } else {
                    1
                }
            })
            .sum()
    })
}

#[test]
fn a_poisoned_checksum_list_is_refused_and_not_cached() {
    let d = tempfile::tempdir().unwrap();
    let version = "v1.33.4+k3s1"; // not pinned in images/k3s.toml
    let rel = support::k3s_mirror(&d.path().join("k3s"), version, 1 << 16).join(version);
    let good = std::fs::read_to_string(rel.join("sha256sum-arm64.txt")).unwrap();
    std::fs::write(
        rel.join("sha256sum-arm64.txt"),
        "<html><body>Rate limit exceeded</body></html>\n",
    )
    .unwrap();
    let c = cluster(version, &d.path().join("k3s"), "");
    let fetcher = Fetcher::new(Cache::at(d.path().join("cache")).unwrap()).unwrap();
    let err = k3s::fetch_assets(&fetcher, &c).unwrap_err();
    assert!(matches!(err, K3sError::NotASumsList { .. }), "{err}");
    assert!(err.to_string().contains("not cached"), "{err}");
    assert_eq!(cached_lists(&d.path().join("cache")), 0);
    // The real list is read next time: nothing of the bad answer was kept.
    std::fs::write(rel.join("sha256sum-arm64.txt"), good).unwrap();
    let a = k3s::fetch_assets(&fetcher, &c).unwrap();
    assert_eq!(
        a.binary.sha256,
        support::sha256_file(&rel.join("k3s-arm64"))
    );
    assert_eq!(cached_lists(&d.path().join("cache")), 1);
    // A release whose checksum list lacks the air-gap archive is refused by name.
    let mut c = c;
    c.k3s.airgap = true;
    let listed = std::fs::read_to_string(rel.join("sha256sum-arm64.txt")).unwrap();
    let without: String = listed
        .lines()
        .filter(|l| !l.contains("airgap"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(rel.join("sha256sum-arm64.txt"), without).unwrap();
    let fresh = Fetcher::new(Cache::at(d.path().join("cache2")).unwrap()).unwrap();
    let err = k3s::fetch_assets(&fresh, &c).unwrap_err();
    assert!(
        err.to_string()
            .contains("lists no k3s-airgap-images-arm64.tar.zst"),
        "{err}"
    );
}

#[test]
fn another_releases_checksum_list_is_refused_when_the_binary_is_pinned() {
    // k3s-arm64 pinned, the air-gap archive not: the list is read, and a
    // mirror that answers with the list of another build must not be
    // believed, or cached.
    let d = tempfile::tempdir().unwrap();
    let version = "v1.33.4+k3s1";
    support::k3s_mirror(&d.path().join("k3s"), version, 1 << 16);
    let pinned = "21d032b2ca1bb2696c352eb0ff0c2d20bb06214b8c0a71b03494f958039ff06b";
    let mut c = cluster(
        version,
        &d.path().join("k3s"),
        &format!("k3s_sha256 = \"{pinned}\""),
    );
    c.k3s.airgap = true;
    let fetcher = Fetcher::new(Cache::at(d.path().join("cache")).unwrap()).unwrap();
    let err = k3s::fetch_assets(&fetcher, &c).unwrap_err();
    assert!(matches!(err, K3sError::WrongRelease { .. }), "{err}");
    assert!(err.to_string().contains(pinned), "{err}");
    assert_eq!(cached_lists(&d.path().join("cache")), 0);
}

#[test]
fn pinned_assets_need_no_checksum_list() {
    let d = tempfile::tempdir().unwrap();
    let version = "v1.33.4+k3s1";
    let rel = support::k3s_mirror(&d.path().join("k3s"), version, 1 << 16).join(version);
    std::fs::remove_file(rel.join("sha256sum-arm64.txt")).unwrap();
    let pin = support::sha256_file(&rel.join("k3s-arm64"));
    let c = cluster(
        version,
        &d.path().join("k3s"),
        &format!("k3s_sha256 = \"{pin}\""),
    );
    let fetcher = Fetcher::new(Cache::at(d.path().join("cache")).unwrap()).unwrap();
    let a = k3s::fetch_assets(&fetcher, &c).unwrap();
    assert_eq!(a.binary.sha256, pin);
    // A pin the mirror's binary does not match fails as a mismatch.
    let c = cluster(
        version,
        &d.path().join("k3s"),
        &format!("k3s_sha256 = \"{}\"", "ef".repeat(32)),
    );
    let err = k3s::fetch_assets(&fetcher, &c).unwrap_err();
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
}
