//! FAT32 boot partitions whose cluster chains loop, leave the volume, or
//! whose BPB overflows fatfs's arithmetic.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use picluster::bootfs::BootFs;
use picluster::partition::Extent;

use crate::support::run;
use crate::*;

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
    // A local crafted base: no pin (the setup pins the served image).
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("sha256 = "))
        .map(|l| format!("{l}\n"))
        .collect();
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

/// Found by the `bootfs` fuzz target (tests/fuzz): a FAT32 size of
/// 0xFFFF_FE76 sectors makes fatfs 0.3.6 overflow `fats * sectors_per_fat`
/// (u32) while it validates the BPB, a panic in a debug build and a wrapped,
/// wrong layout in a release one.
#[test]
fn fat_size_that_overflows_fatfs_arithmetic_is_refused_before_fatfs_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let fat = dir.path().join("boot.vfat");
    fat32_volume(&fat, 1, 10);
    write_at(&fat, 0x24, &0xFFFF_FE76u32.to_le_bytes());
    let (disk, boot) = disk_with_boot(dir.path(), &fat);
    let err = open_boot_err(&disk, boot);
    assert!(err.contains("no consistent FAT layout"), "{err}");

    let cache = dir.path().join("cache");
    let out = picluster_limited(&cache, &["inspect", disk.to_str().unwrap()]);
    let text = ended_cleanly(&out, "picluster inspect");
    assert!(text.contains("no consistent FAT layout"), "{text}");
}
