//! `picluster flash` against loop devices (real block devices backed by
//! files). Needs root and losetup; each test prints why and passes vacuously
//! where they are missing. Loop devices are detached even when a test fails.

mod support;

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use picluster::bmap::Bmap;
use picluster::flash::device::System;
use picluster::flash::{self, FlashOptions};
use picluster::usedblocks::{self, DEFAULT_BLOCK_SIZE};
use support::loopdev::{GARBAGE, Loop, cmp_mapped, fill, yes};
use support::{fixture, run};

/// `cmp` every mapped range of `image` against `dev`.
fn fsck_both(l: &Loop) {
    run(Command::new("fsck.vfat").arg("-n").arg(l.part(1)));
    run(Command::new("e2fsck").arg("-fn").arg(l.part(2)));
}

/// The real `picluster flash`, with no terminal on stdin.
fn child(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_picluster"));
    c.arg("flash").args(args).stdin(Stdio::null());
    c
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn flash_writes_only_mapped_ranges_and_both_filesystems_check_clean() {
    let img = fixture(&[]);
    let size = std::fs::metadata(&img).unwrap().len();
    let Some(l) = Loop::garbage(size + (64 << 20)) else {
        return;
    };
    let sum = flash::run_image(&img, &l.dev, &yes()).unwrap();
    let used = usedblocks::compute(&img, DEFAULT_BLOCK_SIZE).unwrap();
    assert_eq!(sum.mapped_bytes, used.mapped_bytes());
    assert_eq!(sum.image_size, size);
    assert!(sum.verify_time.is_some());
    // Mapped bytes plus the wipe of the old table, and far less than the image.
    assert!(
        sum.bytes_written <= used.mapped_bytes() + (1 << 20),
        "wrote {} for {} mapped",
        sum.bytes_written,
        used.mapped_bytes()
    );
    assert!(
        sum.bytes_written * 5 < size,
        "wrote {} of {size}",
        sum.bytes_written
    );
    cmp_mapped(&img, &l.dev);
    fsck_both(&l);
    // Free space was not touched: the last MiB of the FAT partition is still
    // the old card's content.
    let p1 = &used.parts[0].extent;
    assert!(l.read(p1.end() - 4096, 4096).iter().all(|&b| b == GARBAGE));
    let table = run(Command::new("sfdisk").arg("-d").arg(&l.dev));
    assert!(table.contains("label-id: 0x6c586e13"), "{table}");
}

#[test]
fn compressed_images_stream_with_or_without_a_bmap() {
    let img = fixture(&["--xz"]);
    let xz = PathBuf::from(format!("{}.xz", img.display()));
    let size = std::fs::metadata(&img).unwrap().len();
    let (xs, streams) = flash::source::xz_uncompressed_size(
        &File::open(&xz).unwrap(),
        xz.metadata().unwrap().len(),
    )
    .unwrap()
    .unwrap();
    assert_eq!((xs, streams), (size, 1));
    let Some(l) = Loop::garbage(size) else {
        return;
    };

    // node.img.xz with node.img.bmap beside it: only mapped blocks.
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node.img.xz");
    std::os::unix::fs::symlink(&xz, &node).unwrap();
    let bmap = Bmap::for_image(&img).unwrap();
    bmap.write_to(&dir.path().join("node.img.bmap")).unwrap();
    let sum = flash::run_image(&node, &l.dev, &yes()).unwrap();
    assert_eq!(sum.mapped_bytes, bmap.mapped_bytes());
    assert!(sum.bytes_written <= bmap.mapped_bytes() + (1 << 20));
    cmp_mapped(&img, &l.dev);
    fsck_both(&l);

    // A gzip image with no bmap is written whole.
    let gz = dir.path().join("plain.img.gz");
    run(Command::new("sh").arg("-c").arg(format!(
        "gzip -1 -c '{}' > '{}'",
        img.display(),
        gz.display()
    )));
    let sum = flash::run_image(&gz, &l.dev, &yes()).unwrap();
    assert_eq!(sum.image_size, size);
    assert!(sum.bytes_written >= size);
    run(Command::new("cmp").arg(&img).arg(&l.dev));

    // A bmap that belongs to another image is refused before anything is written.
    let other = dir.path().join("other.img");
    fill(&other, 8 << 20);
    let wrong = dir.path().join("wrong.bmap");
    Bmap::for_image(&other).unwrap().write_to(&wrong).unwrap();
    let opts = FlashOptions {
        bmap: Some(wrong),
        ..yes()
    };
    let err = flash::run_image(&img, &l.dev, &opts).unwrap_err();
    assert_eq!(flash::exit_code(&err), 1);
    assert!(
        format!("{err:#}").contains("belongs to another image"),
        "{err:#}"
    );
    fsck_both(&l);
}

#[test]
fn bmaptool_copy_accepts_our_bmap_and_we_read_bmaptools() {
    if Command::new("bmaptool").arg("--version").output().is_err() {
        eprintln!("SKIPPED: bmaptool is not installed (apt-get install bmap-tools)");
        return;
    }
    let img = fixture(&[]);
    let size = std::fs::metadata(&img).unwrap().len();
    let Some(l) = Loop::garbage(size) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node.img");
    std::os::unix::fs::symlink(&img, &node).unwrap();
    let bmap_path = dir.path().join("node.img.bmap");
    let bmap = Bmap::for_image(&img).unwrap();
    bmap.write_to(&bmap_path).unwrap();
    run(Command::new("bmaptool")
        .arg("copy")
        .arg("--bmap")
        .arg(&bmap_path)
        .arg(&node)
        .arg(&l.dev));
    cmp_mapped(&img, &l.dev);
    fsck_both(&l);
    assert!(l.read(size - 4096, 4096).iter().all(|&b| b == GARBAGE));

    // And the other way round: a bmap made by `bmaptool create` reads back.
    let theirs = dir.path().join("theirs.bmap");
    run(Command::new("bmaptool")
        .arg("create")
        .arg("-o")
        .arg(&theirs)
        .arg(&img));
    let b = Bmap::read(&theirs).unwrap();
    assert_eq!(b.image_size, size);
    assert_eq!(b.blocks_count(), bmap.blocks_count());
    assert!(b.ranges.iter().all(|r| r.sha256.is_some()));
    // bmaptool maps the file's allocated extents (FIEMAP), not what the
    // filesystems use: zero-filled metadata such as inode tables are holes
    // there, so its map can be smaller than ours, but never empty.
    assert!(b.mapped_blocks() > 0);
}

#[test]
fn refuses_a_mounted_partition_of_the_target() {
    let img = fixture(&[]);
    let dir = tempfile::tempdir().unwrap();
    let card = dir.path().join("card.img");
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(&img)
        .arg(&card));
    let Some(l) = Loop::attach(&card) else {
        return;
    };
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let p2 = l.part(2);
    let m = Command::new("mount")
        .arg("-o")
        .arg("ro")
        .arg(&p2)
        .arg(&mnt)
        .output()
        .unwrap();
    if !m.status.success() {
        eprintln!(
            "SKIPPED: cannot mount ext4 here: {}",
            String::from_utf8_lossy(&m.stderr).trim()
        );
        return;
    }
    let before = l.read(0, 512);
    let err = flash::run_image(&img, &l.dev, &yes()).unwrap_err();
    let _ = Command::new("umount").arg(&mnt).output();
    assert_eq!(flash::exit_code(&err), 3, "{err:#}");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("is mounted at") && msg.contains(&*mnt.to_string_lossy()),
        "{msg}"
    );
    assert_eq!(l.read(0, 512), before, "nothing may be written");

    // A partition is never a target, mounted or not.
    let err = flash::run_image(&img, &p2, &yes()).unwrap_err();
    assert_eq!(flash::exit_code(&err), 3);
    assert!(
        format!("{err:#}").contains("flash the whole disk"),
        "{err:#}"
    );
}

