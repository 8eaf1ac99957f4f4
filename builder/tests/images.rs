//! `picluster images`: the pins offline, and `--refresh` against a recorded
//! answer shaped like Raspberry Pi's image list (tests/fixtures/os-list, after
//! rpi-imager doc/json-schema/os-list-schema.json) served on 127.0.0.1 with the
//! images it names: newer releases are found through inline `subitems` and a
//! `subitems_url`, their digests read from the `.sha256` beside each image, and
//! the printed lines, pasted into a cluster file, build a node.

mod support;

use std::process::Command;

use serde_json::Value;
use support::*;

use support::cluster::setup;

fn json(cmd: &mut Command) -> Value {
    let out = run(cmd);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}:\n{out}"))
}

#[test]
fn images_lists_the_pins_without_a_network() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    let text = run(picluster(&cache).arg("images"));
    let pins = std::fs::read_to_string(repo_root().join("images/catalog.toml")).unwrap();
    let names: Vec<&str> = pins
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .map(|l| l.trim_end_matches('"'))
        .collect();
    assert!(names.len() >= 4, "{names:?}");
    for n in &names {
        assert!(text.contains(n), "{n} not listed:\n{text}");
    }
    let default = text
        .lines()
        .find(|l| l.contains("(default)"))
        .unwrap_or_else(|| panic!("no default:\n{text}"));
    assert!(default.contains("raspios-bookworm-arm64-lite ") && default.contains("bookworm"));
    assert!(text.contains("trixie"), "{text}");
    let v = json(picluster(&cache).args(["images", "--json"]));
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["pinned"].as_array().unwrap().len(), names.len());
    assert!(v["refreshed"].is_null());
    for p in v["pinned"].as_array().unwrap() {
        assert!(
            ["bookworm", "trixie"].contains(&p["codename"].as_str().unwrap()),
            "{p}"
        );
        assert_eq!(p["date"].as_str().unwrap().len(), 10, "{p}");
    }
}

