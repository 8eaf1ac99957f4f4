//! Loop devices (real block devices backed by files) for the flash tests.
//! Need root and losetup; where they are missing a test prints why and
//! passes vacuously. Loop devices are detached even when a test fails.
#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub const GARBAGE: u8 = 0xA5;

/// A loop device over a file; detached on drop.
pub struct Loop {
    pub dev: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Loop {
    /// A loop device over a new `size`-byte file full of 0xA5 (a used card),
    /// or `None` (with a message) where loop devices are unavailable.
    pub fn garbage(size: u64) -> Option<Loop> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("card.img");
        fill(&file, size);
        let mut l = Loop::attach(&file)?;
        l._dir = Some(dir);
        Some(l)
    }

    pub fn attach(file: &Path) -> Option<Loop> {
        if std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(1)
            != 0
        {
            eprintln!("SKIPPED: loop-device flash tests need root");
            return None;
        }
        let out = Command::new("losetup")
            .args(["-f", "--show", "-P"])
            .arg(file)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Loop {
                dev: PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
                _dir: None,
            }),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: losetup is unavailable here: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: losetup is unavailable here: {e}");
                None
            }
        }
    }

    /// `/dev/loopNpK`, making the partition nodes appear where the kernel
    /// does not scan tables itself (partx adds them with BLKPG).
    pub fn part(&self, k: u32) -> PathBuf {
        let p = PathBuf::from(format!("{}p{k}", self.dev.display()));
        if !p.exists() {
            let _ = Command::new("partx").arg("-a").arg(&self.dev).output();
            let t = Instant::now();
            while !p.exists() && t.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        assert!(p.exists(), "{} did not appear", p.display());
        p
    }

    pub fn read(&self, off: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        File::open(&self.dev)
            .unwrap()
            .read_exact_at(&mut b, off)
            .unwrap();
        b
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("partx").arg("-d").arg(&self.dev).output();
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).output();
    }
}

pub fn fill(path: &Path, size: u64) {
    let mut f = File::create(path).unwrap();
    let chunk = vec![GARBAGE; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
}

/// Flash options that answer "yes" (the tests have no terminal).
pub fn yes() -> picluster::flash::FlashOptions {
    picluster::flash::FlashOptions {
        yes: true,
        ..Default::default()
    }
}

/// `cmp` every range `image`'s filesystems use against `dev`.
pub fn cmp_mapped(image: &Path, dev: &Path) {
    let used =
        picluster::usedblocks::compute(image, picluster::usedblocks::DEFAULT_BLOCK_SIZE).unwrap();
    for r in &used.ranges {
        super::run(
            Command::new("cmp")
                .arg(format!("--ignore-initial={}:{}", r.start, r.start))
                .arg(format!("--bytes={}", r.len))
                .arg(image)
                .arg(dev),
        );
    }
}
