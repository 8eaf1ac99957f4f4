//! `picluster fetch`, `build` and `flash` killed with SIGKILL (no chance to
//! clean up) at several points: nothing corrupt is ever left under a final
//! name, and the next run succeeds, resuming where that is documented.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use picluster::flash;
use support::cluster::setup;
use support::loopdev::Loop;
use support::*;

const EPOCH: &str = "1750000000";

/// Start `cmd`, wait until `ready` holds (or `after` passes), wait `delay`,
/// then SIGKILL it. Returns whether it was still running when killed.
fn kill_at(mut cmd: Command, ready: impl Fn() -> bool, delay: Duration) -> bool {
    let mut child: Child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !ready() && t.elapsed() < Duration::from_secs(120) {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(delay);
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    running
}

fn files(dir: &Path) -> Vec<String> {
    entries(dir)
}

#[test]
fn fetch_killed_mid_download_resumes_and_never_caches_a_bad_blob() {
    let s = setup(&[]);
    s.server.throttle("base.img.xz", Duration::from_millis(3));
    let blobs = s.cache().join("blobs");
    let partial = s.cache().join("partial");
    let mut killed = 0;
    for delay_ms in [0, 40, 120] {
        let mut cmd = s.cmd();
        cmd.arg("fetch").arg("-c").arg(s.config());
        let has_part = || {
            files(&partial).iter().any(|f| {
                f.ends_with(".part") && partial.join(f).metadata().is_ok_and(|m| m.len() > 0)
            })
        };
        if kill_at(cmd, has_part, Duration::from_millis(delay_ms)) {
            killed += 1;
        }
        // Whatever is under a final name in the cache is whole and verified.
        for b in files(&blobs) {
            assert_eq!(
                sha256_file(&blobs.join(&b)),
                b,
                "cached blob {b} is not what its name says"
            );
        }
    }
    assert!(
        killed > 0,
        "fetch always finished before it could be killed"
    );
    let resumed_before = s
        .server
        .requests_for("base.img.xz")
        .iter()
        .filter(|r| r.range.is_some())
        .count();
    run(s.cmd().arg("fetch").arg("-c").arg(s.config()));
    let reqs = s.server.requests_for("base.img.xz");
    assert!(
        reqs.iter().filter(|r| r.range.is_some()).count() > resumed_before,
        "the next run resumes the partial download: {reqs:?}"
    );
    let sha = sha256_file(&s.path("www/base.img.xz"));
    assert_eq!(sha256_file(&blobs.join(&sha)), sha);
}

#[test]
fn build_killed_anywhere_leaves_no_corrupt_image_and_the_next_build_succeeds() {
    let s = setup(&[]);
    // A reference build, then killed builds into another folder.
    run(s.build("ref", &[]).env("SOURCE_DATE_EPOCH", EPOCH));
    let out = s.path("out");
    let mut killed = 0;
    for delay_ms in [0, 150, 400, 900] {
        let mut cmd = s.build("out", &[]);
        cmd.env("SOURCE_DATE_EPOCH", EPOCH);
        let staging = || files(&out).iter().any(|f| f.ends_with(".partial"));
        if kill_at(cmd, staging, Duration::from_millis(delay_ms)) {
            killed += 1;
        }
        // Anything under a final name equals what a whole build writes.
        for f in files(&out) {
            if f.starts_with('.') {
                continue;
            }
            assert_eq!(
                sha256_file(&out.join(&f)),
                sha256_file(&s.path("ref").join(&f)),
                "{f} is under its final name but differs from a complete build (killed after {delay_ms} ms)"
            );
        }
    }
    assert!(
        killed > 0,
        "the build always finished before it could be killed"
    );
    run(s.build("out", &[]).env("SOURCE_DATE_EPOCH", EPOCH));
    run(Command::new("sha256sum")
        .arg("-c")
        .arg("SHA256SUMS")
        .current_dir(&out));
    let left: Vec<String> = files(&out)
        .into_iter()
        .filter(|f| f.ends_with(".partial"))
        .collect();
    assert!(
        left.is_empty(),
        "stale staging files were not cleaned up: {left:?}"
    );
}

#[test]
fn flash_killed_at_any_point_leaves_a_card_that_is_whole_or_has_no_table() {
    let img = fixture(&["--fill-mib", "200"]);
    let size = std::fs::metadata(&img).unwrap().len();
    let Some(l) = Loop::garbage(size) else {
        return;
    };
    let mut killed = 0;
    for delay_ms in [0, 200, 600, 1500] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_picluster"));
        cmd.arg("flash").arg("--yes").arg(&img).arg(&l.dev);
        let wiped = || l.read(0, 512).iter().all(|&b| b == 0);
        if kill_at(cmd, wiped, Duration::from_millis(delay_ms)) {
            killed += 1;
        }
        let head = l.read(0, 1 << 20);
        let mut image_head = vec![0u8; 1 << 20];
        std::os::unix::fs::FileExt::read_exact_at(
            &std::fs::File::open(&img).unwrap(),
            &mut image_head,
            0,
        )
        .unwrap();
        // No table: the MBR and the GPT header sectors are zero. The rest of
        // the first MiB may still hold the old card's bytes when the kill
        // lands while the wipe is being written (`ready` sees sector 0 only).
        let no_table = head[..1024].iter().all(|&b| b == 0);
        assert!(
            no_table || head == image_head,
            "killed after {delay_ms} ms: the card has a table but is not the whole image"
        );
        if head == image_head {
            // The table is written last: everything else must be there too.
            support::loopdev::cmp_mapped(&img, &l.dev);
        }
    }
    assert!(
        killed > 0,
        "the flash always finished before it could be killed"
    );
    flash::run_image(&img, &l.dev, &support::loopdev::yes()).unwrap();
    assert_eq!(l.read(510, 2), [0x55, 0xAA]);
}
