//! Crafted and corrupt disks: real `mkfs.ext4`, `mkfs.vfat` and `sfdisk`
//! output with single fields patched at their documented offsets, run through
//! the readers and through `picluster inspect`, `flash` and `build` under a
//! timeout. Nothing a disk holds may panic, abort, hang or allocate without
//! bound: each case must end in an error (or, for a flash target, be
//! overwritten).
//!
//! Offsets: ext4 superblock fields from the kernel's `struct ext4_super_block`
//! (fs/ext4/ext4.h); GPT header fields from UEFI 2.10 §5.3.2 (signature at 0,
//! header size 12, header CRC32 16, entries LBA 72, entry count 80, entry
//! size 84, entries CRC32 88); FAT32 BPB fields from Microsoft's FAT
//! specification (reserved sectors 0x0E, FAT count 0x10, FAT size 0x24, root
//! cluster 0x2C) and directory entries (first cluster high 20, low 26, size 28).

#[path = "../support/mod.rs"]
mod support;

mod bmap;
mod ext4;
mod fat;
mod gpt;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

pub(crate) const MIB: u64 = 1 << 20;

pub(crate) fn sparse(path: &Path, len: u64) {
    File::create(path).unwrap().set_len(len).unwrap();
}

pub(crate) fn rw(path: &Path) -> File {
    File::options().read(true).write(true).open(path).unwrap()
}

pub(crate) fn read_at(path: &Path, off: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    File::open(path)
        .unwrap()
        .read_exact_at(&mut b, off)
        .unwrap();
    b
}

pub(crate) fn write_at(path: &Path, off: u64, bytes: &[u8]) {
    rw(path).write_all_at(bytes, off).unwrap();
}

pub(crate) fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
pub(crate) fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// Copy `from` into `to` at byte `off` (a filesystem made apart, placed in a disk).
pub(crate) fn place(from: &Path, to: &Path, off: u64) {
    write_at(to, off, &std::fs::read(from).unwrap());
}

/// A sparse disk of `len` bytes with the DOS table `script` (sfdisk syntax).
pub(crate) fn dos_disk(path: &Path, len: u64, script: &str) {
    sparse(path, len);
    sfdisk(path, &format!("label: dos\nlabel-id: 0x12345678\n{script}"));
}

pub(crate) fn sfdisk(path: &Path, script: &str) {
    use std::io::Write;
    let mut c = Command::new("sfdisk")
        .args(["--no-reread", "--no-tell-kernel", "-q"])
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(c.wait().unwrap().success(), "sfdisk {script:?} failed");
}

/// Run `f` on another thread; a call that does not return in time is a hang.
pub(crate) fn within<T: Send + 'static>(
    secs: u64,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("{what} hung for {secs} s"),
        Err(_) => panic!("{what} panicked (see above)"),
    }
}

/// `picluster ARGS` with a hard timeout and a 4 GiB address-space limit, so a
/// hang or a runaway allocation ends the test instead of the machine.
pub(crate) fn picluster_limited(cache: &Path, args: &[&str]) -> Output {
    let mut c = Command::new("bash");
    c.arg("-c")
        .arg(r#"ulimit -v 4194304; exec timeout -s KILL 60 "$@""#)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_picluster"))
        .args(args)
        .env("PICLUSTER_CACHE_DIR", cache)
        .stdin(std::process::Stdio::null());
    c.output().unwrap()
}

/// `picluster flash --yes IMAGE CARD` onto a regular file, which must succeed.
pub(crate) fn flash_to_file(cache: &Path, image: &Path, card: &Path) {
    let out = picluster_limited(
        cache,
        &[
            "flash",
            "--yes",
            "--allow-regular-file",
            image.to_str().unwrap(),
            card.to_str().unwrap(),
        ],
    );
    let text = ended_cleanly(&out, "picluster flash");
    assert!(out.status.success(), "{text}");
}

/// The command ended by itself (no kill by the timeout, no panic, no abort).
pub(crate) fn ended_cleanly(out: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        matches!(out.status.code(), Some(0..=3)),
        "{what}: ended with {:?} (killed by the timeout, a panic or an abort)\n{stdout}\n{stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    format!("{stdout}{stderr}")
}
