//! ext2/3/4 blocks in use, from the superblock, the group descriptors and the
//! block bitmaps. A group flagged `BLOCK_UNINIT` has no bitmap on disk: its
//! used blocks are exactly the metadata placed in it (superblock backup,
//! descriptors, reserved GDT blocks, and bitmaps or inode tables of any group
//! that live there), which is also what the kernel assumes.

use std::io;

use super::{ReadAt, push_run};
use crate::partition::Extent;

const MAGIC: u16 = 0xEF53;
const COMPAT_SPARSE_SUPER2: u32 = 0x200;
const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_64BIT: u32 = 0x80;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_GDT_CSUM: u32 = 0x10;
const RO_COMPAT_BIGALLOC: u32 = 0x200;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
const BG_BLOCK_UNINIT: u16 = 0x2;

pub(super) enum Probe {
    NotExt,
    /// ext, but laid out in a way this module does not model: map it whole.
    Unsupported(String),
    /// Used byte ranges relative to the partition, sorted and merged.
    Used(Vec<Extent>),
}

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

struct Group {
    block_bitmap: u64,
    inode_bitmap: u64,
    inode_table: u64,
    block_uninit: bool,
}

/// The superblock fields the computation needs.
struct Super {
    block_size: u64,
    /// Blocks per bitmap bit (bigalloc clusters), 1 otherwise.
    ratio: u64,
    blocks_count: u64,
    first_data_block: u64,
    blocks_per_group: u64,
    inodes_per_group: u64,
    inode_size: u64,
    desc_size: u64,
    reserved_gdt: u64,
    first_meta_bg: u64,
    backup_bgs: [u64; 2],
    compat: u32,
    incompat: u32,
    ro_compat: u32,
}

impl Super {
    fn groups(&self) -> u64 {
        (self.blocks_count - self.first_data_block).div_ceil(self.blocks_per_group)
    }
    fn group_first_block(&self, g: u64) -> u64 {
        self.first_data_block + g * self.blocks_per_group
    }
    fn descs_per_block(&self) -> u64 {
        self.block_size / self.desc_size
    }
    fn has_super(&self, g: u64) -> bool {
        if g == 0 {
            return true;
        }
        if self.compat & COMPAT_SPARSE_SUPER2 != 0 {
            return self.backup_bgs.contains(&g);
        }
        if g == 1 || self.ro_compat & RO_COMPAT_SPARSE_SUPER == 0 {
            return true;
        }
        g % 2 == 1 && [3, 5, 7].iter().any(|&b| is_power_of(g, b))
    }
    /// Superblock, descriptor and reserved-GDT blocks stored in group `g`
    /// (e2fsprogs' `ext2fs_super_and_bgd_loc2`), as (first block, count).
    fn base_meta(&self, g: u64) -> Option<(u64, u64)> {
        let first = self.group_first_block(g);
        let has_super = self.has_super(g);
        let per = self.descs_per_block();
        let meta_bg = self.incompat & INCOMPAT_META_BG != 0;
        let desc_blocks = self.groups().div_ceil(per);
        let mut n = u64::from(has_super);
        if !meta_bg || g / per < self.first_meta_bg {
            if has_super {
                n += if meta_bg {
                    self.first_meta_bg
                } else {
                    desc_blocks + self.reserved_gdt
                };
            }
        } else if matches!(g % per, 0 | 1) || g % per == per - 1 {
            n += 1;
        }
        (n > 0).then_some((first, n))
    }
    /// Block holding the descriptor of group `g`.
    fn desc_block(&self, g: u64) -> u64 {
        let per = self.descs_per_block();
        let idx = g / per;
        if self.incompat & INCOMPAT_META_BG == 0 || idx < self.first_meta_bg {
            self.first_data_block + 1 + idx
        } else {
            let leader = idx * per;
            self.group_first_block(leader) + u64::from(self.has_super(leader))
        }
    }
}

fn is_power_of(mut n: u64, base: u64) -> bool {
    while n.is_multiple_of(base) {
        n /= base;
    }
    n == 1
}

