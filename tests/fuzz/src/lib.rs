//! Shared by the fuzz targets: a disk image from a compact description, so
//! that a few KiB of fuzzer input can stand for a 40 MiB FAT32 volume (FAT32
//! needs at least 65,525 clusters) without libFuzzer mutating megabytes of
//! zeros.
//!
//! Format (all little-endian): `u32` image size in KiB (taken modulo
//! [`MAX_KIB`], plus one), then records `u32 offset, u16 length, bytes`, each
//! written at its offset (clipped to the image; the last may be short).
//! `make-seeds.sh` turns real `mkfs`/`sfdisk` output into this form.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// Images up to 64 MiB: room for a FAT32 volume and a small ext4.
pub const MAX_KIB: u32 = 64 << 10;

/// The image described by `data`, in an anonymous memory file, and its size.
pub fn disk(data: &[u8]) -> Option<(File, u64)> {
    let (head, mut rest) = data.split_at_checked(4)?;
    let size = u64::from(u32::from_le_bytes(head.try_into().ok()?) % MAX_KIB + 1) * 1024;
    let fd = rustix::fs::memfd_create("picluster-fuzz", rustix::fs::MemfdFlags::CLOEXEC).ok()?;
    let file = File::from(fd);
    file.set_len(size).ok()?;
    while rest.len() >= 6 {
        let off = u64::from(u32::from_le_bytes(rest[..4].try_into().ok()?));
        let len = usize::from(u16::from_le_bytes([rest[4], rest[5]]));
        let bytes = &rest[6..(6 + len).min(rest.len())];
        rest = &rest[(6 + len).min(rest.len())..];
        if off < size {
            let n = bytes.len().min((size - off) as usize);
            file.write_all_at(&bytes[..n], off).ok()?;
        }
    }
    Some((file, size))
}

/// Used blocks of the image described by `data`; whatever comes back must be
/// sorted, disjoint and within the image.
pub fn used_blocks(data: &[u8]) -> Option<(File, u64)> {
    let (file, size) = disk(data)?;
    let path = std::path::Path::new("fuzz.img");
    if let Ok(u) = picluster::usedblocks::compute_file(&file, path, size, 4096) {
        let mut end = 0;
        for r in &u.ranges {
            assert!(
                r.start >= end && r.end() <= size,
                "ranges sorted, within the image"
            );
            end = r.end();
        }
    }
    Some((file, size))
}
