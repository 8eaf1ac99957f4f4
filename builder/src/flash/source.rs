//! The image side of a flash: raw or compressed, how big, and which byte
//! ranges to write.
//!
//! Which ranges: a bmap always wins (`--bmap FILE`, else `IMAGE.bmap` or,
//! for `X.img.xz`/`X.img.gz`/`X.img.zst`, `X.img.bmap` beside the image); its per-range
//! SHA-256 is checked against the image while writing. Without a bmap, a raw
//! image's ranges are computed from its partition table and filesystems
//! ([`crate::usedblocks`]); a compressed image is written whole, because its
//! allocation maps cannot be read without decompressing it twice.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::bmap::Bmap;
use crate::decompress::{self, Compression};
use crate::partition::Extent;
use crate::progress;
use crate::usedblocks::{self, Content, DEFAULT_BLOCK_SIZE};

/// Where the ranges to write came from.
#[derive(Debug, Clone)]
pub enum PlanSource {
    Bmap(PathBuf),
    /// The map of a node image made for this flash.
    Built,
    /// Computed from the image's filesystems; one line per partition.
    Computed(Vec<String>),
    /// A compressed image without a bmap: every byte.
    Whole,
}

pub struct Image {
    pub path: PathBuf,
    pub format: Compression,
    pub file: File,
    /// The uncompressed size, when known before streaming.
    pub size: Option<u64>,
    /// A lower bound of the uncompressed size (gzip only records it modulo
    /// 4 GiB), for the device-size check.
    pub min_size: u64,
    /// Byte ranges to write (sorted, disjoint) with their expected SHA-256;
    /// `None`: the whole stream.
    pub ranges: Option<Vec<(Extent, Option<[u8; 32]>)>>,
    pub plan: PlanSource,
    /// Streams in an .xz file (pi-gen writes one).
    xz_streams: u32,
    /// A raw image in two files: from this offset on, its bytes are this
    /// file's (a node's head in `file`, the cached base here).
    tail: Option<(u64, File)>,
}

impl Image {
    /// Bytes that will be written (the whole image when not mapped).
    pub fn mapped_bytes(&self) -> u64 {
        match &self.ranges {
            Some(r) => r.iter().map(|(e, _)| e.len).sum(),
            None => self.size.unwrap_or(self.min_size),
        }
    }

    /// Read a raw image's bytes at `off` (from both files of a two-file image).
    pub fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let Some((split, tail)) = &self.tail else {
            return self.file.read_exact_at(buf, off);
        };
        let end = off + buf.len() as u64;
        if end <= *split {
            return self.file.read_exact_at(buf, off);
        }
        if off >= *split {
            return tail.read_exact_at(buf, off);
        }
        let (a, b) = buf.split_at_mut((*split - off) as usize);
        self.file.read_exact_at(a, off)?;
        tail.read_exact_at(b, *split)
    }

    /// The decompressed stream (a compressed image only).
    pub fn stream(&self) -> Result<Box<dyn Read + Send>> {
        let f = self
            .file
            .try_clone()
            .with_context(|| format!("cannot reopen {}", self.path.display()))?;
        let f = io::BufReader::with_capacity(1 << 20, f);
        Ok(match self.format {
            Compression::Xz => {
                if self.xz_streams > 1 {
                    // The threaded decoder stops after one stream.
                    return Ok(Box::new(liblzma::read::XzDecoder::new_multi_decoder(f)));
                }
                let stream = decompress::xz_decoder().with_context(|| {
                    format!("cannot start the xz decoder for {}", self.path.display())
                })?;
                Box::new(liblzma::read::XzDecoder::new_stream(f, stream))
            }
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(f)),
            Compression::Zstd => decompress::zstd_reader(f).with_context(|| {
                format!("cannot start the zstd decoder for {}", self.path.display())
            })?,
            Compression::None => Box::new(f),
        })
    }
}

