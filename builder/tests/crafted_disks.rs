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

mod support;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use picluster::bmap::{Bmap, BmapError};
use picluster::bootfs::BootFs;
use picluster::partition::{self, Extent, TableError};
use picluster::usedblocks::{self, Content};
use sha2::{Digest, Sha256};
use support::run;

const MIB: u64 = 1 << 20;

// ---- helpers ---------------------------------------------------------------

fn sparse(path: &Path, len: u64) {
    File::create(path).unwrap().set_len(len).unwrap();
}

fn rw(path: &Path) -> File {
    File::options().read(true).write(true).open(path).unwrap()
}

fn read_at(path: &Path, off: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    File::open(path)
        .unwrap()
        .read_exact_at(&mut b, off)
        .unwrap();
    b
}

fn write_at(path: &Path, off: u64, bytes: &[u8]) {
    rw(path).write_all_at(bytes, off).unwrap();
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// Copy `from` into `to` at byte `off` (a filesystem made apart, placed in a disk).
fn place(from: &Path, to: &Path, off: u64) {
    write_at(to, off, &std::fs::read(from).unwrap());
}

/// A sparse disk of `len` bytes with the DOS table `script` (sfdisk syntax).
fn dos_disk(path: &Path, len: u64, script: &str) {
    sparse(path, len);
    sfdisk(path, &format!("label: dos\nlabel-id: 0x12345678\n{script}"));
}

fn sfdisk(path: &Path, script: &str) {
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
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
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
fn picluster_limited(cache: &Path, args: &[&str]) -> Output {
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
fn flash_to_file(cache: &Path, image: &Path, card: &Path) {
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
fn ended_cleanly(out: &Output, what: &str) -> String {
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

// ---- ext4 ------------------------------------------------------------------

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

// ---- GPT -------------------------------------------------------------------

/// Recompute a GPT header's entry-array CRC32 and its own CRC32 (over its 92
/// bytes with the CRC field zeroed).
fn reseal_gpt(disk: &Path, header_lba: u64) {
    let mut h = read_at(disk, header_lba * 512, 92);
    let (lba, count, size) = (le64(&h, 72), le32(&h, 80), le32(&h, 84));
    let len = u64::from(count) * u64::from(size);
    let disk_len = std::fs::metadata(disk).unwrap().len();
    // Headers patched to point nowhere keep their old array CRC.
    if len <= 1 << 20 && lba.checked_mul(512).is_some_and(|o| o + len <= disk_len) {
        let entries = read_at(disk, lba * 512, len as usize);
        h[88..92].copy_from_slice(&crc32fast::hash(&entries).to_le_bytes());
    }
    h[16..20].fill(0);
    let crc = crc32fast::hash(&h);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    write_at(disk, header_lba * 512, &h);
}

/// An 8 MiB GPT disk made by sfdisk with two partitions.
fn gpt_disk(path: &Path) {
    sparse(path, 8 * MIB);
    sfdisk(
        path,
        "label: gpt\nstart=2048, size=4096, name=one\nstart=6144, size=4096, name=two\n",
    );
    assert!(partition::read_table(&File::open(path).unwrap(), path, 8 * MIB).is_ok());
}

/// Rewrite both GPT headers of `disk` to 256-byte entries (legal per UEFI):
/// the same 16 KiB arrays, now 64 entries of 256 bytes, CRCs made right.
fn gpt_entries_256(disk: &Path) {
    let last = std::fs::metadata(disk).unwrap().len() / 512 - 1;
    for header in [1, last] {
        let h = read_at(disk, header * 512, 92);
        let lba = le64(&h, 72);
        assert_eq!((le32(&h, 80), le32(&h, 84)), (128, 128));
        let old = read_at(disk, lba * 512, 128 * 128);
        let mut new = vec![0u8; 64 * 256];
        for i in 0..64 {
            new[i * 256..i * 256 + 128].copy_from_slice(&old[i * 128..i * 128 + 128]);
        }
        write_at(disk, lba * 512, &new);
        write_at(disk, header * 512 + 80, &64u32.to_le_bytes());
        write_at(disk, header * 512 + 84, &256u32.to_le_bytes());
        reseal_gpt(disk, header);
    }
}

#[test]
fn gpt_with_256_byte_entries_is_an_error_and_such_a_card_can_be_flashed() {
    let dir = tempfile::tempdir().unwrap();
    let card = dir.path().join("card.img");
    gpt_disk(&card);
    gpt_entries_256(&card);

    let f = File::open(&card).unwrap();
    let c = card.clone();
    let err = within(30, "read_table", move || {
        partition::read_table(&f, &c, 8 * MIB).unwrap_err()
    });
    assert!(matches!(err, TableError::Gpt { .. }), "{err}");
    assert!(err.to_string().contains("256 bytes"), "{err}");

    let cache = dir.path().join("cache");
    let out = picluster_limited(&cache, &["inspect", card.to_str().unwrap()]);
    let text = ended_cleanly(&out, "picluster inspect");
    assert!(
        !out.status.success() && text.contains("256 bytes"),
        "{text}"
    );

    // The card's old table is read before flashing: it must not stop the flash.
    let img = dir.path().join("dos.img");
    dos_disk(&img, 4 * MIB, "start=2048, size=2048, type=83\n");
    write_at(&img, MIB, b"payload");
    flash_to_file(&cache, &img, &card);
    assert_eq!(read_at(&card, 510, 2), [0x55, 0xAA]);
    assert_eq!(
        read_at(&card, 0x1BE + 4, 1),
        [0x83],
        "the DOS table was written"
    );
    assert_eq!(read_at(&card, MIB, 7), b"payload");
}

#[test]
fn gpt_fields_that_overflow_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    // (what, patch to the primary header or entry 1, expected words)
    type Patch = fn(&Path);
    let cases: [(&str, Patch, &str); 5] = [
        (
            "entry whose last LBA is before its first",
            |d| {
                write_at(d, 1024 + 32, &(1u64 << 62).to_le_bytes());
                write_at(d, 1024 + 40, &1u64.to_le_bytes());
            },
            "partition 1",
        ),
        (
            "entry whose sectors overflow 64-bit bytes",
            |d| {
                write_at(d, 1024 + 32, &(1u64 << 56).to_le_bytes());
                write_at(d, 1024 + 40, &u64::MAX.to_le_bytes());
            },
            "partition 1",
        ),
        (
            "4 billion entries",
            |d| write_at(d, 512 + 80, &u32::MAX.to_le_bytes()),
            "entries",
        ),
        (
            "entry array past the disk",
            |d| write_at(d, 512 + 72, &(u64::MAX / 256).to_le_bytes()),
            "not on the",
        ),
        (
            "usable sectors past the disk",
            |d| write_at(d, 512 + 48, &u64::MAX.to_le_bytes()),
            "usable sectors",
        ),
    ];
    for (what, patch, words) in cases {
        let disk = dir.path().join("gpt.img");
        gpt_disk(&disk);
        patch(&disk);
        // Only the primary header is resealed for header patches; entry
        // patches need the array CRC in both headers.
        reseal_gpt(&disk, 1);
        let d = disk.clone();
        let err = within(30, what, move || {
            partition::read_table(&File::open(&d).unwrap(), &d, 8 * MIB)
                .map(|t| format!("{:?}", t.partitions))
        });
        let err = match err {
            Err(e) => e.to_string(),
            Ok(parts) => panic!("{what}: read as {parts}"),
        };
        assert!(err.contains(words), "{what}: {err}");
    }
}

// ---- FAT -------------------------------------------------------------------

/// The FAT32 layout fields of a volume at byte `off` of `img`:
/// (FAT offset, FAT size in bytes, FAT count, data offset, cluster bytes, root cluster).
fn fat32_layout(img: &Path, off: u64) -> (u64, u64, u64, u64, u64, u32) {
    let b = read_at(img, off, 512);
    let bps = u64::from(u16::from_le_bytes([b[11], b[12]]));
    let spc = u64::from(b[13]);
    let reserved = u64::from(u16::from_le_bytes([b[14], b[15]]));
    let fats = u64::from(b[16]);
    let fat_sectors = u64::from(le32(&b, 0x24));
    let fat = off + reserved * bps;
    let data = fat + fats * fat_sectors * bps;
    (
        fat,
        fat_sectors * bps,
        fats,
        data,
        spc * bps,
        le32(&b, 0x2C),
    )
}

/// Set FAT entry `cluster` to `value` in every FAT copy.
fn set_fat(img: &Path, off: u64, cluster: u32, value: u32) {
    let (fat, fat_bytes, fats, ..) = fat32_layout(img, off);
    for k in 0..fats {
        write_at(
            img,
            fat + k * fat_bytes + u64::from(cluster) * 4,
            &value.to_le_bytes(),
        );
    }
}

/// A 40 MiB FAT32 volume (512-byte clusters, so 16 entries fill the root's
/// first cluster) holding `files` short-named files of `size` bytes.
fn fat32_volume(path: &Path, files: usize, size: usize) {
    sparse(path, 40 * MIB);
    run(Command::new("mkfs.vfat")
        .args(["-F", "32", "-s", "1", "-n", "BOOTFS"])
        .arg(path));
    let src = path.with_extension("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut args: Vec<PathBuf> = Vec::new();
    for i in 0..files {
        let f = src.join(format!("F{i:02}.TXT"));
        std::fs::write(&f, vec![b'a' + (i % 26) as u8; size]).unwrap();
        args.push(f);
    }
    if !args.is_empty() {
        run(Command::new("mcopy")
            .arg("-i")
            .arg(path)
            .args(&args)
            .arg("::/"));
    }
}

/// A DOS disk whose p1 (type 0x0c at 1 MiB) is the given FAT volume.
fn disk_with_boot(dir: &Path, fat: &Path) -> (PathBuf, Extent) {
    let disk = dir.join("disk.img");
    dos_disk(&disk, 48 * MIB, "start=2048, size=81920, type=c\n");
    place(fat, &disk, MIB);
    (
        disk,
        Extent {
            start: MIB,
            len: 40 * MIB,
        },
    )
}

fn open_boot_err(disk: &Path, boot: Extent) -> String {
    let d = disk.to_path_buf();
    within(30, "BootFs::open and list", move || {
        let f = File::open(&d).unwrap();
        let r = BootFs::open(&f, boot, 0).and_then(|fs| fs.list().map(|l| l.len()));
        match r {
            Err(e) => e.to_string(),
            Ok(n) => panic!("a corrupt boot partition was read ({n} root entries)"),
        }
    })
}

#[test]
fn fat_root_directory_linked_to_itself_is_refused_not_walked_forever() {
    let dir = tempfile::tempdir().unwrap();
    let fat = dir.path().join("boot.vfat");
    fat32_volume(&fat, 20, 10); // 20 entries + label: the root spans two clusters
    let (.., root) = fat32_layout(&fat, 0);
    set_fat(&fat, 0, root, root);
    let (disk, boot) = disk_with_boot(dir.path(), &fat);
    let err = open_boot_err(&disk, boot);
    assert!(
        err.contains("corrupt") && err.contains("root directory") && err.contains("comes back"),
        "{err}"
    );

    let cache = dir.path().join("cache");
    let out = picluster_limited(&cache, &["inspect", disk.to_str().unwrap()]);
    let text = ended_cleanly(&out, "picluster inspect");
    assert!(text.contains("comes back"), "{text}");
}

#[test]
fn fat_file_chains_that_loop_or_leave_the_volume_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    type Patch = fn(&Path, u32, u64);
    let cases: [(&str, Patch, &str); 4] = [
        (
            "file chain that loops back to its first cluster",
            |f, first, _| set_fat(f, 0, first + 2, first),
            "comes back",
        ),
        (
            "file chain pointing past the FAT",
            |f, first, _| set_fat(f, 0, first, 0x0FFF_FFF0),
            "outside",
        ),
        (
            "file whose first cluster is 1",
            |f, _, entry| {
                write_at(f, entry + 20, &0u16.to_le_bytes());
                write_at(f, entry + 26, &1u16.to_le_bytes());
            },
            "outside",
        ),
        (
            "file chain that runs into a free cluster",
            |f, first, _| set_fat(f, 0, first + 1, 0),
            "free cluster",
        ),
    ];
    for (what, patch, words) in cases {
        let fat = dir.path().join("boot.vfat");
        fat32_volume(&fat, 1, 1500); // F00.TXT: 3 clusters
        let (_, _, _, data, cluster, root) = fat32_layout(&fat, 0);
        // F00.TXT is the root's second entry (after the volume label).
        let entry = data + u64::from(root - 2) * cluster + 32;
        assert_eq!(read_at(&fat, entry, 11), b"F00     TXT", "{what}");
        let e = read_at(&fat, entry, 32);
        let first = u32::from(u16::from_le_bytes([e[26], e[27]]));
        patch(&fat, first, entry);
        let (disk, boot) = disk_with_boot(dir.path(), &fat);
        let err = open_boot_err(&disk, boot);
        assert!(err.contains("F00") && err.contains(words), "{what}: {err}");
    }
}

#[test]
fn build_refuses_a_base_image_whose_boot_root_directory_loops() {
    let s = support::cluster::setup(&[]);
    let base = s.path("crafted.img");
    std::fs::copy(&s.base_img, &base).unwrap();
    // p1 of the fixture is at sector 16384 (the 8 MiB layout); fill its root
    // directory's first cluster, then link that cluster to itself.
    let boot_off = 16384 * 512;
    let part = s.path("boot.vfat");
    support::extract(&base, boot_off, 512 * MIB, &part);
    let src = s.path("many");
    std::fs::create_dir_all(&src).unwrap();
    let files: Vec<PathBuf> = (0..70)
        .map(|i| {
            let f = src.join(format!("X{i:02}.TXT"));
            std::fs::write(&f, b"x").unwrap();
            f
        })
        .collect();
    run(Command::new("mcopy")
        .arg("-i")
        .arg(&part)
        .args(&files)
        .arg("::/"));
    place(&part, &base, boot_off);
    let (.., root) = fat32_layout(&base, boot_off);
    set_fat(&base, boot_off, root, root);
    let text = std::fs::read_to_string(s.config()).unwrap();
    let url = text
        .lines()
        .find(|l| l.trim_start().starts_with("url = "))
        .unwrap()
        .to_string();
    std::fs::write(
        s.config(),
        text.replace(&url, &format!("url = \"{}\"", base.display())),
    )
    .unwrap();
    let mut args: Vec<String> = vec!["build".into(), "-c".into()];
    args.push(s.config().display().to_string());
    args.push("--out".into());
    args.push(s.path("out").display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"ulimit -v 4194304; exec timeout -s KILL 120 "$@""#)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_picluster"))
        .args(&args)
        .env("PICLUSTER_CACHE_DIR", s.cache())
        .env("PICLUSTER_AGENT", support::agent_binary())
        .env_remove("SOURCE_DATE_EPOCH")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = ended_cleanly(&out, "picluster build");
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("corrupt") && text.contains("comes back"),
        "{text}"
    );
    let left: Vec<_> = std::fs::read_dir(s.path("out"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !left.iter().any(|n| n.to_string_lossy().ends_with(".img")),
        "no image left behind: {left:?}"
    );
}

// ---- bmap ------------------------------------------------------------------

/// A bmap file with the given header numbers and ranges, its file checksum
/// filled in as bmaptool does (SHA-256 of the text with the value zeroed).
fn bmap_text(size: u64, bs: u64, blocks: u64, mapped: u64, ranges: &[&str]) -> String {
    let zeros = "0".repeat(64);
    let mut x = format!(
        "<?xml version=\"1.0\" ?>\n<bmap version=\"2.0\">\n<ImageSize> {size} </ImageSize>\n\
         <BlockSize> {bs} </BlockSize>\n<BlocksCount> {blocks} </BlocksCount>\n\
         <MappedBlocksCount> {mapped} </MappedBlocksCount>\n<ChecksumType> sha256 </ChecksumType>\n\
         <BmapFileChecksum> {zeros} </BmapFileChecksum>\n<BlockMap>\n"
    );
    for r in ranges {
        x.push_str(&format!("<Range{r}</Range>\n"));
    }
    x.push_str("</BlockMap>\n</bmap>\n");
    let sum: String = Sha256::digest(x.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    x.replacen(&zeros, &sum, 1)
}

#[test]
fn hostile_bmaps_are_errors_not_panics() {
    let sha = format!(" chksum=\"{}\">", "ab".repeat(32));
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "image of 2^64-1 bytes",
            bmap_text(
                u64::MAX,
                4096,
                1 << 52,
                1,
                &[&format!("{sha} 4503599627370495 ")],
            ),
            "blocks of",
        ),
        (
            "range past the image",
            bmap_text(8192, 4096, 2, 3, &[&format!("{sha} 0-2 ")]),
            "outside",
        ),
        (
            "overlapping ranges",
            bmap_text(
                16384,
                4096,
                4,
                4,
                &[&format!("{sha} 0-2 "), &format!("{sha} 2-2 ")],
            ),
            "overlaps",
        ),
        (
            "short checksum",
            bmap_text(8192, 4096, 2, 1, &[" chksum=\"abcd\"> 0 "]),
            "SHA-256",
        ),
        (
            "huge mapped count",
            bmap_text(8192, 4096, 2, u64::MAX, &[&format!("{sha} 0 ")]),
            "MappedBlocksCount",
        ),
        (
            "range end past u64",
            bmap_text(
                8192,
                4096,
                2,
                1,
                &[&format!("{sha} 0-99999999999999999999999 ")],
            ),
            "FIRST-LAST",
        ),
    ];
    for (what, xml, words) in cases {
        let r = std::panic::catch_unwind(|| {
            Bmap::parse(&xml, Path::new("x.bmap")).map(|b| {
                // Whatever parses must be usable without overflow.
                (b.mapped_bytes(), b.extents().count(), b.to_xml().len())
            })
        });
        match r {
            Ok(Err(e @ BmapError::Format { .. })) => {
                assert!(e.to_string().contains(words), "{what}: {e}")
            }
            Ok(other) => panic!("{what}: {other:?}"),
            Err(_) => panic!("{what}: the parser panicked"),
        }
    }

    // A bmap file far larger than any bmap is refused before it is read.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bmap");
    sparse(&big, 300 * MIB);
    let err = within(30, "Bmap::read", move || Bmap::read(&big).unwrap_err());
    assert!(err.to_string().contains("larger than"), "{err}");
}
