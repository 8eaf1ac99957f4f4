//! `picluster flash` refusing disks that hold other data, loop devices over
//! other disks, Ctrl-C, and `--discard`, against loop devices (root and
//! losetup needed; skipped with a message where missing).

mod support;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use picluster::flash::{self, FlashOptions};
use picluster::usedblocks::{self, DEFAULT_BLOCK_SIZE};
use support::fixture;
use support::loopdev::{GARBAGE, Loop, yes};

fn write_at(dev: &std::path::Path, off: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(dev).unwrap();
    f.write_all_at(bytes, off).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn disks_holding_lvm_raid_luks_or_zfs_data_need_force() {
    let img = fixture(&[]);
    let size = std::fs::metadata(&img).unwrap().len();
    let Some(l) = Loop::garbage(size) else {
        return;
    };
    // Each signature at the offset its format documents (see
    // builder/src/flash/signatures.rs): LUKS magic at 0, an LVM2 label in
    // sector 1, an MD v1.2 superblock at 4 KiB, a ZFS uberblock at 128 KiB.
    let mut lvm = [0u8; 32];
    lvm[..8].copy_from_slice(b"LABELONE");
    lvm[24..].copy_from_slice(b"LVM2 001");
    let cases: [(&str, u64, Vec<u8>); 4] = [
        ("LUKS encrypted volume", 0, b"LUKS\xba\xbe\0\x02".to_vec()),
        ("LVM physical volume", 512, lvm.to_vec()),
        (
            "Linux RAID member",
            4096,
            0xa92b_4efcu32.to_le_bytes().to_vec(),
        ),
        (
            "ZFS pool member",
            128 << 10,
            0x00ba_b10cu64.to_le_bytes().to_vec(),
        ),
    ];
    for (what, off, bytes) in &cases {
        write_at(&l.dev, *off, bytes);
        let err = flash::run_image(&img, &l.dev, &yes()).unwrap_err();
        assert_eq!(flash::exit_code(&err), 3, "{err:#}");
        let msg = format!("{err:#}");
        assert!(msg.contains(what) && msg.contains("--force"), "{msg}");
        assert_eq!(l.read(*off, bytes.len()), *bytes, "nothing may be written");
        // Restore the garbage for the next case.
        write_at(&l.dev, *off, &vec![GARBAGE; bytes.len()]);
    }
    write_at(&l.dev, 0, b"LUKS\xba\xbe\0\x02");
    let forced = FlashOptions {
        force: true,
        ..yes()
    };
    flash::run_image(&img, &l.dev, &forced).expect("--force flashes it");
    assert_eq!(l.read(510, 2), [0x55, 0xAA]);
}

#[test]
fn a_loop_device_over_another_block_device_is_refused() {
    let img = fixture(&[]);
    let size = std::fs::metadata(&img).unwrap().len();
    let Some(inner) = Loop::garbage(size) else {
        return;
    };
    let Some(outer) = Loop::attach(&inner.dev) else {
        return;
    };
    let err = flash::run_image(&img, &outer.dev, &yes()).unwrap_err();
    assert_eq!(flash::exit_code(&err), 3, "{err:#}");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("loop device over the block device")
            && msg.contains(&*inner.dev.to_string_lossy()),
        "{msg}"
    );
    assert!(inner.read(0, 4096).iter().all(|&b| b == GARBAGE));
}

#[test]
fn discard_leaves_no_old_data_outside_the_image() {
    let img = fixture(&[]);
    let size = std::fs::metadata(&img).unwrap().len();
    let Some(l) = Loop::garbage(size + (8 << 20)) else {
        return;
    };
    let used = usedblocks::compute(&img, DEFAULT_BLOCK_SIZE).unwrap();
    let gap = used
        .ranges
        .windows(2)
        .map(|w| (w[0].end(), w[1].start))
        .find(|(a, b)| b - a >= 1 << 20)
        .expect("the fixture has a free stretch of 1 MiB");
    // Without --discard the old card's bytes stay in the free blocks.
    flash::run_image(&img, &l.dev, &yes()).unwrap();
    assert!(l.read(gap.0, 4096).iter().all(|&b| b == GARBAGE));
    let opts = FlashOptions {
        discard: true,
        ..yes()
    };
    flash::run_image(&img, &l.dev, &opts).unwrap();
    let dev = File::open(&l.dev).unwrap();
    let mut buf = vec![0u8; (gap.1 - gap.0) as usize];
    dev.read_exact_at(&mut buf, gap.0).unwrap();
    assert!(
        buf.iter().all(|&b| b == 0),
        "a free stretch still holds old data"
    );
    let mut tail = vec![0u8; 8 << 20];
    dev.read_exact_at(&mut tail, size).unwrap();
    assert!(tail.iter().all(|&b| b == 0), "past the image");
    // The image itself is intact: its blocks read back as written.
    support::loopdev::cmp_mapped(&img, &l.dev);
}

#[test]
fn ctrl_c_stops_a_flash_promptly_with_exit_130() {
    let img = fixture(&["--fill-mib", "300"]);
    let size = std::fs::metadata(&img).unwrap().len();
    let Some(l) = Loop::garbage(size) else {
        return;
    };
    let child = Command::new(env!("CARGO_BIN_EXE_picluster"))
        .arg("flash")
        .arg("--yes")
        .arg(&img)
        .arg(&l.dev)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !l.read(0, 512).iter().all(|&b| b == 0) {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the table was never wiped"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(50));
    let sent = Instant::now();
    support::run(Command::new("kill").arg("-INT").arg(child.id().to_string()));
    let out = child.wait_with_output().unwrap();
    let took = sent.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(took < Duration::from_secs(10), "took {took:?} to stop");
    assert!(
        stderr.contains("without a partition table")
            && stderr.contains("run the same command again"),
        "{stderr}"
    );
    assert!(l.read(0, 1 << 20).iter().all(|&b| b == 0));
}