fn parse_super(sb: &[u8]) -> Result<Super, String> {
    let log = le32(sb, 0x18);
    let log_cluster = le32(sb, 0x1C);
    if log > 6 || log_cluster > 16 {
        return Err(format!("implausible block size (log {log})"));
    }
    let block_size = 1024u64 << log;
    let incompat = le32(sb, 0x60);
    let ro_compat = le32(sb, 0x64);
    let bigalloc = ro_compat & RO_COMPAT_BIGALLOC != 0;
    let ratio = if bigalloc {
        (1024u64 << log_cluster) / block_size
    } else {
        1
    };
    let rev = le32(sb, 0x4C);
    let mut blocks_count = u64::from(le32(sb, 0x4));
    let desc_size = if incompat & INCOMPAT_64BIT != 0 {
        blocks_count |= u64::from(le32(sb, 0x150)) << 32;
        u64::from(le16(sb, 0xFE))
    } else {
        32
    };
    let clusters_per_group = u64::from(le32(sb, 0x24));
    let blocks_per_group = if bigalloc {
        clusters_per_group * ratio
    } else {
        u64::from(le32(sb, 0x20))
    };
    let s = Super {
        block_size,
        ratio,
        blocks_count,
        first_data_block: u64::from(le32(sb, 0x14)),
        blocks_per_group,
        inodes_per_group: u64::from(le32(sb, 0x28)),
        inode_size: if rev == 0 {
            128
        } else {
            u64::from(le16(sb, 0x58))
        },
        desc_size,
        reserved_gdt: u64::from(le16(sb, 0xCE)),
        first_meta_bg: u64::from(le32(sb, 0x104)),
        backup_bgs: [u64::from(le32(sb, 0x24C)), u64::from(le32(sb, 0x250))],
        compat: le32(sb, 0x5C),
        incompat,
        ro_compat,
    };
    if ratio == 0 || !ratio.is_power_of_two() {
        return Err("implausible bigalloc cluster size".into());
    }
    if s.blocks_per_group == 0 || s.blocks_per_group > 8 * block_size * ratio {
        return Err(format!(
            "implausible blocks per group {}",
            s.blocks_per_group
        ));
    }
    if s.desc_size < 32 || !s.desc_size.is_power_of_two() || s.desc_size > block_size {
        return Err(format!("implausible group descriptor size {}", s.desc_size));
    }
    if s.first_data_block >= s.blocks_count || s.inode_size == 0 {
        return Err("implausible block or inode counts".into());
    }
    Ok(s)
}

/// Read and check the superblock of a partition: `None` if it is not
/// ext2/3/4, `Some(Err(why))` if its fields make no sense for the partition.
fn superblock(read: &ReadAt, part_len: u64) -> io::Result<Option<Result<Super, String>>> {
    if part_len < 2048 {
        return Ok(None);
    }
    let mut sb = vec![0u8; 1024];
    read(1024, &mut sb)?;
    if le16(&sb, 0x38) != MAGIC {
        return Ok(None);
    }
    let s = match parse_super(&sb) {
        Ok(s) => s,
        Err(why) => return Ok(Some(Err(format!("ext superblock: {why}")))),
    };
    // The superblock's counts are the disk's word: a crafted one can make
    // `blocks_count * block_size` wrap around to something that fits. Once
    // the product is checked against the partition, every block number below
    // `blocks_count` has a byte offset, and the number of groups (hence every
    // allocation below) is bounded by the partition's length.
    if s.blocks_count
        .checked_mul(s.block_size)
        .is_none_or(|bytes| bytes > part_len)
    {
        return Ok(Some(Err(format!(
            "the ext filesystem ({} blocks of {} bytes) is larger than its {part_len}-byte partition",
            s.blocks_count, s.block_size
        ))));
    }
    Ok(Some(Ok(s)))
}

