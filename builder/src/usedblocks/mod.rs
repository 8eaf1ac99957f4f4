//! Which bytes of a disk image matter: the partition-table area, the FAT and
//! ext4 metadata and the blocks their allocation maps mark in use. Everything
//! else is free space that neither a flash nor a `.bmap` needs to carry.
//!
//! The rule is conservative: anything not positively known to be free is
//! mapped. Partitions of other kinds (swap, extended, btrfs, …) and
//! filesystems with features this module does not model are mapped whole.

mod ext4;
mod fat;

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::partition::{self, Extent, TableError, TableKind};

pub(crate) use fat::Bpb;

/// Block size of bmap files and of flash writes: 4 KiB, the ext4 block size
/// and a multiple of every sector size in use.
pub const DEFAULT_BLOCK_SIZE: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum UsedBlocksError {
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a disk image: it holds {size} bytes, less than one 512-byte sector", path.display())]
    TooShort { path: PathBuf, size: u64 },
    #[error("{}: block size {size} is not a power of two of at least 512 bytes", .path.display())]
    BlockSize { path: PathBuf, size: u64 },
}

/// What a partition holds, as far as the used-block computation is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// FAT12/16/32: reserved sectors, FATs, root directory and used clusters.
    Fat { bits: u8 },
    /// ext2/3/4: superblocks, descriptors, bitmaps, inode tables, used blocks.
    Ext4,
    /// Anything else: mapped whole. `reason` says why, for people.
    Unknown { reason: String },
}

#[derive(Debug, Clone)]
pub struct PartUsage {
    /// 1-based partition number, as in the table.
    pub number: u32,
    pub extent: Extent,
    pub content: Content,
    /// Bytes of this partition that are in use (before block alignment).
    pub used_bytes: u64,
}

/// The mapped byte ranges of an image.
#[derive(Debug, Clone)]
pub struct UsedBlocks {
    pub image_size: u64,
    pub block_size: u64,
    /// Sorted, disjoint, non-adjacent ranges, aligned to `block_size`
    /// (except that the last one ends at `image_size`).
    pub ranges: Vec<Extent>,
    pub parts: Vec<PartUsage>,
}

impl UsedBlocks {
    /// Total bytes in `ranges`.
    pub fn mapped_bytes(&self) -> u64 {
        self.ranges.iter().map(|r| r.len).sum()
    }
}

/// Compute the mapped ranges of the image at `path`.
pub fn compute(path: &Path, block_size: u64) -> Result<UsedBlocks, UsedBlocksError> {
    let io = |source| UsedBlocksError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    compute_file(&file, path, size, block_size)
}

/// Compute the mapped ranges of an image already open (`size` bytes long).
pub fn compute_file(
    file: &File,
    path: &Path,
    size: u64,
    block_size: u64,
) -> Result<UsedBlocks, UsedBlocksError> {
    if block_size < 512 || !block_size.is_power_of_two() {
        return Err(UsedBlocksError::BlockSize {
            path: path.to_path_buf(),
            size: block_size,
        });
    }
    if size < 512 {
        return Err(UsedBlocksError::TooShort {
            path: path.to_path_buf(),
            size,
        });
    }
    let read_whole = |off: u64, buf: &mut [u8]| -> io::Result<()> {
        if off
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > size)
        {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        file.read_exact_at(buf, off)
    };
    // A bare filesystem image (no table), or one we cannot use: probe the
    // whole image as one filesystem, else map all of it.
    let bare = |why: String| -> Result<UsedBlocks, UsedBlocksError> {
        let (content, rel) = match probe(&read_whole, size) {
            Ok(found) => found,
            // Shorter than any superblock: nothing to recognise.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => (
                Content::Unknown {
                    reason: "too small for a FAT or ext2/3/4 filesystem".into(),
                },
                None,
            ),
            Err(e) => return Err(io_err(path, e)),
        };
        let content = match content {
            Content::Unknown { reason } => Content::Unknown {
                reason: format!("{why}; {reason}"),
            },
            c => c,
        };
        let rel = rel.unwrap_or_else(|| {
            vec![Extent {
                start: 0,
                len: size,
            }]
        });
        Ok(UsedBlocks {
            image_size: size,
            block_size,
            parts: vec![PartUsage {
                number: 0,
                extent: Extent {
                    start: 0,
                    len: size,
                },
                content,
                used_bytes: rel.iter().map(|r| r.len).sum(),
            }],
            ranges: normalize(rel, block_size, size),
        })
    };
    let table = match partition::read_table(file, path, size) {
        Ok(t) if !t.partitions.is_empty() => t,
        Ok(_) => return bare("the partition table lists no partitions".into()),
        Err(TableError::Io { source, .. }) => return Err(io_err(path, source)),
        Err(e) => return bare(e.to_string()),
    };

    let mut ranges = Vec::new();
    // The table area: everything before the first partition (MBR, GPT, boot
    // loaders that live in the gap).
    let first = table
        .partitions
        .iter()
        .map(|p| p.extent.start)
        .min()
        .unwrap_or(size);
    ranges.push(Extent {
        start: 0,
        len: first,
    });
    if table.kind == TableKind::Gpt {
        // The backup GPT lives after the last partition, at the end of the disk.
        let last = table
            .partitions
            .iter()
            .map(|p| p.extent.end())
            .max()
            .unwrap_or(0);
        ranges.push(Extent {
            start: last,
            len: size.saturating_sub(last),
        });
    }

    let mut parts = Vec::new();
    for p in &table.partitions {
        let base = p.extent.start;
        let read = |off: u64, buf: &mut [u8]| -> io::Result<()> {
            if off
                .checked_add(buf.len() as u64)
                .is_none_or(|end| end > p.extent.len)
            {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "read of {} bytes at {off} is past the end of partition {}",
                        buf.len(),
                        p.number
                    ),
                ));
            }
            file.read_exact_at(buf, base + off)
        };
        let (content, rel) = if matches!(p.type_id, 0x05 | 0x0f | 0x85) {
            (
                Content::Unknown {
                    reason: "extended partition (logical partitions are not inspected)".into(),
                },
                None,
            )
        } else {
            probe(&read, p.extent.len).map_err(|e| io_err(path, e))?
        };
        let rel = rel.unwrap_or_else(|| {
            vec![Extent {
                start: 0,
                len: p.extent.len,
            }]
        });
        let mut used_bytes = 0;
        for r in rel {
            let end = r.end().min(p.extent.len);
            if end > r.start {
                used_bytes += end - r.start;
                ranges.push(Extent {
                    start: base + r.start,
                    len: end - r.start,
                });
            }
        }
        parts.push(PartUsage {
            number: p.number,
            extent: p.extent,
            content,
            used_bytes,
        });
    }
    Ok(UsedBlocks {
        image_size: size,
        block_size,
        ranges: normalize(ranges, block_size, size),
        parts,
    })
}

