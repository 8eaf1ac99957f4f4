//! Base-image checks against fixture images made with sfdisk, mkfs.vfat and mke2fs.

mod support;

use picluster::base::{self, BaseError};
use support::fixture;

#[test]
fn bookworm_arm64_images_pass_in_both_layouts() {
    for (layout, p1) in [("8mib", 16384u64), ("4mib", 8192)] {
        let img = fixture(&["--layout", layout]);
        let b = base::inspect(&img).unwrap();
        b.validate().unwrap();
        assert_eq!(b.boot.start, p1 * 512, "{layout}");
        assert_eq!(b.boot.len, 512 << 20);
        assert_eq!(b.root.start, b.boot.end());
        assert_eq!(b.table.disk_id, "6c586e13");
        assert_eq!(b.rootfs.codename(), "bookworm");
        assert_eq!(b.rootfs.arch, "arm64");
        assert_eq!(b.boot_label, "bootfs");
        assert!(b.cmdline.contains("root=PARTUUID=6c586e13-02"));
        assert!(b.config_txt.contains("[all]"));
        assert!(
            b.boot_files
                .iter()
                .any(|f| f.name == "overlays" && f.is_dir)
        );
        assert!(b.boot_free > 400 << 20, "free {}", b.boot_free);
    }
}

#[test]
fn trixie_is_refused_with_a_pointer_to_bookworm() {
    let img = fixture(&["--release", "trixie"]);
    let err = base::inspect(&img).unwrap().validate().unwrap_err();
    assert!(matches!(err, BaseError::Trixie { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("trixie") && msg.contains("raspios-bookworm-arm64-lite"),
        "{msg}"
    );
}

#[test]
fn wrong_architecture_is_refused() {
    let img = fixture(&["--arch", "amd64"]);
    let msg = base::inspect(&img)
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(msg.contains("amd64") && msg.contains("not arm64"), "{msg}");
}

#[test]
fn image_without_partition_table_is_refused() {
    let img = fixture(&["--no-table"]);
    let msg = base::inspect(&img).unwrap_err().to_string();
    assert!(msg.contains("no partition table"), "{msg}");
}

#[test]
fn non_image_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("notes.txt");
    std::fs::write(&f, vec![b'x'; 4096]).unwrap();
    let msg = base::inspect(&f).unwrap_err().to_string();
    assert!(
        msg.contains("notes.txt") && msg.contains("no partition table"),
        "{msg}"
    );
}
