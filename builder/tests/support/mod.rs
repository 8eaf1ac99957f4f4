//! Shared helpers for picluster's integration tests: fixture images made by
//! tests/fixtures/make-base-image.sh with real tools, cached per arguments.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Where cached fixtures live: inside the build directory, so `cargo clean` drops them.
fn fixture_root() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("test-fixtures")
}

/// A Raspberry Pi OS-shaped image made with `make-base-image.sh ARGS`, built
/// once per distinct script and arguments. Returns the path of `base.img`
/// (and `base.img.xz` beside it when `--xz` is among the arguments).
pub fn fixture(args: &[&str]) -> PathBuf {
    let script = repo_root().join("tests/fixtures/make-base-image.sh");
    let mut h = Sha256::new();
    h.update(std::fs::read(&script).unwrap());
    h.update(std::fs::read(repo_root().join("tests/fixtures/pios-config.txt")).unwrap());
    for a in args {
        h.update(a.as_bytes());
        h.update([0]);
    }
    let key: String = h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = fixture_root().join(key);
    std::fs::create_dir_all(&dir).unwrap();
    let img = dir.join("base.img");
    let done = dir.join("done");
    let lock = std::fs::File::create(dir.join("lock")).unwrap();
    lock.lock().unwrap();
    if !done.exists() {
        let status = Command::new("bash")
            .arg(&script)
            .arg(&img)
            .args(args)
            .status()
            .expect("run make-base-image.sh");
        assert!(status.success(), "make-base-image.sh {args:?} failed");
        std::fs::write(&done, b"").unwrap();
    }
    img
}

/// Run a command, panic with its output unless it succeeds; return stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Copy `len` bytes at `offset` of `image` into a new sparse file (for fsck and mtools).
pub fn extract(image: &Path, offset: u64, len: u64, to: &Path) {
    run(Command::new("dd")
        .arg(format!("if={}", image.display()))
        .arg(format!("of={}", to.display()))
        .args([
            "bs=1M",
            "iflag=skip_bytes,count_bytes",
            "conv=sparse",
            "status=none",
        ])
        .arg(format!("skip={offset}"))
        .arg(format!("count={len}")));
}

pub fn sha256_file(path: &Path) -> String {
    let mut h = Sha256::new();
    let mut f = std::fs::File::open(path).unwrap();
    std::io::copy(&mut f, &mut h).unwrap();
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}
