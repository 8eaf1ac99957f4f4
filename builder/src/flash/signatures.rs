//! What a disk holds before it is overwritten: filesystem and volume
//! signatures on the whole disk and in each partition of its old table.
//! Shown on the confirmation screen; disks carrying data that belongs to a
//! volume manager or an encrypted container (LVM, MD RAID, LUKS, ZFS) are
//! refused unless `--force`, even with `--yes`: they are rarely a card.
//!
//! The offsets are the on-disk formats' own (as util-linux's libblkid probes
//! them): each probe reads a few bytes, so a hostile disk costs nothing.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::partition::{Extent, Table};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Luks,
    LvmPv,
    MdRaid,
    Zfs,
    Btrfs,
    Ext,
    Fat,
}

impl Kind {
    /// Signatures of data that is almost never on a card: refused without `--force`.
    pub fn guarded(self) -> bool {
        matches!(self, Kind::Luks | Kind::LvmPv | Kind::MdRaid | Kind::Zfs)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Luks => "LUKS encrypted volume",
            Kind::LvmPv => "LVM physical volume",
            Kind::MdRaid => "Linux RAID member",
            Kind::Zfs => "ZFS pool member",
            Kind::Btrfs => "btrfs",
            Kind::Ext => "ext2/3/4",
            Kind::Fat => "FAT",
        }
    }
}

/// One signature found, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// `disk` or `partition N`.
    pub place: String,
    pub kind: Kind,
    pub label: Option<String>,
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.place, self.kind.name())?;
        if let Some(l) = &self.label {
            write!(f, " \"{l}\"")?;
        }
        Ok(())
    }
}

/// Every signature on the disk (`size` bytes) and in its old table's partitions.
pub fn scan(file: &File, size: u64, table: Option<&Table>) -> Vec<Found> {
    let mut found: Vec<Found> = probe(
        file,
        Extent {
            start: 0,
            len: size,
        },
    )
    .into_iter()
    .map(|(kind, label)| Found {
        place: "disk".into(),
        kind,
        label,
    })
    .collect();
    for p in table.map(|t| t.partitions.as_slice()).unwrap_or_default() {
        // A table entry may point anywhere: only what lies on the disk.
        let end = p.extent.end().min(size);
        if p.extent.start >= end {
            continue;
        }
        let region = Extent {
            start: p.extent.start,
            len: end - p.extent.start,
        };
        found.extend(probe(file, region).into_iter().map(|(kind, label)| Found {
            place: format!("partition {}", p.number),
            kind,
            label,
        }));
    }
    found
}

/// `n` bytes at `off` within `r`, or `None` past its end or on a read error.
fn read(file: &File, r: Extent, off: u64, n: usize) -> Option<Vec<u8>> {
    if off.checked_add(n as u64)? > r.len {
        return None;
    }
    let mut b = vec![0u8; n];
    file.read_exact_at(&mut b, r.start + off).ok()?;
    Some(b)
}

fn text(b: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(b);
    let s = s.trim_end_matches(['\0', ' ']).trim();
    (!s.is_empty()).then(|| s.to_string())
}

