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

pub mod cluster;
pub mod http;
pub mod loopdev;

/// The aarch64 node agent: `$PICLUSTER_AGENT`, or this workspace's cross-build
/// (built here if needed; `tests/run.sh` builds it beforehand).
pub fn agent_binary() -> PathBuf {
    static AGENT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    AGENT.get_or_init(build_agent).clone()
}

fn build_agent() -> PathBuf {
    if let Some(p) = std::env::var_os("PICLUSTER_AGENT") {
        return PathBuf::from(p);
    }
    let status = Command::new(env!("CARGO"))
        .current_dir(repo_root())
        .args([
            "build",
            "--release",
            "-p",
            "picluster-node",
            "--target",
            "aarch64-unknown-linux-musl",
        ])
        .status()
        .expect("run cargo");
    assert!(
        status.success(),
        "cannot cross-build the node agent (rustup target add aarch64-unknown-linux-musl)"
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("aarch64-unknown-linux-musl/release/picluster-node")
}

/// A K3s release mirror laid out as `<dir>/<version>/{k3s-arm64,sha256sum-arm64.txt}`
/// holding a stand-in binary of `size` bytes and a small air-gap archive.
pub fn k3s_mirror(dir: &Path, version: &str, size: usize) -> PathBuf {
    let rel = dir.join(version);
    std::fs::create_dir_all(&rel).unwrap();
    let mut data = vec![0u8; size];
    let mut x: u32 = 0x1234_5678;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    std::fs::write(rel.join("k3s-arm64"), &data).unwrap();
    std::fs::write(
        rel.join("k3s-airgap-images-arm64.tar.zst"),
        &data[..64 << 10],
    )
    .unwrap();
    let sha = sha256_file(&rel.join("k3s-arm64"));
    let air = sha256_file(&rel.join("k3s-airgap-images-arm64.tar.zst"));
    std::fs::write(
        rel.join("sha256sum-arm64.txt"),
        format!(
            "{}  k3s\n{sha}  k3s-arm64\n{air}  k3s-airgap-images-arm64.tar.zst\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    dir.to_path_buf()
}

/// A fresh SSH key pair made by ssh-keygen; returns the public key line.
pub fn ssh_key(dir: &Path) -> String {
    let key = dir.join("id_ed25519");
    if !key.exists() {
        run(Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "test@picluster",
                "-f",
            ])
            .arg(&key));
    }
    std::fs::read_to_string(dir.join("id_ed25519.pub"))
        .unwrap()
        .trim()
        .to_string()
}

/// `picluster init DIR` with a fresh key of the test's own.
pub fn init_with_key(cache: &Path, dir: &Path) {
    let key = ssh_key(dir);
    std::fs::write(dir.join("k.pub"), key).unwrap();
    run(picluster(cache)
        .arg("init")
        .arg(dir)
        .arg("--ssh-key")
        .arg(dir.join("k.pub")));
}

/// `picluster` with a private cache directory.
pub fn picluster(cache: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_picluster"));
    c.env("PICLUSTER_CACHE_DIR", cache)
        .env("PICLUSTER_AGENT", agent_binary())
        .env_remove("SOURCE_DATE_EPOCH");
    c
}

/// A file at the root of a FAT partition image, read with mtools.
pub fn mtype(part: &Path, name: &str) -> String {
    run(Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(part)
        .arg(format!("::/{name}")))
}

/// Copy `names` from the root of a FAT partition image into `dir` (the boot
/// partition as a node mounts it), with mtools.
pub fn copy_from_fat(part: &Path, names: &[&str], dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for f in names {
        run(Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(part)
            .arg(format!("::/{f}"))
            .arg(dir.join(f)));
    }
}

/// The boot files the node agent reads in stage 1 and stage 2.
pub const AGENT_BOOT_FILES: &[&str] = &[
    "cmdline.txt",
    "picluster-node",
    "picluster-node.json",
    "picluster-secrets.json",
    "k3s-arm64",
];

/// Run a command expected to fail; return its stderr.
pub fn fails(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        !out.status.success(),
        "{cmd:?} should have failed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Names of the entries of a directory (empty when it does not exist).
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