#[test]
fn refresh_finds_newer_releases_and_its_lines_build_a_node() {
    let s = setup(&[]);
    let www = s.path("www");
    // The recorded list, pointed at this server; the Bookworm "release" in
    // the sublist is the fixture image, with its digest in the list.
    let base_sha = sha256_file(&www.join("base.img.xz"));
    let fixtures = repo_root().join("tests/fixtures/os-list");
    for f in ["os_list_imagingutility_v4.json", "os_list_other.json"] {
        let text = std::fs::read_to_string(fixtures.join(f))
            .unwrap()
            .replace("{{BASE}}", &s.server.base)
            .replace("{{BOOKWORM_SHA256}}", &base_sha);
        std::fs::write(www.join(f), text).unwrap();
    }
    std::fs::create_dir_all(www.join("images")).unwrap();
    std::fs::copy(
        www.join("base.img.xz"),
        www.join("images/2026-11-18-raspios-bookworm-arm64-lite.img.xz"),
    )
    .unwrap();
    // The Trixie entry has no digest in the list, as Raspberry Pi's own
    // entries have none: it is read from the .sha256 beside the image.
    let trixie_sha = "ab".repeat(32);
    std::fs::write(
        www.join("images/2026-11-20-raspios-trixie-arm64-lite.img.xz.sha256"),
        format!("{trixie_sha}  2026-11-20-raspios-trixie-arm64-lite.img.xz\n"),
    )
    .unwrap();

    let list = s.server.url("os_list_imagingutility_v4.json");
    let text = run(s.cmd().args(["images", "--refresh", "--list", &list]));
    assert!(
        text.contains(": 3 Raspberry Pi OS Lite arm64 release(s)"),
        "{text}"
    );
    let newer = text
        .split("newer than the pins:")
        .nth(1)
        .unwrap_or_else(|| panic!("{text}"));
    assert!(newer.contains("trixie    2026-11-20"), "{text}");
    assert!(newer.contains("bookworm  2026-11-18"), "{text}");
    // Not the desktop image, not 32-bit, not Ubuntu, not the pinned 2026-09-15.
    for absent in [
        "raspios-trixie-arm64.img",
        "armhf",
        "ubuntu",
        "2026-09-15-raspios",
    ] {
        assert!(!newer.contains(absent), "{absent} offered:\n{text}");
    }
    assert!(
        text.contains(&format!("sha256 = \"{trixie_sha}\"")),
        "{text}"
    );
    assert!(text.contains("(first boot: cloudinit-rpi)"), "{text}");
    assert!(text.contains("plain http"), "{text}");
    assert!(
        text.contains("skipped 1 list entry not shaped like an image entry"),
        "{text}"
    );
    assert!(!text.contains("2026-11-19"), "{text}");
    // The cycle back to the top list was followed once.
    assert_eq!(
        s.server
            .requests_for("/os_list_imagingutility_v4.json")
            .len(),
        1
    );
    assert_eq!(s.server.requests_for("/os_list_other.json").len(), 1);

    let v = json(
        s.cmd()
            .args(["images", "--refresh", "--json", "--list", &list]),
    );
    let newer = v["refreshed"]["newer"].as_array().unwrap();
    assert_eq!(newer.len(), 2, "{v:#}");
    let bookworm = newer.iter().find(|r| r["codename"] == "bookworm").unwrap();
    assert_eq!(bookworm["sha256"], base_sha);
    assert_eq!(bookworm["extract_size"], 2760000000u64);
    assert_eq!(bookworm["init_format"], "systemd");
    assert!(v["refreshed"]["disagree"].as_array().unwrap().is_empty());

    // The lines it printed for Bookworm, put into the cluster file in place of
    // `base`, make a buildable cluster.
    let block = text
        .split("to build from bookworm 2026-11-18")
        .nth(1)
        .unwrap();
    let url_line = block.lines().find(|l| l.starts_with("url = ")).unwrap();
    let sha_line = block.lines().find(|l| l.starts_with("sha256 = ")).unwrap();
    let cfg = std::fs::read_to_string(s.config()).unwrap();
    let mut out = String::new();
    let mut in_image = false;
    for l in cfg.lines() {
        if l.starts_with('[') {
            in_image = l == "[image]";
            out.push_str(l);
            out.push('\n');
            if in_image {
                out.push_str(&format!("{url_line}\n{sha_line}\n"));
            }
            continue;
        }
        if in_image
            && (l.starts_with("url =") || l.starts_with("sha256 =") || l.starts_with("base ="))
        {
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    std::fs::write(s.config(), out).unwrap();
    run(&mut s.build("out", &["--node", "pi-worker-1"]));
    assert!(
        !s.server
            .requests_for("/images/2026-11-18-raspios-bookworm-arm64-lite.img.xz")
            .is_empty()
    );
    assert!(s.path("out/pi-worker-1.img").is_file());
}

#[test]
fn a_list_that_is_not_one_fails_once_and_plainly() {
    let s = setup(&[]);
    std::fs::write(s.path("www/bad.json"), "<html>maintenance</html>").unwrap();
    let err = fails(
        s.cmd()
            .args(["images", "--refresh", "--list", &s.server.url("bad.json")]),
    );
    assert!(err.contains("bad.json is not an image list"), "{err}");
    assert_eq!(err.matches("is not an image list").count(), 1, "{err}");
    // Nothing listens on port 1: refused at once, not retried for long, and
    // the hint is this command's (not the base-image download's).
    let t = std::time::Instant::now();
    let err = fails(s.cmd().args([
        "images",
        "--refresh",
        "--list",
        "http://127.0.0.1:1/os_list.json",
    ]));
    assert!(
        t.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(err.matches("127.0.0.1:1/os_list.json").count(), 1, "{err}");
    assert!(err.contains("without --refresh lists the pins"), "{err}");
    assert!(!err.contains("--base PATH"), "{err}");
}
