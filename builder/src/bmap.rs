//! Block maps in bmaptool's XML format, version 2.0 (Debian's `bmap-tools`).
//!
//! A bmap lists the blocks of an image that carry data, each range with the
//! SHA-256 of its bytes, so `bmaptool copy IMAGE DEVICE` (or `picluster
//! flash`) writes only those. The whole file is itself checksummed: the
//! `BmapFileChecksum` element holds the SHA-256 of the file as written with
//! that element's value replaced by 64 ASCII zeros.
//!
//! ```no_run
//! # fn main() -> Result<(), picluster::bmap::BmapError> {
//! use picluster::bmap::Bmap;
//! let bmap = Bmap::for_image("node1.img".as_ref())?;
//! bmap.write_to("node1.img.bmap".as_ref())?;
//! let again = Bmap::read("node1.img.bmap".as_ref())?;
//! assert_eq!(again, bmap);
//! # Ok(()) }
//! ```

use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::digest::{hex, unhex};
use crate::partition::Extent;
use crate::usedblocks::{self, DEFAULT_BLOCK_SIZE, UsedBlocksError};

/// The largest bmap file read: 256 MiB holds over two million `<Range>`s with
/// checksums, far more than any image's bmap (a Raspberry Pi OS image has a
/// few hundred); anything bigger is refused before it is held in memory.
const MAX_BMAP_BYTES: u64 = 256 << 20;

const ZEROS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum BmapError {
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    UsedBlocks(#[from] UsedBlocksError),
    #[error("{}: not a bmap file bmaptool could read: {reason}", path.display())]
    Format { path: PathBuf, reason: String },
    #[error(
        "{}: the file checksum does not match its content (it was edited or truncated); regenerate it",
        path.display()
    )]
    FileChecksum { path: PathBuf },
}

/// One `<Range>`: blocks `first..=last`, and the SHA-256 of their bytes
/// (the last block of the image may be partial).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmapRange {
    pub first: u64,
    pub last: u64,
    pub sha256: Option<[u8; 32]>,
}

/// A parsed or computed block map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bmap {
    pub image_size: u64,
    pub block_size: u64,
    pub ranges: Vec<BmapRange>,
}

impl Bmap {
    /// Compute the bmap of a raw image: its used blocks (see
    /// [`crate::usedblocks`]) in 4 KiB blocks, each range hashed.
    pub fn for_image(path: &Path) -> Result<Bmap, BmapError> {
        let io = |source| BmapError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        let used = usedblocks::compute_file(&file, path, size, DEFAULT_BLOCK_SIZE)?;
        Bmap::from_ranges(&file, path, size, DEFAULT_BLOCK_SIZE, &used.ranges)
    }

    /// Build a bmap from byte ranges (aligned to `block_size`, sorted,
    /// disjoint), hashing their content in `file`.
    pub fn from_ranges(
        file: &File,
        path: &Path,
        image_size: u64,
        block_size: u64,
        ranges: &[Extent],
    ) -> Result<Bmap, BmapError> {
        Bmap::from_ranges_with(file, path, image_size, block_size, ranges, &|_| None)
    }

    /// As [`Bmap::from_ranges`], taking the checksum of a range from `known`
    /// when it has one (ranges whose bytes are known to equal an earlier image's).
    pub fn from_ranges_with(
        file: &File,
        path: &Path,
        image_size: u64,
        block_size: u64,
        ranges: &[Extent],
        known: &dyn Fn(Extent) -> Option<[u8; 32]>,
    ) -> Result<Bmap, BmapError> {
        let mut buf = vec![0u8; 4 << 20];
        let mut out = Vec::with_capacity(ranges.len());
        for r in ranges {
            let end = r.end().min(image_size);
            if let Some(sha) = known(*r) {
                out.push(BmapRange {
                    first: r.start / block_size,
                    last: end.div_ceil(block_size) - 1,
                    sha256: Some(sha),
                });
                continue;
            }
            let mut h = Sha256::new();
            let mut pos = r.start;
            while pos < end {
                let n = (end - pos).min(buf.len() as u64) as usize;
                file.read_exact_at(&mut buf[..n], pos)
                    .map_err(|source| BmapError::Io {
                        path: path.to_path_buf(),
                        source,
                    })?;
                h.update(&buf[..n]);
                pos += n as u64;
            }
            out.push(BmapRange {
                first: r.start / block_size,
                last: end.div_ceil(block_size) - 1,
                sha256: Some(h.finalize().into()),
            });
        }
        Ok(Bmap {
            image_size,
            block_size,
            ranges: out,
        })
    }