/// Whether a partition holding ext2/3/4 has a superblock that fits it
/// (`Err` says why not). Not ext at all is `Ok`: the caller's reader says so.
///
/// Beyond what [`used`] needs, the superblock must mean the same to
/// ext4-view 1.0, which sizes its group table from it: ext4-view
/// (src/superblock.rs) takes `s_blocks_count_hi` even without the 64bit
/// feature (the kernel's `ext4_blocks_count` ignores it then) and counts
/// groups with the raw `s_blocks_per_group` (for bigalloc the kernel requires
/// it to equal clusters per group times the cluster ratio, which is what
/// [`parse_super`] uses).
pub(super) fn check(read: &ReadAt, part_len: u64) -> io::Result<Result<(), String>> {
    let s = match superblock(read, part_len)? {
        None => return Ok(Ok(())),
        Some(Err(why)) => return Ok(Err(why)),
        Some(Ok(s)) => s,
    };
    let mut sb = vec![0u8; 1024];
    read(1024, &mut sb)?;
    if s.incompat & INCOMPAT_64BIT == 0 && le32(&sb, 0x150) != 0 {
        return Ok(Err(
            "s_blocks_count_hi is set but the filesystem has no 64bit feature".into(),
        ));
    }
    if u64::from(le32(&sb, 0x20)) != s.blocks_per_group {
        return Ok(Err(format!(
            "s_blocks_per_group {} does not match {} clusters per group of {} blocks",
            le32(&sb, 0x20),
            le32(&sb, 0x24),
            s.ratio
        )));
    }
    Ok(Ok(()))
}

/// Probe a partition for ext2/3/4 and compute its used byte ranges.
pub(super) fn used(read: &ReadAt, part_len: u64) -> io::Result<Probe> {
    let s = match superblock(read, part_len)? {
        None => return Ok(Probe::NotExt),
        Some(Err(why)) => return Ok(Probe::Unsupported(why)),
        Some(Ok(s)) => s,
    };
    if s.incompat & INCOMPAT_JOURNAL_DEV != 0 {
        return Ok(Probe::Unsupported("external ext4 journal device".into()));
    }
    let bs = s.block_size as usize;
    let csum = s.ro_compat & (RO_COMPAT_GDT_CSUM | RO_COMPAT_METADATA_CSUM) != 0;

    // Group descriptors, one descriptor block at a time.
    let ngroups = s.groups();
    let mut groups = Vec::with_capacity(ngroups as usize);
    let mut block = vec![0u8; bs];
    let mut loaded = u64::MAX;
    for g in 0..ngroups {
        let b = s.desc_block(g);
        if b != loaded {
            let at = b.checked_mul(s.block_size).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("group {g}'s descriptor block {b} is past any disk"),
                )
            })?;
            read(at, &mut block)?;
            loaded = b;
        }
        let d = &block[((g % s.descs_per_block()) * s.desc_size) as usize..];
        let hi = |o: usize| {
            if s.desc_size >= 64 {
                u64::from(le32(d, o)) << 32
            } else {
                0
            }
        };
        groups.push(Group {
            block_bitmap: u64::from(le32(d, 0x0)) | hi(0x20),
            inode_bitmap: u64::from(le32(d, 0x4)) | hi(0x24),
            inode_table: u64::from(le32(d, 0x8)) | hi(0x28),
            block_uninit: csum && le16(d, 0x12) & BG_BLOCK_UNINIT != 0,
        });
    }

    // Metadata every group has, wherever it lives (in block numbers).
    let itable_blocks = (s.inodes_per_group * s.inode_size).div_ceil(s.block_size);
    let mut blocks: Vec<Extent> = vec![Extent {
        start: 0,
        len: s.first_data_block + 1,
    }];
    for (g, grp) in groups.iter().enumerate() {
        if let Some((first, n)) = s.base_meta(g as u64) {
            blocks.push(Extent {
                start: first,
                len: n,
            });
        }
        blocks.push(Extent {
            start: grp.block_bitmap,
            len: 1,
        });
        blocks.push(Extent {
            start: grp.inode_bitmap,
            len: 1,
        });
        blocks.push(Extent {
            start: grp.inode_table,
            len: itable_blocks,
        });
    }

    // Everything the block bitmaps mark in use.
    let mut bitmap = vec![0u8; bs];
    for (g, grp) in groups.iter().enumerate() {
        if grp.block_uninit {
            continue;
        }
        if grp.block_bitmap >= s.blocks_count {
            return Ok(Probe::Unsupported(format!(
                "group {g}'s block bitmap is outside the filesystem"
            )));
        }
        read(grp.block_bitmap * s.block_size, &mut bitmap)?;
        let first = s.group_first_block(g as u64);
        let in_group = (s.blocks_count - first).min(s.blocks_per_group);
        let bits = in_group.div_ceil(s.ratio);
        let mut runs = Vec::new();
        for_each_set_run(&bitmap, bits, |bit, n| {
            push_run(&mut runs, first + bit * s.ratio, n * s.ratio)
        });
        blocks.extend(runs);
    }

    let ranges = super::normalize(
        blocks
            .into_iter()
            .filter(|b| b.start < s.blocks_count)
            .map(|b| Extent {
                start: b.start * s.block_size,
                len: b.len.min(s.blocks_count - b.start) * s.block_size,
            })
            .collect(),
        1,
        part_len,
    );
    Ok(Probe::Used(ranges))
}

