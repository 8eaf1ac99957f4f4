//! Used-block computation against filesystems made by mke2fs and mkfs.vfat,
//! checked two ways: the counts agree with dumpe2fs / fsck.fat, and copying
//! only the mapped ranges onto a disk full of garbage gives a filesystem that
//! fsck accepts and whose files read back unchanged.

mod support;

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use picluster::partition::Extent;
use picluster::usedblocks::{self, Content, DEFAULT_BLOCK_SIZE, UsedBlocks};
use support::{extract, fixture, run, sha256_file};

/// A directory tree with files of known sizes and content.
fn content(dir: &Path) -> Vec<(String, PathBuf)> {
    std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    let mut files = Vec::new();
    let mut seed = 0x1234_5678u64;
    for (name, len) in [
        ("small.txt", 13usize),
        ("one-block.bin", 4096),
        ("big.bin", 3 << 20),
        ("sub/odd.bin", 777_777),
        ("sub/deeper/mid.bin", 200_000),
    ] {
        let mut data = vec![0u8; len];
        for b in &mut data {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (seed >> 33) as u8;
        }
        let p = dir.join(name);
        std::fs::write(&p, &data).unwrap();
        files.push((name.to_string(), p));
    }
    files
}

/// A file of `size` bytes of 0xA5: what a used card looks like to a flash.
fn garbage(path: &Path, size: u64) {
    let mut f = File::create(path).unwrap();
    let chunk = vec![0xA5u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
}

/// Copy only `ranges` of `image` onto a garbage-filled copy.
fn copy_mapped(image: &Path, ranges: &[Extent], to: &Path) {
    let size = std::fs::metadata(image).unwrap().len();
    garbage(to, size);
    let src = File::open(image).unwrap();
    let dst = std::fs::OpenOptions::new().write(true).open(to).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    for r in ranges {
        let mut pos = r.start;
        while pos < r.end() {
            let n = (r.end() - pos).min(buf.len() as u64) as usize;
            src.read_exact_at(&mut buf[..n], pos).unwrap();
            dst.write_all_at(&buf[..n], pos).unwrap();
            pos += n as u64;
        }
    }
}

fn dumpe2fs_used_blocks(fs: &Path) -> (u64, u64) {
    let out = run(Command::new("dumpe2fs").arg("-h").arg(fs));
    let field = |name: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("dumpe2fs prints no {name}: {out}"))
            .trim()
            .parse()
            .unwrap()
    };
    let count = field("Block count:");
    (count - field("Free blocks:"), field("Block size:"))
}

fn check_ext(name: &str, mke2fs: &[&str], size_mib: u64) {
    let dir = tempfile::tempdir().unwrap();
    let files = content(&dir.path().join("root"));
    let img = dir.path().join("fs.img");
    run(Command::new("truncate")
        .arg(format!("-s{size_mib}M"))
        .arg(&img));
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-E", "root_owner=0:0"])
        .args(mke2fs)
        .arg("-d")
        .arg(dir.path().join("root"))
        .arg(&img));
    let used = usedblocks::compute(&img, DEFAULT_BLOCK_SIZE).unwrap();
    assert_eq!(used.parts.len(), 1, "{name}");
    assert_eq!(used.parts[0].content, Content::Ext4, "{name}");
    let (blocks, bs) = dumpe2fs_used_blocks(&img);
    assert_eq!(
        used.parts[0].used_bytes,
        blocks * bs,
        "{name}: used bytes vs dumpe2fs (block count - free blocks) x {bs}"
    );
    let size = size_mib << 20;
    assert!(
        used.mapped_bytes() < size / 2,
        "{name}: mapped {}",
        used.mapped_bytes()
    );

    let copy = dir.path().join("copy.img");
    copy_mapped(&img, &used.ranges, &copy);
    run(Command::new("e2fsck").arg("-fn").arg(&copy));
    for (rel, orig) in &files {
        let out = dir.path().join("out");
        run(Command::new("debugfs")
            .arg("-R")
            .arg(format!("dump /{rel} {}", out.display()))
            .arg(&copy));
        assert_eq!(sha256_file(&out), sha256_file(orig), "{name}: {rel}");
    }
}

#[test]
fn ext4_default_features_4k_blocks_several_groups() {
    // 64-bit descriptors, flex_bg, metadata_csum, BLOCK_UNINIT groups.
    check_ext("ext4 4k", &["-t", "ext4", "-b", "4096"], 600);
}

