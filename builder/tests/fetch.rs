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
    let f = e
        .fetcher
        .fetch(&loc, &Expect::Sha256(e.sha.clone()), "test")
        .unwrap();
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
    // A partial download left by an earlier run (e.g. Ctrl-C), with the
    // ETag of the file it was taken from.
    let url = e.server.url("img.xz");
    let part = e.fetcher.cache().partial(&url);
    std::fs::write(&part, &e.data[..1000]).unwrap();
    std::fs::write(
        part.with_extension("part.validator"),
        Server::etag(&e.root.join("img.xz")),
    )
    .unwrap();
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
    // Over plain http:// the .sha256 beside the file proves nothing: refused
    // before anything is requested.
    let err = e
        .fetcher
        .fetch(
            &Location::parse(&e.server.url("img.xz")),
            &Expect::Sibling,
            "t",
        )
        .unwrap_err();
    assert!(matches!(err, FetchError::PlainHttpUnpinned { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("https://") && msg.contains("sha256 ="),
        "{msg}"
    );
    assert!(e.server.requests_for("img.xz.sha256").is_empty());
    assert!(e.server.requests_for("img.xz").is_empty());
    // A local file whose checksum file is unreadable.
    std::fs::create_dir(e.root.join("dir.img.xz.sha256")).unwrap();
    std::fs::write(e.root.join("dir.img.xz"), b"x").unwrap();
    let err = e
        .fetcher
        .fetch(
            &Location::parse(e.root.join("dir.img.xz").to_str().unwrap()),
            &Expect::Sibling,
            "t",
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("no checksum")
            && msg.contains("dir.img.xz.sha256")
            && msg.contains("sha256 ="),
        "{msg}"
    );
}

#[test]
fn a_partial_download_of_a_file_changed_upstream_starts_over() {
    let e = env();
    let url = e.server.url("img.xz");
    let part = e.fetcher.cache().partial(&url);
    // An earlier run got the first MiB of the old file...
    std::fs::write(&part, &e.data[..1 << 20]).unwrap();
    std::fs::write(
        part.with_extension("part.validator"),
        Server::etag(&e.root.join("img.xz")),
    )
    .unwrap();
    // ...then the file was replaced upstream.
    std::thread::sleep(Duration::from_millis(20));
    let new: Vec<u8> = e.data.iter().map(|b| b ^ 0x5a).collect();
    std::fs::write(e.root.join("img.xz"), &new).unwrap();
    let new_sha = support::sha256_file(&e.root.join("img.xz"));
    let f = e
        .fetcher
        .fetch(&Location::parse(&url), &Expect::Sha256(new_sha), "t")
        .expect("the changed file is fetched whole, not spliced onto the old part");
    assert_eq!(std::fs::read(&f.path).unwrap(), new);
    let r = &e.server.requests_for("img.xz")[0];
    assert_eq!(r.range.as_deref(), Some("bytes=1048576-"));
    assert!(r.if_range.is_some(), "{r:?}");
}

#[test]
fn a_partial_download_with_nothing_to_identify_it_is_not_resumed() {
    let e = env();
    let url = e.server.url("img.xz");
    std::fs::write(e.fetcher.cache().partial(&url), vec![0xee; 4096]).unwrap();
    let f = e
        .fetcher
        .fetch(&Location::parse(&url), &Expect::Sha256(e.sha.clone()), "t")
        .unwrap();
    assert_eq!(std::fs::read(&f.path).unwrap(), e.data);
    assert_eq!(e.server.requests_for("img.xz")[0].range, None);
}

#[test]
fn a_damaged_cache_entry_is_downloaded_again() {
    let e = env();
    let loc = Location::parse(&e.server.url("img.xz"));
    let expect = Expect::Sha256(e.sha.clone());
    let f = e.fetcher.fetch(&loc, &expect, "t").unwrap();
    // One flipped byte in the cached blob.
    let mut bytes = std::fs::read(&f.path).unwrap();
    bytes[12345] ^= 1;
    std::fs::write(&f.path, &bytes).unwrap();
    let again = e.fetcher.fetch(&loc, &expect, "t").unwrap();
    assert!(!again.cached);
    assert_eq!(std::fs::read(&again.path).unwrap(), e.data);
    assert_eq!(e.server.requests_for("img.xz").len(), 2);
}

#[test]
fn two_fetches_of_one_url_share_one_download() {
    let e = env();
    e.server.throttle("img.xz", Duration::from_millis(15));
    let url = e.server.url("img.xz");
    let cache = e.fetcher.cache().clone();
    let sha = e.sha.clone();
    let first = {
        let (url, cache, sha) = (url.clone(), cache.clone(), sha.clone());
        std::thread::spawn(move || {
            Fetcher::new(cache)
                .unwrap()
                .fetch(&Location::parse(&url), &Expect::Sha256(sha), "a")
                .unwrap()
        })
    };
    // The first is still downloading (48 chunks x 15 ms) when the second starts.
    std::thread::sleep(Duration::from_millis(200));
    let second = Fetcher::new(cache)
        .unwrap()
        .fetch(&Location::parse(&url), &Expect::Sha256(sha), "b")
        .unwrap();
    let first = first.join().unwrap();
    assert!(
        !first.cached && second.cached,
        "the second reused the first's blob"
    );
    assert_eq!(std::fs::read(&second.path).unwrap(), e.data);
    assert_eq!(e.server.requests_for("img.xz").len(), 1);
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

#[test]
fn failures_retrying_cannot_mend_fail_at_once_with_the_offline_hint() {
    let e = env();
    // Nothing listens on port 9 of 127.0.0.1: connection refused. With the
    // default retry delay, retrying would take 1+2+4+8+16 s.
    let mut f = Fetcher::new(e.fetcher.cache().clone()).unwrap();
    f.retry_delay = Duration::from_secs(1);
    for url in [
        "http://127.0.0.1:9/x.img.xz",
        "https://127.0.0.1:9/x.img.xz",
    ] {
        let t = std::time::Instant::now();
        let err = f
            .fetch(&Location::parse(url), &Expect::Sha256(e.sha.clone()), "t")
            .unwrap_err();
        assert!(
            t.elapsed() < Duration::from_millis(900),
            "{url}: {:?}",
            t.elapsed()
        );
        assert!(matches!(err, FetchError::Unreachable { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("--base PATH") && msg.contains("k3s_mirror") && msg.contains("file:///"),
            "{msg}"
        );
    }
}