fn probe(file: &File, r: Extent) -> Vec<(Kind, Option<String>)> {
    let at = |off: u64, n: usize| read(file, r, off, n);
    let mut out = Vec::new();
    // LUKS1 and LUKS2: magic "LUKS\xba\xbe" at 0 (cryptsetup's LUKS1 spec and
    // LUKS2 on-disk format); LUKS2 keeps a label at byte 24.
    if let Some(h) = at(0, 72)
        && h[..6] == *b"LUKS\xba\xbe"
    {
        let v2 = h[6..8] == [0, 2];
        out.push((Kind::Luks, if v2 { text(&h[24..72]) } else { None }));
    }
    // LVM2: "LABELONE" at the start of one of the first four sectors, type
    // "LVM2 001" at byte 24 of it (lvm2 lib/label/label.c, LABEL_SCAN_SECTORS).
    if (0..4).any(|s| {
        at(s * 512, 32).is_some_and(|b| b[..8] == *b"LABELONE" && b[24..32] == *b"LVM2 001")
    }) {
        out.push((Kind::LvmPv, None));
    }
    // MD RAID (mdadm md_p.h / md_u.h): magic 0xa92b4efc, little-endian; v1.1
    // at 0, v1.2 at 4 KiB, v1.0 at 8 KiB before the end (4 KiB aligned),
    // v0.90 in the last 64 KiB-aligned 64 KiB.
    let md = 0xa92b_4efcu32.to_le_bytes();
    let mut md_at = vec![0, 4096];
    if r.len >= 12 << 10 {
        md_at.push((r.len - 8192) & !4095);
    }
    if r.len >= 128 << 10 {
        md_at.push((r.len & !0xffff) - 0x10000);
    }
    if md_at.into_iter().any(|o| at(o, 4).is_some_and(|b| b == md)) {
        out.push((Kind::MdRaid, None));
    }
    // ZFS: uberblocks (magic 0x00bab10c, in the writer's byte order) in the
    // ring at 128 KiB of the vdev labels at 0 and 256 KiB, 1 KiB apart.
    let zfs = 0x00ba_b10cu64;
    let is_zfs = [0u64, 256 << 10].iter().any(|label| {
        (0..128u64).any(|i| {
            at(label + (128 << 10) + i * 1024, 8).is_some_and(|b| {
                let v = u64::from_le_bytes(b.try_into().unwrap());
                v == zfs || v == zfs.swap_bytes()
            })
        })
    });
    if is_zfs {
        out.push((Kind::Zfs, None));
    }
    // btrfs: "_BHRfS_M" at 64 KiB + 0x40, label at 64 KiB + 0x12b.
    if let Some(sb) = at(64 << 10, 0x22b)
        && sb[0x40..0x48] == *b"_BHRfS_M"
    {
        out.push((Kind::Btrfs, text(&sb[0x12b..0x22b])));
    }
    // ext2/3/4: magic 0xEF53 at 1024 + 0x38, volume name at 1024 + 0x78.
    if let Some(sb) = at(1024, 0x88)
        && sb[0x38..0x3a] == [0x53, 0xef]
    {
        out.push((Kind::Ext, text(&sb[0x78..0x88])));
    }
    // FAT: the boot sector's type string and volume label (FAT32 at 0x52 and
    // 0x47, FAT12/16 at 0x36 and 0x2b), with the 0x55AA signature.
    if let Some(bs) = at(0, 512)
        && bs[510..512] == [0x55, 0xaa]
    {
        let label = if bs[0x52..0x57] == *b"FAT32" {
            Some(text(&bs[0x47..0x52]))
        } else if bs[0x36..0x39] == *b"FAT" {
            Some(text(&bs[0x2b..0x36]))
        } else {
            None
        };
        if let Some(l) = label {
            out.push((Kind::Fat, l.filter(|l| l != "NO NAME")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(writes: &[(u64, &[u8])], len: u64) -> File {
        let f = tempfile::tempfile().unwrap();
        f.set_len(len).unwrap();
        for (off, b) in writes {
            f.write_all_at(b, *off).unwrap();
        }
        f
    }

    fn kinds(f: &File, len: u64) -> Vec<Kind> {
        scan(f, len, None).into_iter().map(|x| x.kind).collect()
    }

    #[test]
    fn signatures_at_their_documented_offsets() {
        let len = 4 << 20;
        let mut lvm = [0u8; 32];
        lvm[..8].copy_from_slice(b"LABELONE");
        lvm[24..].copy_from_slice(b"LVM2 001");
        assert_eq!(kinds(&disk(&[(512, &lvm)], len), len), [Kind::LvmPv]);
        assert_eq!(
            kinds(&disk(&[(0, b"LUKS\xba\xbe\0\x01")], len), len),
            [Kind::Luks]
        );
        let md = 0xa92b_4efcu32.to_le_bytes();
        assert_eq!(kinds(&disk(&[(4096, &md)], len), len), [Kind::MdRaid]);
        assert_eq!(
            kinds(&disk(&[(len - 0x10000, &md)], len), len),
            [Kind::MdRaid]
        );
        let zfs = 0x00ba_b10cu64.to_le_bytes();
        assert_eq!(
            kinds(
                &disk(&[((256 << 10) + (128 << 10) + 5 * 1024, &zfs)], len),
                len
            ),
            [Kind::Zfs]
        );
        let f = disk(
            &[
                ((64 << 10) + 0x40, b"_BHRfS_M"),
                ((64 << 10) + 0x12b, b"data\0"),
            ],
            len,
        );
        assert_eq!(scan(&f, len, None)[0].to_string(), "disk: btrfs \"data\"");
        assert!(kinds(&disk(&[], len), len).is_empty());
        // A tiny disk: probes past its end find nothing, and never fail.
        assert!(kinds(&disk(&[], 100), 100).is_empty());
    }
}