#[test]
fn refuses_a_device_smaller_than_the_image() {
    let img = fixture(&[]);
    let Some(l) = Loop::garbage(100 << 20) else {
        return;
    };
    let err = flash::run_image(&img, &l.dev, &yes()).unwrap_err();
    assert_eq!(flash::exit_code(&err), 3);
    let msg = format!("{err:#}");
    assert!(msg.contains("use a larger card"), "{msg}");
    assert!(l.read(0, 4096).iter().all(|&b| b == GARBAGE));
}

#[test]
fn refuses_a_regular_file_unless_allowed() {
    let img = fixture(&[]);
    let size = std::fs::metadata(&img).unwrap().len();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target.img");
    fill(&target, size);
    let err = flash::run_image(&img, &target, &yes()).unwrap_err();
    assert_eq!(flash::exit_code(&err), 3);
    let msg = format!("{err:#}");
    assert!(
        msg.contains("is a regular file, not a block device")
            && msg.contains("--allow-regular-file"),
        "{msg}"
    );
    let opts = FlashOptions {
        allow_regular_file: true,
        ..yes()
    };
    flash::run_image(&img, &target, &opts).unwrap();
    cmp_mapped(&img, &target);
}

#[test]
fn without_a_terminal_and_without_yes_nothing_is_written() {
    let img = fixture(&[]);
    let size = std::fs::metadata(&img).unwrap().len();
    let Some(l) = Loop::garbage(size) else {
        return;
    };
    let out = child(&[s(&img), s(&l.dev)]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("no terminal") && stderr.contains("--yes"),
        "{stderr}"
    );
    assert!(l.read(0, 1 << 20).iter().all(|&b| b == GARBAGE));
}