/// Open an image and decide what to write.
pub fn open(path: &Path, bmap: Option<&Path>) -> Result<Image> {
    let file = File::open(path).with_context(|| format!("cannot open image {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot stat image {}", path.display()))?;
    if !meta.is_file() {
        bail!(
            "image {} is not a regular file; give an .img, .img.xz, .img.gz or .img.zst file",
            path.display()
        );
    }
    let len = meta.len();
    let mut magic = [0u8; 6];
    let n = file.read_at(&mut magic, 0).unwrap_or(0);
    let format = Compression::from_magic(&magic[..n]);
    let mut xz_streams = 0;
    let (size, min_size) = match format {
        Compression::None => (Some(len), len),
        Compression::Xz => {
            let s = xz_uncompressed_size(&file, len)
                .with_context(|| format!("cannot read the xz index of {}", path.display()))?;
            match s {
                Some((s, n)) => {
                    xz_streams = n;
                    (Some(s), s)
                }
                None => bail!(
                    "{} is not a complete .xz file (its index cannot be read); download it again",
                    path.display()
                ),
            }
        }
        Compression::Gzip => {
            let mut isize = [0u8; 4];
            if len < 18 {
                bail!("{} is too short to be a .gz file", path.display());
            }
            file.read_exact_at(&mut isize, len - 4)
                .with_context(|| format!("cannot read {}", path.display()))?;
            // The last member's size modulo 4 GiB: a lower bound of the
            // whole, also for a file of many members (picluster writes those).
            (None, u64::from(u32::from_le_bytes(isize)))
        }
        Compression::Zstd => {
            // The first frame's content size (when recorded): a lower bound.
            let mut head = [0u8; 18];
            let n = file.read_at(&mut head, 0).unwrap_or(0);
            let first = zstd::zstd_safe::get_frame_content_size(&head[..n]);
            (None, first.ok().flatten().unwrap_or(0))
        }
    };

    let bmap_path = match bmap {
        Some(b) => Some(b.to_path_buf()),
        None => bmap_beside(path),
    };
    if let Some(bp) = bmap_path {
        let b = Bmap::read(&bp)?;
        // gzip and zstd files of many pieces record no total, only a
        // lower bound (the last member's or the first frame's size).
        let differs = match size {
            Some(s) => s != b.image_size,
            None => b.image_size < min_size,
        };
        if differs {
            let s = size.unwrap_or(min_size);
            bail!(
                "{} describes an image of {} bytes but {} is {s} bytes: the bmap belongs to another image (remove it or pass the right one with --bmap)",
                bp.display(),
                b.image_size,
                path.display()
            );
        }
        return Ok(Image {
            path: path.to_path_buf(),
            format,
            file,
            size: Some(b.image_size),
            min_size: b.image_size,
            ranges: Some(b.extents().filter(|(e, _)| e.len > 0).collect()),
            plan: PlanSource::Bmap(bp),
            xz_streams,
            tail: None,
        });
    }
    if format != Compression::None {
        return Ok(Image {
            path: path.to_path_buf(),
            format,
            file,
            size,
            min_size,
            ranges: None,
            plan: PlanSource::Whole,
            xz_streams,
            tail: None,
        });
    }
    let used = usedblocks::compute_file(&file, path, len, DEFAULT_BLOCK_SIZE)?;
    if let [only] = used.parts.as_slice()
        && only.number == 0
        && matches!(only.content, Content::Unknown { .. })
    {
        // No table and no filesystem: a wrong file, never worth a card.
        bail!(
            "{} is not a disk image: it has no partition table and no FAT or ext2/3/4 filesystem; give an .img, .img.xz, .img.gz or .img.zst made for a card",
            path.display()
        );
    }
    let parts = used
        .parts
        .iter()
        .map(|p| {
            let what = match &p.content {
                Content::Fat { bits } => format!("FAT{bits}"),
                Content::Ext4 => "ext2/3/4".into(),
                Content::Unknown { reason } => format!("written whole: {reason}"),
            };
            let name = if p.number == 0 {
                "image".to_string()
            } else {
                format!("p{}", p.number)
            };
            format!(
                "{name}: {}, {} in use of {}",
                what,
                progress::size(p.used_bytes),
                progress::size(p.extent.len)
            )
        })
        .collect();
    Ok(Image {
        path: path.to_path_buf(),
        format,
        file,
        size,
        min_size,
        ranges: Some(used.ranges.into_iter().map(|e| (e, None)).collect()),
        plan: PlanSource::Computed(parts),
        xz_streams,
        tail: None,
    })
}