    pub fn blocks_count(&self) -> u64 {
        self.image_size.div_ceil(self.block_size)
    }

    pub fn mapped_blocks(&self) -> u64 {
        self.ranges.iter().map(|r| r.last - r.first + 1).sum()
    }

    /// Mapped bytes (the last block counted only up to the image end).
    pub fn mapped_bytes(&self) -> u64 {
        self.extents().map(|(e, _)| e.len).sum()
    }

    /// The ranges as byte extents of the image, with their checksums.
    pub fn extents(&self) -> impl Iterator<Item = (Extent, Option<[u8; 32]>)> + '_ {
        self.ranges.iter().map(|r| {
            let start = r.first * self.block_size;
            let end = ((r.last + 1) * self.block_size).min(self.image_size);
            (
                Extent {
                    start,
                    len: end.saturating_sub(start),
                },
                r.sha256,
            )
        })
    }

    /// The XML text, with its file checksum filled in.
    pub fn to_xml(&self) -> String {
        let blocks = self.blocks_count();
        let mapped = self.mapped_blocks();
        let percent = if blocks == 0 {
            0.0
        } else {
            mapped as f64 * 100.0 / blocks as f64
        };
        let mut x = String::new();
        let _ = write!(
            x,
            r#"<?xml version="1.0" ?>
<!-- Block map of a disk image, written by picluster in the format of
     bmaptool (bmap-tools) version 2.0: only the listed blocks carry data
     (partition table, filesystem metadata, files); the others are free
     space and need not be written to the target device.
     Flash with `picluster flash IMAGE DEVICE` or
     `bmaptool copy IMAGE DEVICE` (both find IMAGE.bmap beside it). -->

<bmap version="2.0">
    <!-- Image size in bytes: {human} -->
    <ImageSize> {size} </ImageSize>

    <!-- Size of a block in bytes -->
    <BlockSize> {bs} </BlockSize>

    <!-- Count of blocks in the image file -->
    <BlocksCount> {blocks} </BlocksCount>

    <!-- Count of mapped blocks: {mapped_human} or {percent:.1}% -->
    <MappedBlocksCount> {mapped} </MappedBlocksCount>

    <!-- Type of checksum used in this file -->
    <ChecksumType> sha256 </ChecksumType>

    <!-- The checksum of this bmap file. When it is calculated, the value of
         the checksum has be zero (all ASCII "0" symbols).  -->
    <BmapFileChecksum> {ZEROS} </BmapFileChecksum>

    <!-- The block map which consists of elements which may either be a
         range of blocks or a single block. The 'chksum' attribute
         (if present) is the checksum of this blocks range. -->
    <BlockMap>
"#,
            human = human(self.image_size),
            size = self.image_size,
            bs = self.block_size,
            mapped_human = human(mapped.saturating_mul(self.block_size)),
        );
        for r in &self.ranges {
            let sum = r
                .sha256
                .map(|h| format!(" chksum=\"{}\"", hex(&h)))
                .unwrap_or_default();
            if r.first == r.last {
                let _ = writeln!(x, "        <Range{sum}> {} </Range>", r.first);
            } else {
                let _ = writeln!(x, "        <Range{sum}> {}-{} </Range>", r.first, r.last);
            }
        }
        x.push_str("    </BlockMap>\n</bmap>\n");
        let sum = hex(&Sha256::digest(x.as_bytes()));
        // The zeros placeholder appears exactly once, as the element's value.
        x.replacen(ZEROS, &sum, 1)
    }

    /// Write the bmap to `path` atomically (temporary file, fsync, rename),
    /// mode 0644 like the bmaps `picluster build` writes.
    pub fn write_to(&self, path: &Path) -> Result<(), BmapError> {
        crate::atomic::write(path, self.to_xml().as_bytes(), 0o644).map_err(|source| {
            BmapError::Io {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    /// Read and check a bmap file (version 1.4 or 2.x, SHA-256 checksums).
    pub fn read(path: &Path) -> Result<Bmap, BmapError> {
        let io = |source| BmapError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut text = String::new();
        if len <= MAX_BMAP_BYTES {
            io::Read::read_to_string(&mut io::Read::take(file, MAX_BMAP_BYTES + 1), &mut text)
                .map_err(io)?;
        }
        if len > MAX_BMAP_BYTES || text.len() as u64 > MAX_BMAP_BYTES {
            return Err(BmapError::Format {
                path: path.to_path_buf(),
                reason: format!(
                    "it is larger than {} MiB, which no bmap of a disk image needs",
                    MAX_BMAP_BYTES >> 20
                ),
            });
        }
        Bmap::parse(&text, path)
    }

    /// Parse bmap text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Bmap, BmapError> {
        let bad = |reason: String| BmapError::Format {
            path: path.to_path_buf(),
            reason,
        };
        let doc = roxmltree::Document::parse(text).map_err(|e| bad(e.to_string()))?;
        let root = doc.root_element();
        if root.tag_name().name() != "bmap" {
            return Err(bad(format!(
                "the root element is <{}>, not <bmap>",
                root.tag_name().name()
            )));
        }
        let version = root.attribute("version").unwrap_or("");
        let (major, minor) = version
            .split_once('.')
            .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
            .ok_or_else(|| bad(format!("version {version:?} is not MAJOR.MINOR")))?;
        if !(major == 2 || (major == 1 && minor == 4)) {
            return Err(bad(format!(
                "format version {version} is not supported (2.0 is; regenerate it with a current bmaptool)"
            )));
        }
        let child = |name: &str| {
            root.children()
                .find(|n| n.has_tag_name(name))
                .and_then(|n| n.text())
                .map(str::trim)
                .ok_or_else(|| bad(format!("<{name}> is missing")))
        };
        let number = |name: &str| -> Result<u64, BmapError> {
            let t = child(name)?;
            t.parse()
                .map_err(|_| bad(format!("<{name}> {t:?} is not a number")))
        };
        let image_size = number("ImageSize")?;
        let block_size = number("BlockSize")?;
        let blocks_count = number("BlocksCount")?;
        let mapped_count = number("MappedBlocksCount")?;
        // Every block number below BlocksCount must have a byte offset: with
        // that checked, `extents()` and the writers cannot overflow.
        if block_size == 0
            || image_size.div_ceil(block_size) != blocks_count
            || blocks_count.checked_mul(block_size).is_none()
        {
            return Err(bad(format!(
                "{image_size} bytes are not {blocks_count} blocks of {block_size} bytes"
            )));
        }
        let ctype = child("ChecksumType")?;
        if !ctype.eq_ignore_ascii_case("sha256") {
            return Err(bad(format!(
                "checksum type {ctype} is not supported (picluster reads sha256 bmaps)"
            )));
        }
        let file_sum = child("BmapFileChecksum")?;
        check_file_checksum(text, file_sum)
            .then_some(())
            .ok_or_else(|| BmapError::FileChecksum {
                path: path.to_path_buf(),
            })?;

        let map = root
            .children()
            .find(|n| n.has_tag_name("BlockMap"))
            .ok_or_else(|| bad("<BlockMap> is missing".into()))?;
        let mut ranges: Vec<BmapRange> = Vec::new();
        for r in map.children().filter(|n| n.has_tag_name("Range")) {
            let t = r.text().unwrap_or("").trim();
            let parse = |s: &str| {
                s.trim()
                    .parse::<u64>()
                    .map_err(|_| bad(format!("<Range> {t:?} is not FIRST-LAST")))
            };
            let (first, last) = match t.split_once('-') {
                Some((a, b)) => (parse(a)?, parse(b)?),
                None => (parse(t)?, parse(t)?),
            };
            if last < first || last >= blocks_count {
                return Err(bad(format!(
                    "<Range> {t} is outside the image's {blocks_count} blocks"
                )));
            }
            if let Some(prev) = ranges.last()
                && first <= prev.last
            {
                return Err(bad(format!(
                    "<Range> {t} overlaps or precedes the one before"
                )));
            }
            let sha256 = match r.attribute("chksum") {
                None => None,
                Some(h) => {
                    Some(unhex(h).ok_or_else(|| bad(format!("chksum {h:?} is not a SHA-256")))?)
                }
            };
            ranges.push(BmapRange {
                first,
                last,
                sha256,
            });
        }
        let bmap = Bmap {
            image_size,
            block_size,
            ranges,
        };
        if bmap.mapped_blocks() != mapped_count {
            return Err(bad(format!(
                "<MappedBlocksCount> is {mapped_count} but the ranges hold {} blocks",
                bmap.mapped_blocks()
            )));
        }
        Ok(bmap)
    }
}

/// bmaptool's rule: hash the file with the first occurrence of the checksum
/// text replaced by zeros.
fn check_file_checksum(text: &str, sum: &str) -> bool {
    if sum.len() != 64 || text.find(sum).is_none() {
        return false;
    }
    let zeroed = text.replacen(sum, ZEROS, 1);
    hex(&Sha256::digest(zeroed.as_bytes())).eq_ignore_ascii_case(sum)
}

/// bmaptool's human_size: "2.6 GiB".
fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Bmap {
        Bmap {
            image_size: 10 * 4096 + 100,
            block_size: 4096,
            ranges: vec![
                BmapRange {
                    first: 0,
                    last: 2,
                    sha256: Some([7; 32]),
                },
                BmapRange {
                    first: 5,
                    last: 5,
                    sha256: Some([9; 32]),
                },
                BmapRange {
                    first: 9,
                    last: 10,
                    sha256: None,
                },
            ],
        }
    }

    #[test]
    fn xml_round_trips_and_carries_a_valid_file_checksum() {
        let b = sample();
        let xml = b.to_xml();
        assert!(xml.contains("<BlocksCount> 11 </BlocksCount>"), "{xml}");
        assert!(xml.contains("<MappedBlocksCount> 6 </MappedBlocksCount>"));
        assert!(xml.contains("<Range chksum=\"0707"), "{xml}");
        assert!(xml.contains("> 5 </Range>"));
        assert!(!xml.contains(ZEROS));
        assert_eq!(Bmap::parse(&xml, Path::new("t.bmap")).unwrap(), b);
        assert_eq!(b.mapped_bytes(), 3 * 4096 + 4096 + 4096 + 100);
    }

    #[test]
    fn edited_files_are_refused() {
        let xml = sample().to_xml().replace("> 5 </Range>", "> 6 </Range>");
        let err = Bmap::parse(&xml, Path::new("t.bmap")).unwrap_err();
        assert!(matches!(err, BmapError::FileChecksum { .. }), "{err}");
        assert!(err.to_string().contains("t.bmap"));
    }

    #[test]
    fn inconsistent_counts_are_refused() {
        let mut b = sample();
        b.ranges[2].last = 11;
        let err = Bmap::parse(&b.to_xml(), Path::new("t.bmap")).unwrap_err();
        assert!(err.to_string().contains("outside"), "{err}");
    }
}