/// Call `f(first_bit, count)` for each run of set bits among the first `bits`
/// bits of `map` (little-endian bit order, as ext4 and FAT bitmaps use).
pub(super) fn for_each_set_run(map: &[u8], bits: u64, mut f: impl FnMut(u64, u64)) {
    let bits = bits.min(map.len() as u64 * 8);
    let mut run_start: Option<u64> = None;
    let mut i = 0u64;
    while i < bits {
        let byte = map[(i / 8) as usize];
        // Whole bytes at once where the run state does not change.
        if i.is_multiple_of(8) && i + 8 <= bits && (byte == 0 || byte == 0xFF) {
            match (byte, run_start) {
                (0, Some(s)) => {
                    f(s, i - s);
                    run_start = None;
                }
                (0xFF, None) => run_start = Some(i),
                _ => {}
            }
            i += 8;
            continue;
        }
        let set = byte >> (i % 8) & 1 == 1;
        match (set, run_start) {
            (true, None) => run_start = Some(i),
            (false, Some(s)) => {
                f(s, i - s);
                run_start = None;
            }
            _ => {}
        }
        i += 1;
    }
    if let Some(s) = run_start {
        f(s, bits - s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_runs_cross_bytes_and_stop_at_the_bit_count() {
        let mut runs = Vec::new();
        for_each_set_run(&[0b1111_0001, 0xFF, 0x00, 0b0000_0011], 26, |s, n| {
            runs.push((s, n))
        });
        assert_eq!(runs, vec![(0, 1), (4, 12), (24, 2)]);
        let mut runs = Vec::new();
        for_each_set_run(&[0xFF, 0xFF], 12, |s, n| runs.push((s, n)));
        assert_eq!(runs, vec![(0, 12)]);
    }

    #[test]
    fn sparse_super_backups_are_in_groups_0_1_and_powers_of_3_5_7() {
        let mut sb = vec![0u8; 1024];
        sb[0x18] = 2; // 4 KiB blocks
        sb[0x04..0x08].copy_from_slice(&(1u32 << 24).to_le_bytes());
        sb[0x20..0x24].copy_from_slice(&32768u32.to_le_bytes());
        sb[0x28..0x2C].copy_from_slice(&8192u32.to_le_bytes());
        sb[0x4C] = 1;
        sb[0x58] = 0; // inode size 256
        sb[0x59] = 1;
        sb[0x64] = RO_COMPAT_SPARSE_SUPER as u8;
        let s = parse_super(&sb).unwrap();
        let with: Vec<u64> = (0..200).filter(|&g| s.has_super(g)).collect();
        assert_eq!(with, vec![0, 1, 3, 5, 7, 9, 25, 27, 49, 81, 125]);
    }
}
