//! Downloads from a real HTTP server on 127.0.0.1: verification, resume after
//! a cut connection, checksum mismatch, cache hits, local files.

mod support;

use std::time::Duration;

use picluster::cache::Cache;
use picluster::fetch::{Expect, FetchError, Fetcher, Location};
use support::http::Server;

struct Env {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    server: Server,
    fetcher: Fetcher,
    data: Vec<u8>,
    sha: String,
}

/// A 3 MiB file `img.xz` with its `.sha256` sibling, served over HTTP.
fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    let data: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(root.join("img.xz"), &data).unwrap();
    let sha = support::sha256_file(&root.join("img.xz"));
    std::fs::write(root.join("img.xz.sha256"), format!("{sha}  img.xz\n")).unwrap();
    let server = Server::start(&root);
    let mut fetcher = Fetcher::new(Cache::at(dir.path().join("cache")).unwrap()).unwrap();
    fetcher.retry_delay = Duration::from_millis(10);
    Env {
        root,
        _dir: dir,
        server,
        fetcher,
        data,
        sha,
    }
}

#[test]
fn downloads_verify_and_cache_by_digest() {
    let e = env();
    let loc = Location::parse(&e.server.url("img.xz"));
    let f = e.fetcher.fetch(&loc, &Expect::Sibling, "test").unwrap();
    assert_eq!(f.sha256, e.sha);
    assert!(!f.cached);
    assert_eq!(std::fs::read(&f.path).unwrap(), e.data);
    assert_eq!(f.path, e.fetcher.cache().blob(&e.sha));
    // Second time: served from the cache, the image itself is not requested again.
    let again = e
        .fetcher
        .fetch(&loc, &Expect::Sha256(e.sha.clone()), "test")
        .unwrap();
    assert!(again.cached);
    assert_eq!(e.server.requests_for("img.xz").len(), 1);
}

#[test]
fn a_cut_connection_is_resumed_with_a_range_request() {
    let e = env();
    e.server.cut_next("img.xz", 1 << 20);
    let loc = Location::parse(&e.server.url("img.xz"));
    let f = e
        .fetcher
        .fetch(&loc, &Expect::Sha256(e.sha.clone()), "test")
        .unwrap();
    assert_eq!(std::fs::read(&f.path).unwrap(), e.data);
    let reqs = e.server.requests_for("img.xz");
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0].range, None);
    assert_eq!(reqs[1].range.as_deref(), Some("bytes=1048576-"));
}

#[test]
fn an_interrupted_download_resumes_in_a_later_run() {
    let e = env();
    // A partial download left by an earlier run (e.g. Ctrl-C).
    let url = e.server.url("img.xz");
    std::fs::write(e.fetcher.cache().partial(&url), &e.data[..1000]).unwrap();
    let f = e
        .fetcher
        .fetch(
            &Location::parse(&url),
            &Expect::Sha256(e.sha.clone()),
            "test",
        )
        .unwrap();
    assert_eq!(std::fs::read(&f.path).unwrap(), e.data);
    assert_eq!(
        e.server.requests_for("img.xz")[0].range.as_deref(),
        Some("bytes=1000-")
    );
}

#[test]
fn checksum_mismatch_deletes_the_download_and_says_so() {
    let e = env();
    let wrong = "ab".repeat(32);
    let url = e.server.url("img.xz");
    let err = e
        .fetcher
        .fetch(
            &Location::parse(&url),
            &Expect::Sha256(wrong.clone()),
            "test",
        )
        .unwrap_err();
    assert!(matches!(err, FetchError::Mismatch { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("checksum mismatch") && msg.contains(&wrong) && msg.contains(&e.sha),
        "{msg}"
    );
    assert!(msg.contains("deleted"), "{msg}");
    assert!(!e.fetcher.cache().partial(&url).exists());
    assert!(!e.fetcher.cache().blob(&wrong).exists());
    assert!(!e.fetcher.cache().blob(&e.sha).exists());
}

#[test]
fn missing_files_and_checksums_are_explained() {
    let e = env();
    let err = e
        .fetcher
        .fetch(
            &Location::parse(&e.server.url("nope.img.xz")),
            &Expect::Sha256("a".repeat(64)),
            "t",
        )
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    std::fs::remove_file(e.root.join("img.xz.sha256")).unwrap();
    let err = e
        .fetcher
        .fetch(
            &Location::parse(&e.server.url("img.xz")),
            &Expect::Sibling,
            "t",
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("no checksum") && msg.contains("img.xz.sha256") && msg.contains("sha256 ="),
        "{msg}"
    );
}

#[test]
fn local_paths_and_file_urls_are_verified_in_place() {
    let e = env();
    let path = e.root.join("img.xz");
    for loc in [
        Location::parse(path.to_str().unwrap()),
        Location::parse(&format!("file://{}", path.display())),
    ] {
        let f = e.fetcher.fetch(&loc, &Expect::Sibling, "t").unwrap();
        assert_eq!(
            (f.path.as_path(), f.sha256.as_str()),
            (path.as_path(), e.sha.as_str())
        );
    }
    std::fs::write(
        e.root.join("img.xz.sha256"),
        format!("{}  img.xz\n", "cd".repeat(32)),
    )
    .unwrap();
    let err = e
        .fetcher
        .fetch(
            &Location::parse(path.to_str().unwrap()),
            &Expect::Sibling,
            "t",
        )
        .unwrap_err();
    assert!(matches!(err, FetchError::Mismatch { .. }), "{err}");
}