#[test]
fn ext4_1k_blocks() {
    // first_data_block = 1, 8 MiB groups.
    check_ext("ext4 1k", &["-t", "ext4", "-b", "1024"], 96);
}

#[test]
fn ext4_32_byte_descriptors_without_flex_bg() {
    check_ext(
        "ext4 ^64bit ^flex_bg",
        &["-t", "ext4", "-b", "4096", "-O", "^64bit,^flex_bg"],
        600,
    );
}

#[test]
fn ext4_meta_bg_and_sparse_super2() {
    check_ext(
        "ext4 meta_bg",
        &["-t", "ext4", "-b", "1024", "-O", "meta_bg,^resize_inode"],
        300,
    );
    check_ext(
        "ext4 sparse_super2",
        &["-t", "ext4", "-b", "4096", "-O", "sparse_super2"],
        600,
    );
}

#[test]
fn ext4_bigalloc_and_ext2() {
    check_ext(
        "ext4 bigalloc",
        &["-t", "ext4", "-b", "4096", "-O", "bigalloc", "-C", "65536"],
        600,
    );
    check_ext("ext2", &["-t", "ext2", "-b", "4096"], 300);
}

fn check_fat(bits: u8, size_mib: u64, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let files = content(&dir.path().join("root"));
    let img = dir.path().join("fat.img");
    run(Command::new("truncate")
        .arg(format!("-s{size_mib}M"))
        .arg(&img));
    run(Command::new("mkfs.vfat")
        .arg("-F")
        .arg(bits.to_string())
        .args(extra)
        .arg(&img));
    let mt = |cmd: &str| {
        let mut c = Command::new(cmd);
        c.env("MTOOLS_SKIP_CHECK", "1").arg("-i").arg(&img);
        c
    };
    run(mt("mmd").args(["::/sub", "::/sub/deeper"]));
    for (rel, p) in &files {
        run(mt("mcopy").arg(p).arg(format!("::/{rel}")));
    }
    // Fragment the free space: delete a file in the middle.
    run(mt("mdel").arg("::/one-block.bin"));

    let used = usedblocks::compute(&img, DEFAULT_BLOCK_SIZE).unwrap();
    assert_eq!(used.parts[0].content, Content::Fat { bits }, "FAT{bits}");

    // fsck.fat -v ends with "N files, USED/TOTAL clusters".
    let out = run(Command::new("fsck.fat").arg("-n").arg("-v").arg(&img));
    let (u, total) = out
        .lines()
        .rev()
        .find_map(|l| {
            l.split(", ")
                .nth(1)?
                .strip_suffix(" clusters")?
                .split_once('/')
        })
        .unwrap_or_else(|| panic!("no cluster count in fsck.fat output: {out}"));
    let (u, total): (u64, u64) = (u.parse().unwrap(), total.parse().unwrap());
    let cluster = cluster_bytes(&img);
    let clusters = data_cluster_count(&used, &img);
    assert_eq!(clusters, u, "FAT{bits}: used clusters vs fsck.fat");
    // mdir's free-space view agrees too.
    let mdir = run(mt("mdir").arg("::/"));
    let free: u64 = mdir
        .lines()
        .find(|l| l.contains("bytes free"))
        .unwrap()
        .replace("bytes free", "")
        .split_whitespace()
        .collect::<String>()
        .parse()
        .unwrap();
    assert_eq!(free, (total - u) * cluster, "FAT{bits}: mdir free bytes");

    let copy = dir.path().join("copy.img");
    copy_mapped(&img, &used.ranges, &copy);
    run(Command::new("fsck.fat").arg("-n").arg(&copy));
    for (rel, orig) in files.iter().filter(|(r, _)| r != "one-block.bin") {
        let out = dir.path().join("out");
        let _ = std::fs::remove_file(&out);
        run(Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&copy)
            .arg(format!("::/{rel}"))
            .arg(&out));
        assert_eq!(sha256_file(&out), sha256_file(orig), "FAT{bits}: {rel}");
    }
}

/// Bytes per cluster, from the boot sector.
fn cluster_bytes(img: &Path) -> u64 {
    let mut b = [0u8; 14];
    File::open(img).unwrap().read_exact_at(&mut b, 0).unwrap();
    u64::from(u16::from_le_bytes([b[11], b[12]])) * u64::from(b[13])
}

