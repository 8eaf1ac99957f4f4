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

/// Trixie is accepted, and seen for what its first boot is: cloud-init,
/// seeded from the boot partition (pi-gen stage2/04-cloud-init), the root
/// grown by the initramfs (`resize`, no init=firstboot).
#[test]
fn trixie_is_accepted_and_its_first_boot_is_cloud_init() {
    let img = fixture(&["--release", "trixie"]);
    let b = base::inspect(&img).unwrap();
    b.validate().unwrap();
    assert_eq!(b.rootfs.codename(), "trixie");
    assert!(b.rootfs.cloud_init);
    assert_eq!(b.first_boot(), picluster::release::FirstBoot::CloudInit);
    assert_eq!(b.seed_files(), ["meta-data", "network-config", "user-data"]);
    let bookworm = base::inspect(&fixture(&[])).unwrap();
    assert!(!bookworm.rootfs.cloud_init && bookworm.seed_files().is_empty());
    assert_eq!(
        bookworm.first_boot(),
        picluster::release::FirstBoot::SysMods
    );
}

#[test]
fn an_unknown_release_is_refused_with_the_known_ones() {
    let img = fixture(&["--release", "sid"]);
    let err = base::inspect(&img).unwrap().validate().unwrap_err();
    assert!(matches!(err, BaseError::Release { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("not Debian bookworm or trixie") && msg.contains("raspios-trixie-arm64-lite"),
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