#[test]
fn refuses_the_system_disk() {
    // The disk holding / on this machine, from the mount table.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root_src = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-")?;
        (f[4] == "/").then(|| f[sep + 2].to_string())
    });
    let Some(src) = root_src.filter(|s| {
        std::fs::metadata(s).is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_block_device()
        })
    }) else {
        eprintln!("SKIPPED: / is not on a block device here");
        return;
    };
    let img = fixture(&[]);
    // Without --yes and without a terminal: even a broken check cannot write.
    let out = child(&[s(&img), &src]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(3) && stderr.contains("system disk")
            || stderr.contains("is a partition"),
        "{src}: {stderr}"
    );
}

#[test]
fn refuses_system_disk_swap_and_held_disks_per_the_system_view() {
    let img = fixture(&[]);
    let size = std::fs::metadata(&img).unwrap().len();
    let Some(l) = Loop::garbage(size) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let name = l.dev.file_name().unwrap().to_string_lossy().into_owned();
    let rdev = std::fs::metadata(&l.dev).unwrap().rdev();
    let devno = format!(
        "{}:{}",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    );
    let write = |n: &str, t: &str| {
        let p = dir.path().join(n);
        std::fs::write(&p, t).unwrap();
        p
    };
    let empty_swaps = write("swaps0", "Filename\tType\tSize\tUsed\tPriority\n");
    let empty_mounts = write("mounts0", "");
    let sys = |mountinfo: &Path, swaps: &Path, root: &Path| System {
        mountinfo: mountinfo.to_path_buf(),
        swaps: swaps.to_path_buf(),
        sys: root.to_path_buf(),
    };
    let expect = |system: System, want: &str| {
        let err = flash::run_with(&img, &l.dev, &yes(), &system).unwrap_err();
        assert_eq!(flash::exit_code(&err), 3, "{err:#}");
        assert!(format!("{err:#}").contains(want), "{err:#}");
    };
    // / mounted from it.
    let m = write(
        "mounts1",
        &format!(
            "27 1 {devno} / / rw,relatime - ext4 {} rw\n",
            l.dev.display()
        ),
    );
    expect(sys(&m, &empty_swaps, Path::new("/sys")), "system disk");
    // Swap on it.
    let sw = write(
        "swaps1",
        &format!(
            "Filename\tType\tSize\tUsed\tPriority\n{}\tpartition\t1024\t0\t-2\n",
            l.dev.display()
        ),
    );
    expect(sys(&empty_mounts, &sw, Path::new("/sys")), "holds swap");
    // Held by a device-mapper device: a /sys where the disk has a holder.
    let fake = dir.path().join("sys");
    let disk = fake.join("devices/virtual/block").join(&name);
    std::fs::create_dir_all(disk.join("holders/dm-0")).unwrap();
    std::fs::write(disk.join("size"), "1\n").unwrap();
    std::fs::create_dir_all(fake.join("dev/block")).unwrap();
    std::os::unix::fs::symlink(&disk, fake.join("dev/block").join(&devno)).unwrap();
    expect(sys(&empty_mounts, &empty_swaps, &fake), "held by /dev/dm-0");
    // Nothing was written by any of these.
    assert!(l.read(0, 1 << 20).iter().all(|&b| b == GARBAGE));
}

