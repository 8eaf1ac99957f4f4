//! GPT headers with legal-but-unsupported entry sizes and overflowing fields.

use std::fs::File;
use std::path::Path;

use picluster::partition::{self, TableError};

use crate::*;

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
    // The old backup GPT (last sector) is wiped too, although the table it
    // belongs to could not be read: else tools would find and "repair" it.
    let size = std::fs::metadata(&card).unwrap().len();
    assert_ne!(read_at(&card, size - 512, 8), b"EFI PART");
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