fn io_err(path: &Path, source: io::Error) -> UsedBlocksError {
    UsedBlocksError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Check the ext2/3/4 superblock of the partition at `extent` of `file`
/// against the partition's length before a reader that trusts it (ext4-view
/// sizes its group table from `s_blocks_count`) sees it. `Err` says what is
/// wrong; a partition that is not ext at all passes (its reader says so).
pub fn check_ext_superblock(file: &File, extent: Extent) -> Result<(), String> {
    let read = |off: u64, buf: &mut [u8]| -> io::Result<()> {
        if off
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > extent.len)
        {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        file.read_exact_at(buf, extent.start + off)
    };
    ext4::check(&read, extent.len).map_err(|e| format!("cannot read the superblock: {e}"))?
}

/// Reads `buf.len()` bytes at an offset relative to the start of a partition.
pub(crate) type ReadAt<'a> = dyn Fn(u64, &mut [u8]) -> io::Result<()> + 'a;

/// Identify a partition's filesystem by its content and compute its used
/// ranges (relative to the partition). `None` ranges: map it whole.
fn probe(read: &ReadAt, len: u64) -> io::Result<(Content, Option<Vec<Extent>>)> {
    match ext4::used(read, len)? {
        ext4::Probe::Used(r) => return Ok((Content::Ext4, Some(r))),
        ext4::Probe::Unsupported(reason) => return Ok((Content::Unknown { reason }, None)),
        ext4::Probe::NotExt => {}
    }
    match fat::used(read, len)? {
        fat::Probe::Used { bits, ranges } => Ok((Content::Fat { bits }, Some(ranges))),
        fat::Probe::Unsupported(reason) => Ok((Content::Unknown { reason }, None)),
        fat::Probe::NotFat => Ok((
            Content::Unknown {
                reason: "neither FAT nor ext2/3/4".into(),
            },
            None,
        )),
    }
}

/// Sort, align outward to `align`, clip to `size` and merge overlapping or
/// adjacent ranges; empty ranges vanish.
pub fn normalize(mut ranges: Vec<Extent>, align: u64, size: u64) -> Vec<Extent> {
    ranges.retain(|r| r.len > 0 && r.start < size);
    for r in &mut ranges {
        let start = r.start / align * align;
        let end = r
            .end()
            .min(size)
            .div_ceil(align)
            .saturating_mul(align)
            .min(size);
        *r = Extent {
            start,
            len: end - start,
        };
    }
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Extent> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end() => {
                let end = last.end().max(r.end());
                last.len = end - last.start;
            }
            _ => out.push(r),
        }
    }
    out
}

/// Append the run `[start, start+len)` to `runs`, extending the last run when
/// it is adjacent (bitmaps and FATs produce runs in order).
pub(crate) fn push_run(runs: &mut Vec<Extent>, start: u64, len: u64) {
    if len == 0 {
        return;
    }
    if let Some(last) = runs.last_mut()
        && last.end() == start
    {
        last.len += len;
        return;
    }
    runs.push(Extent { start, len });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(start: u64, len: u64) -> Extent {
        Extent { start, len }
    }

    #[test]
    fn normalize_aligns_merges_and_clips() {
        let r = normalize(
            vec![
                e(5000, 10),
                e(0, 512),
                e(4096, 1),
                e(20000, 0),
                e(9000, 100),
            ],
            4096,
            10000,
        );
        assert_eq!(r, vec![e(0, 10000)]);
        let r = normalize(
            vec![e(100, 1), e(12288, 4096), e(4096, 4096)],
            4096,
            1 << 20,
        );
        assert_eq!(r, vec![e(0, 8192), e(12288, 4096)]);
        assert_eq!(normalize(vec![e(1 << 20, 5)], 4096, 1 << 20), vec![]);
    }

    #[test]
    fn runs_extend_when_adjacent() {
        let mut runs = Vec::new();
        push_run(&mut runs, 0, 4);
        push_run(&mut runs, 4, 4);
        push_run(&mut runs, 10, 0);
        push_run(&mut runs, 12, 1);
        assert_eq!(runs, vec![e(0, 8), e(12, 1)]);
    }
}