/// Data clusters in use: the partition's used bytes less its metadata area,
/// per cluster.
fn data_cluster_count(used: &UsedBlocks, img: &Path) -> u64 {
    let mut b = [0u8; 64];
    File::open(img).unwrap().read_exact_at(&mut b, 0).unwrap();
    let le16 = |o: usize| u64::from(u16::from_le_bytes([b[o], b[o + 1]]));
    let le32 = |o: usize| u64::from(u32::from_le_bytes(b[o..o + 4].try_into().unwrap()));
    let bps = le16(11);
    let fat = if le16(0x16) != 0 {
        le16(0x16)
    } else {
        le32(0x24)
    };
    let meta = (le16(14) + u64::from(b[16]) * fat + (le16(17) * 32).div_ceil(bps)) * bps;
    (used.parts[0].used_bytes - meta) / cluster_bytes(img)
}

#[test]
fn fat12_fat16_fat32_used_clusters() {
    check_fat(12, 8, &[]);
    check_fat(16, 64, &["-s", "4"]);
    // FAT32 needs >= 65,525 clusters: 512 MiB with 4-sector clusters, as shipped.
    check_fat(32, 512, &["-s", "4"]);
}

#[test]
fn raspberry_pi_os_shaped_image() {
    let img = fixture(&[]);
    let used = usedblocks::compute(&img, DEFAULT_BLOCK_SIZE).unwrap();
    let size = std::fs::metadata(&img).unwrap().len();
    assert_eq!(used.image_size, size);
    assert_eq!(used.parts.len(), 2);
    assert_eq!(used.parts[0].content, Content::Fat { bits: 32 });
    assert_eq!(used.parts[1].content, Content::Ext4);
    // The table area up to p1 (8 MiB) is mapped, then p1's FAT metadata.
    assert_eq!(used.ranges[0].start, 0);
    assert!(used.ranges[0].len > used.parts[0].extent.start);
    for r in &used.ranges {
        assert_eq!(r.start % DEFAULT_BLOCK_SIZE, 0);
        assert!(r.end() % DEFAULT_BLOCK_SIZE == 0 || r.end() == size);
    }
    for w in used.ranges.windows(2) {
        assert!(w[0].end() < w[1].start, "ranges must be merged: {w:?}");
    }
    assert!(
        used.mapped_bytes() < size / 3,
        "mapped {} of {size}",
        used.mapped_bytes()
    );

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.img");
    let p2 = used.parts[1].extent;
    extract(&img, p2.start, p2.len, &root);
    let (blocks, bs) = dumpe2fs_used_blocks(&root);
    assert_eq!(used.parts[1].used_bytes, blocks * bs);

    // Only the mapped ranges onto garbage: both filesystems check clean and
    // the table is intact.
    let copy = dir.path().join("copy.img");
    copy_mapped(&img, &used.ranges, &copy);
    let table = run(Command::new("sfdisk").arg("-d").arg(&copy));
    assert_eq!(
        table,
        run(Command::new("sfdisk").arg("-d").arg(&img))
            .replace(&*img.to_string_lossy(), &copy.to_string_lossy())
    );
    let p1 = used.parts[0].extent;
    let (boot, rootc) = (dir.path().join("p1"), dir.path().join("p2"));
    extract(&copy, p1.start, p1.len, &boot);
    extract(&copy, p2.start, p2.len, &rootc);
    run(Command::new("fsck.vfat").arg("-n").arg(&boot));
    run(Command::new("e2fsck").arg("-fn").arg(&rootc));
    let cmdline = run(Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(&boot)
        .arg("::/cmdline.txt"));
    assert!(cmdline.contains("root=PARTUUID=6c586e13-02"), "{cmdline}");
}

#[test]
fn unknown_content_is_mapped_whole() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("x.img");
    run(Command::new("truncate").arg("-s16M").arg(&img));
    let mut sf = Command::new("sfdisk");
    sf.arg("--quiet")
        .arg(&img)
        .stdin(std::process::Stdio::piped());
    let mut child = sf.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\nstart=2048, size=8192, type=82\nstart=10240, type=83\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let used = usedblocks::compute(&img, DEFAULT_BLOCK_SIZE).unwrap();
    assert!(matches!(used.parts[0].content, Content::Unknown { .. }));
    assert_eq!(used.parts[0].used_bytes, 8192 * 512);
    // Table area + p1 + p2 (all unknown) = the whole image.
    assert_eq!(
        used.ranges,
        vec![Extent {
            start: 0,
            len: 16 << 20
        }]
    );
}
