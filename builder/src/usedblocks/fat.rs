//! FAT12/16/32 bytes in use: the reserved sectors (boot sector, FSInfo and its
//! backup), every FAT copy, the fixed root directory of FAT12/16, and each
//! data cluster whose entry in the first FAT is not zero.

use std::io;

use super::{ReadAt, push_run};
use crate::partition::Extent;

pub(super) enum Probe {
    NotFat,
    Unsupported(String),
    Used { bits: u8, ranges: Vec<Extent> },
}

fn le16(b: &[u8], o: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[o], b[o + 1]]))
}
fn le32(b: &[u8], o: usize) -> u64 {
    u64::from(u32::from_le_bytes(b[o..o + 4].try_into().unwrap()))
}

/// The BIOS parameter block fields that locate a FAT volume's areas.
#[derive(Debug)]
pub(crate) struct Bpb {
    pub bytes_per_sector: u64,
    pub sectors_per_cluster: u64,
    pub reserved: u64,
    pub fats: u64,
    pub fat_sectors: u64,
    pub root_dir_sectors: u64,
    pub total_sectors: u64,
    pub clusters: u64,
    pub bits: u8,
}

impl Bpb {
    /// Parse a boot sector; `None` if it is not a plausible FAT boot sector.
    pub fn parse(b: &[u8]) -> Option<Bpb> {
        if b.len() < 512 || b[510..512] != [0x55, 0xAA] || !matches!(b[0], 0xEB | 0xE9) {
            return None;
        }
        let bps = le16(b, 0x0B);
        let spc = u64::from(b[0x0D]);
        let reserved = le16(b, 0x0E);
        let fats = u64::from(b[0x10]);
        let root_entries = le16(b, 0x11);
        let total = match le16(b, 0x13) {
            0 => le32(b, 0x20),
            n => n,
        };
        let fat_sectors = match le16(b, 0x16) {
            0 => le32(b, 0x24),
            n => n,
        };
        if !matches!(bps, 512 | 1024 | 2048 | 4096)
            || spc == 0
            || !spc.is_power_of_two()
            || reserved == 0
            || !(1..=4).contains(&fats)
            || fat_sectors == 0
            || total == 0
        {
            return None;
        }
        let root_dir_sectors = (root_entries * 32).div_ceil(bps);
        let data_start = reserved + fats * fat_sectors + root_dir_sectors;
        if data_start >= total {
            return None;
        }
        let clusters = (total - data_start) / spc;
        let bits = match clusters {
            0..4085 => 12,
            4085..65525 => 16,
            _ => 32,
        };
        // FAT32 has no fixed root directory; FAT12/16 must have one.
        if (bits == 32) != (root_entries == 0) {
            return None;
        }
        // The FAT must have room for every cluster's entry.
        if fat_sectors * bps * 8 < (clusters + 2) * u64::from(bits) {
            return None;
        }
        Some(Bpb {
            bytes_per_sector: bps,
            sectors_per_cluster: spc,
            reserved,
            fats,
            fat_sectors,
            root_dir_sectors,
            total_sectors: total,
            clusters,
            bits,
        })
    }

    pub fn data_start(&self) -> u64 {
        (self.reserved + self.fats * self.fat_sectors + self.root_dir_sectors)
            * self.bytes_per_sector
    }

    pub fn cluster_bytes(&self) -> u64 {
        self.sectors_per_cluster * self.bytes_per_sector
    }
}

/// Probe a partition for FAT and compute its used byte ranges.
pub(super) fn used(read: &ReadAt, part_len: u64) -> io::Result<Probe> {
    if part_len < 512 {
        return Ok(Probe::NotFat);
    }
    let mut boot = vec![0u8; 512];
    read(0, &mut boot)?;
    let Some(bpb) = Bpb::parse(&boot) else {
        return Ok(Probe::NotFat);
    };
    if bpb.total_sectors * bpb.bytes_per_sector > part_len {
        return Ok(Probe::Unsupported(format!(
            "the FAT filesystem ({} sectors) is larger than its partition",
            bpb.total_sectors
        )));
    }
    let (clusters, data) = used_clusters(read, &bpb)?;
    let mut ranges = vec![Extent {
        start: 0,
        len: bpb.data_start(),
    }];
    for r in clusters {
        push_run(
            &mut ranges,
            data + (r.start - 2) * bpb.cluster_bytes(),
            r.len * bpb.cluster_bytes(),
        );
    }
    Ok(Probe::Used {
        bits: bpb.bits,
        ranges,
    })
}

/// Runs of in-use cluster numbers (from 2) per the first FAT, and the byte
/// offset of cluster 2.
pub(super) fn used_clusters(read: &ReadAt, bpb: &Bpb) -> io::Result<(Vec<Extent>, u64)> {
    let fat_start = bpb.reserved * bpb.bytes_per_sector;
    let last = bpb.clusters + 2; // entries 0 and 1 are reserved
    let mut runs = Vec::new();
    if bpb.bits == 12 {
        // At most 4084 clusters: a few KiB, read whole.
        let mut fat = vec![0u8; (last * 3).div_ceil(2) as usize + 1];
        read(fat_start, &mut fat)?;
        for n in 2..last {
            let o = (n * 3 / 2) as usize;
            let pair = u16::from_le_bytes([fat[o], fat[o + 1]]);
            let v = if n % 2 == 0 { pair & 0xFFF } else { pair >> 4 };
            if v != 0 {
                push_run(&mut runs, n, 1);
            }
        }
    } else {
        let width = u64::from(bpb.bits / 8);
        const CHUNK: u64 = 1 << 20;
        let mut buf = vec![0u8; CHUNK as usize];
        let mut n = 0u64;
        while n < last {
            let count = ((CHUNK / width).min(last - n)) as usize;
            let bytes = &mut buf[..count * width as usize];
            read(fat_start + n * width, bytes)?;
            for (i, e) in bytes.chunks_exact(width as usize).enumerate() {
                let cluster = n + i as u64;
                let v = if width == 2 {
                    le16(e, 0)
                } else {
                    le32(e, 0) & 0x0FFF_FFFF
                };
                if cluster >= 2 && v != 0 {
                    push_run(&mut runs, cluster, 1);
                }
            }
            n += count as u64;
        }
    }
    Ok((runs, bpb.data_start()))
}
