//! ext4 superblocks whose counts overflow.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use picluster::partition::Extent;
use picluster::usedblocks::{self, Content};

use crate::support::run;
use crate::*;

/// CRC-32C (Castagnoli), bitwise: what ext4 checksums metadata with.
fn crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                c >> 1 ^ 0x82F6_3B78
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// Re-seal an ext4 superblock (at byte 1024 of `fs`) after an edit: the
/// kernel's `ext4_superblock_csum` is crc32c(~0, sb[..0x3FC]) without the
/// final inversion, stored at 0x3FC.
fn reseal_superblock(fs: &Path, off: u64) {
    let sb = read_at(fs, off + 1024, 1024);
    write_at(
        fs,
        off + 1024 + 0x3FC,
        &(!crc32c(&sb[..0x3FC])).to_le_bytes(),
    );
}

/// A 16 MiB ext4 (4 KiB blocks, 64bit, metadata_csum) whose s_blocks_count_hi
/// (0x150) is set so that blocks_count = 2^52 + 4096: times the block size
/// that wraps to exactly 16 MiB, the partition length.
fn ext4_with_huge_block_count(dir: &Path) -> PathBuf {
    let fs = dir.join("ext4.img");
    sparse(&fs, 16 * MIB);
    run(Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-b",
            "4096",
            "-O",
            "64bit,metadata_csum",
            "-L",
            "rootfs",
        ])
        .arg(&fs));
    let sb = read_at(&fs, 1024, 1024);
    assert_eq!(le32(&sb, 0x4), 4096, "s_blocks_count_lo of a 16 MiB ext4");
    assert_eq!(
        le32(&sb, 0x3FC),
        !crc32c(&sb[..0x3FC]),
        "the superblock checksum is computed as the kernel does"
    );
    write_at(&fs, 1024 + 0x150, &(1u32 << 20).to_le_bytes());
    reseal_superblock(&fs, 0);
    fs
}

#[test]
fn ext4_block_count_that_wraps_is_refused_not_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let fs = ext4_with_huge_block_count(dir.path());
    // Bare filesystem: probed as one.
    let used = within(60, "usedblocks::compute", {
        let fs = fs.clone();
        move || usedblocks::compute(&fs, 4096).unwrap()
    });
    match &used.parts[0].content {
        Content::Unknown { reason } => assert!(reason.contains("larger than"), "{reason}"),
        c => panic!("a filesystem of 2^52 blocks was read as {c:?}"),
    }
    assert_eq!(used.mapped_bytes(), 16 * MIB, "mapped whole");

    // In a disk, as the root partition: inspect reports it, flash maps it whole.
    let disk = dir.path().join("disk.img");
    dos_disk(&disk, 40 * MIB, "start=2048, size=32768, type=83\n");
    place(&fs, &disk, MIB);
    let root = Extent {
        start: MIB,
        len: 16 * MIB,
    };
    let file = File::open(&disk).unwrap();
    let err = within(60, "rootfs::inspect", move || {
        picluster::rootfs::inspect(&file, root).unwrap_err()
    });
    assert!(err.to_string().contains("larger than"), "{err}");

    let cache = dir.path().join("cache");
    let out = picluster_limited(&cache, &["inspect", disk.to_str().unwrap()]);
    let text = ended_cleanly(&out, "picluster inspect");
    assert!(text.contains("larger than"), "{text}");

    let card = dir.path().join("card.img");
    sparse(&card, 40 * MIB);
    flash_to_file(&cache, &disk, &card);
    assert_eq!(
        read_at(&card, MIB, 16 * MIB as usize),
        read_at(&disk, MIB, 16 * MIB as usize),
        "the partition was written whole"
    );
}

/// Found by the `usedblocks_ext4` fuzz target (tests/fuzz): ext4-view 1.0
/// reads `s_blocks_count_hi` even without the 64bit feature, so a stray high
/// word made it size its group table for 2^31 groups (tens of GiB) while
/// picluster's own reader, like the kernel, saw a 4096-block filesystem.
#[test]
fn ext4_high_block_count_without_64bit_is_refused_before_ext4_view() {
    let dir = tempfile::tempdir().unwrap();
    let fs = dir.path().join("ext4.img");
    sparse(&fs, 16 * MIB);
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-O", "^64bit,metadata_csum"])
        .arg(&fs));
    write_at(&fs, 1024 + 0x150, &0x4000u32.to_le_bytes());
    reseal_superblock(&fs, 0);
    let (disk, text) = inspect_as_root(dir.path(), &fs);
    assert!(text.contains("no 64bit feature"), "{text}");
    // picluster's own used-blocks reader reads it as the kernel does.
    let used = usedblocks::compute(&disk, 4096).unwrap();
    assert_eq!(used.parts[0].content, Content::Ext4);
}

/// Found by the `usedblocks_ext4` fuzz target (tests/fuzz): ext4-view 1.0
/// reads a symlink's target into a buffer of the inode's size while it
/// resolves a path, so a symlink claiming 4 GiB on the way to /etc/os-release
/// was a 4 GiB allocation. The size is patched into a real long symlink
/// (target > 59 bytes, so stored in a data block) made by `mkfs.ext4 -d`;
/// `debugfs -R imap` says where its inode is.
#[test]
fn ext4_symlink_with_a_huge_size_is_not_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("usr/lib")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let long = format!("/usr/lib/{}/../os-release", "d".repeat(80));
    std::os::unix::fs::symlink(&long, root.join("etc/os-release")).unwrap();
    let fs = dir.path().join("ext4.img");
    sparse(&fs, 16 * MIB);
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-O", "^metadata_csum", "-d"])
        .arg(&root)
        .arg(&fs));
    let imap = run(Command::new("debugfs")
        .args(["-R", "imap /etc/os-release"])
        .arg(&fs));
    // "Inode 13 is part of block group 0\n\tlocated at block 35, offset 0x0c00"
    let block: u64 = imap
        .split("located at block ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|b| b.trim().parse().ok())
        .unwrap_or_else(|| panic!("debugfs imap: {imap}"));
    let offset = u64::from_str_radix(imap.split("offset 0x").nth(1).unwrap().trim(), 16).unwrap();
    let inode = block * 4096 + offset;
    // i_size_lo, at 0x4 of struct ext4_inode (i_size_high stays 0).
    write_at(&fs, inode + 0x4, &0xFFFF_0000u32.to_le_bytes());
    let (_, text) = inspect_as_root(dir.path(), &fs);
    assert!(text.contains("a symlink of 4294901760 bytes"), "{text}");
}

/// `fs` as the root partition (p2-style, type 0x83) of a DOS disk, and what
/// `picluster inspect` says about that disk (it must end by itself).
fn inspect_as_root(dir: &Path, fs: &Path) -> (PathBuf, String) {
    let disk = dir.join("disk.img");
    dos_disk(&disk, 40 * MIB, "start=2048, size=32768, type=83\n");
    place(fs, &disk, MIB);
    let out = picluster_limited(&dir.join("cache"), &["inspect", disk.to_str().unwrap()]);
    (disk, ended_cleanly(&out, "picluster inspect"))
}