/// A raw image made of two files: `head` up to `split`, `tail` from there
/// (a node's own head and the cached base), written as `bmap` maps it.
/// `name` is what messages call it.
pub fn two_files(name: &Path, head: File, tail: File, split: u64, bmap: &Bmap) -> Image {
    Image {
        path: name.to_path_buf(),
        format: Compression::None,
        file: head,
        size: Some(bmap.image_size),
        min_size: bmap.image_size,
        ranges: Some(bmap.extents().filter(|(e, _)| e.len > 0).collect()),
        plan: PlanSource::Built,
        xz_streams: 0,
        tail: Some((split, tail)),
    }
}

/// `IMAGE.bmap`, or `X.img.bmap` for `X.img.xz` / `X.img.gz` / `X.img.zst`, if present.
fn bmap_beside(path: &Path) -> Option<PathBuf> {
    let s = path.as_os_str().to_string_lossy();
    let mut candidates = vec![PathBuf::from(format!("{s}.bmap"))];
    for ext in [".xz", ".gz", ".zst"] {
        if let Some(base) = s.strip_suffix(ext) {
            candidates.push(PathBuf::from(format!("{base}.bmap")));
        }
    }
    candidates.into_iter().find(|c| c.is_file())
}

/// The total uncompressed size recorded in the indexes of an .xz file
/// (all streams, walking back from the end) and the number of streams.
/// `None` if malformed.
pub fn xz_uncompressed_size(file: &File, len: u64) -> io::Result<Option<(u64, u32)>> {
    let mut streams = 0;
    let mut pos = len;
    let mut total = 0u64;
    let mut word = [0u8; 4];
    loop {
        // Stream padding: multiples of four zero bytes.
        while pos >= 4 {
            file.read_exact_at(&mut word, pos - 4)?;
            if word != [0; 4] {
                break;
            }
            pos -= 4;
        }
        if pos == 0 {
            return Ok((streams > 0).then_some((total, streams)));
        }
        if pos < 24 {
            return Ok(None);
        }
        let mut footer = [0u8; 12];
        file.read_exact_at(&mut footer, pos - 12)?;
        if footer[10..] != *b"YZ" {
            return Ok(None);
        }
        let index_size = (u64::from(u32::from_le_bytes(footer[4..8].try_into().unwrap())) + 1) * 4;
        let Some(index_start) = (pos - 12).checked_sub(index_size) else {
            return Ok(None);
        };
        let mut index = vec![0u8; index_size as usize];
        file.read_exact_at(&mut index, index_start)?;
        if index.first() != Some(&0) {
            return Ok(None);
        }
        let mut i = 1;
        let mut varint = || crate::compress::xz::varint(&index, &mut i);
        let Some(records) = varint() else {
            return Ok(None);
        };
        let mut blocks = 0u64;
        for _ in 0..records {
            let (Some(unpadded), Some(uncompressed)) = (varint(), varint()) else {
                return Ok(None);
            };
            blocks += unpadded.div_ceil(4) * 4;
            total += uncompressed;
        }
        let Some(start) = index_start.checked_sub(blocks + 12) else {
            return Ok(None);
        };
        let mut header = [0u8; 6];
        file.read_exact_at(&mut header, start)?;
        if header != [0xFD, b'7', b'z', b'X', b'Z', 0] {
            return Ok(None);
        }
        pos = start;
        streams += 1;
    }
}