#[test]
fn an_interrupted_flash_leaves_no_partition_table_and_a_second_flash_succeeds() {
    // Big enough that the write and read-back take a while.
    let img = fixture(&["--fill-mib", "300"]);
    let size = std::fs::metadata(&img).unwrap().len();
    // Start from a card that holds a valid image already (the worst case:
    // an old table pointing at half-overwritten partitions).
    let Some(l) = Loop::garbage(size) else {
        return;
    };
    flash::run_image(&fixture(&[]), &l.dev, &yes()).unwrap();
    assert_eq!(l.read(510, 2), [0x55, 0xAA]);

    let mut proc = child(&["--yes", s(&img), s(&l.dev)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the old table is gone and data is going in, then kill.
    let t = Instant::now();
    loop {
        let head = l.read(0, 512);
        if head.iter().all(|&b| b == 0) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the flash never wiped the table"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(20));
    proc.kill().unwrap();
    let status = proc.wait().unwrap();
    assert!(
        !status.success(),
        "the flash finished before it could be interrupted"
    );

    assert!(
        l.read(0, 1 << 20).iter().all(|&b| b == 0),
        "first MiB must be empty"
    );
    let sf = Command::new("sfdisk")
        .arg("-d")
        .arg(&l.dev)
        .output()
        .unwrap();
    assert!(
        !sf.status.success(),
        "a partition table survived: {}",
        String::from_utf8_lossy(&sf.stdout)
    );
    let blkid = Command::new("blkid")
        .arg("-p")
        .arg(&l.dev)
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&blkid.stdout).contains("PTTYPE"),
        "{}",
        String::from_utf8_lossy(&blkid.stdout)
    );

    let sum = flash::run_image(&img, &l.dev, &yes()).unwrap();
    assert!(sum.verify_time.is_some());
    cmp_mapped(&img, &l.dev);
    fsck_both(&l);
}

#[test]
fn flash_node_streams_from_the_cached_base_then_reuses_a_built_image() {
    let s = support::cluster::setup(&[]);
    let size = std::fs::metadata(&s.base_img).unwrap().len();
    let Some(l) = Loop::garbage(size) else {
        return;
    };
    let epoch = [("SOURCE_DATE_EPOCH", "1750000000")];
    let flash_node = || {
        let mut c = s.cmd();
        c.args(["flash", "--yes", "--node", "pi-worker-1", "-c"])
            .arg(s.config())
            .arg("--out")
            .arg(s.path("out"))
            .arg(&l.dev)
            .envs(epoch)
            .stdin(Stdio::null());
        c
    };
    let first = flash_node().output().unwrap();
    let err = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{err}");
    assert!(
        !err.contains("reusing") && err.contains("no image file written"),
        "{err}"
    );
    // Nothing full-size was written: the output folder holds no image, and
    // the temporary head (it carries the node's secrets) is gone.
    let left: Vec<_> = std::fs::read_dir(s.path("out"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".img") || n.ends_with(".partial"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // The card holds what `picluster build` makes for the node.
    run(s.build("ref", &["--node", "pi-worker-1"]).envs(epoch));
    let img = s.path("ref/pi-worker-1.img");
    cmp_mapped(&img, &l.dev);
    fsck_both(&l);

    // A built image with unchanged inputs is flashed as it is.
    run(s.build("out", &["--node", "pi-worker-1"]).envs(epoch));
    let second = flash_node().output().unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success() && err.contains("reusing"), "{err}");
    // A changed input (the cluster file) means a fresh head.
    let text = std::fs::read_to_string(s.config()).unwrap();
    std::fs::write(
        s.config(),
        text.replace(
            "dns = [\"192.168.0.1\", \"1.1.1.1\"]",
            "dns = [\"192.168.0.1\"]",
        ),
    )
    .unwrap();
    let third = flash_node().output().unwrap();
    let err = String::from_utf8_lossy(&third.stderr);
    assert!(third.status.success() && !err.contains("reusing"), "{err}");
    fsck_both(&l);
}

#[test]
fn every_compressed_artefact_flashes_with_its_bmap_and_reads_back() {
    let s = support::cluster::setup(&[]);
    let size = std::fs::metadata(&s.base_img).unwrap().len();
    let Some(l) = Loop::garbage(size) else {
        return;
    };
    let epoch = [("SOURCE_DATE_EPOCH", "1750000000")];
    run(s.build("raw", &["--node", "pi-master"]).envs(epoch));
    let raw = s.path("raw/pi-master.img");
    for fmt in ["xz", "gz", "zst"] {
        run(s
            .build(fmt, &["--node", "pi-master", "--compress", fmt])
            .envs(epoch));
        let artefact = s.path(&format!("{fmt}/pi-master.img.{fmt}"));
        // Verification (read back and compared by SHA-256 per range) is on.
        let sum = flash::run_image(&artefact, &l.dev, &yes()).unwrap();
        assert!(sum.verify_time.is_some());
        assert_eq!(sum.image_size, size, "{fmt}");
        let bmap = Bmap::read(&s.path(&format!("{fmt}/pi-master.img.{fmt}.bmap"))).unwrap();
        assert_eq!(
            sum.mapped_bytes,
            bmap.mapped_bytes(),
            "{fmt}: only mapped blocks"
        );
        cmp_mapped(&raw, &l.dev);
        fsck_both(&l);
    }
}
