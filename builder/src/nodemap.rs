//! Block maps (`.bmap`) for node images without hashing the root filesystem
//! once per node: everything from the root partition's start to the end of
//! every node image is byte-identical to the base's, so those ranges and
//! their checksums are computed once per base and kept in the cache. A node's
//! own ranges come from its head (partition table and boot partition) alone,
//! so the map can be made before, or without, writing the node's root partition.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::bmap::{Bmap, BmapError};
use crate::partition::Extent;
use crate::usedblocks::{self, DEFAULT_BLOCK_SIZE};

/// The base's mapped ranges from its root partition's start to its end (the
/// root filesystem, and a backup GPT after it), with their checksums.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RootRanges {
    root_start: u64,
    root_len: u64,
    image_size: u64,
    /// (start, len, sha256 hex)
    tail: Vec<(u64, u64, String)>,
    #[serde(skip)]
    index: HashMap<(u64, u64), [u8; 32]>,
}

/// Split ranges that straddle `at` (the root partition's start), so that
/// ranges inside the rootfs never include boot-partition bytes.
pub fn split_at(ranges: &[Extent], at: u64) -> Vec<Extent> {
    let mut out = Vec::with_capacity(ranges.len() + 1);
    for r in ranges {
        if r.start < at && r.end() > at {
            out.push(Extent {
                start: r.start,
                len: at - r.start,
            });
            out.push(Extent {
                start: at,
                len: r.end() - at,
            });
        } else {
            out.push(*r);
        }
    }
    out
}

fn mapped(file: &File, path: &Path, size: u64, root: Extent) -> Result<Vec<Extent>, BmapError> {
    let used = usedblocks::compute_file(file, path, size, DEFAULT_BLOCK_SIZE)?;
    Ok(split_at(&used.ranges, root.start))
}

impl RootRanges {
    /// Read them from `cache_file`, or compute them from the base and save them there.
    pub fn load_or_compute(
        cache_file: &Path,
        base: &Path,
        root: Extent,
    ) -> Result<RootRanges, BmapError> {
        if let Ok(text) = std::fs::read_to_string(cache_file)
            && let Ok(r) = serde_json::from_str::<RootRanges>(&text)
            && (r.root_start, r.root_len) == (root.start, root.len)
            && std::fs::metadata(base).is_ok_and(|m| m.len() == r.image_size)
        {
            return Ok(r.indexed());
        }
        let io = |source| BmapError::Io {
            path: base.to_path_buf(),
            source,
        };
        let file = File::open(base).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        let tail: Vec<Extent> = mapped(&file, base, size, root)?
            .into_iter()
            .filter(|r| r.start >= root.start)
            .collect();
        let map = Bmap::from_ranges(&file, base, size, DEFAULT_BLOCK_SIZE, &tail)?;
        let tail = tail
            .iter()
            .zip(&map.ranges)
            .map(|(e, r)| {
                (
                    e.start,
                    e.len,
                    crate::digest::hex(&r.sha256.expect("computed")),
                )
            })
            .collect();
        let r = RootRanges {
            root_start: root.start,
            root_len: root.len,
            image_size: size,
            tail,
            index: HashMap::new(),
        };
        // Best effort: without the cache file the next build computes it again.
        let _ = crate::atomic::write(
            cache_file,
            serde_json::to_string(&r).unwrap_or_default().as_bytes(),
            0o644,
        );
        Ok(r.indexed())
    }

    fn indexed(mut self) -> RootRanges {
        self.index = self
            .tail
            .iter()
            .filter_map(|(s, l, h)| Some(((*s, *l), crate::digest::unhex(h)?)))
            .collect();
        self
    }

    /// The bmap of a node image built from this base. Only the image's
    /// head (before the root partition) is read: after it, the image may be
    /// the base's bytes or not written at all (a hole, when only the
    /// compressed artefact is made).
    pub fn node_bmap(&self, image: &File, path: &Path) -> Result<Bmap, BmapError> {
        let root = Extent {
            start: self.root_start,
            len: self.root_len,
        };
        let mut ranges: Vec<Extent> = mapped(image, path, self.image_size, root)?
            .into_iter()
            .filter(|r| r.end() <= root.start)
            .collect();
        ranges.extend(self.tail.iter().map(|(start, len, _)| Extent {
            start: *start,
            len: *len,
        }));
        Bmap::from_ranges_with(
            image,
            path,
            self.image_size,
            DEFAULT_BLOCK_SIZE,
            &ranges,
            &|e| self.index.get(&(e.start, e.len)).copied(),
        )
    }
}

/// Where a base's rootfs range checksums are cached.
pub fn cache_file(cache: &crate::cache::Cache, base_sha256: &str) -> PathBuf {
    cache
        .root()
        .join("bases")
        .join(format!("{base_sha256}.rootfs-ranges.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_straddling_the_root_start_are_split() {
        let r = [
            Extent { start: 0, len: 100 },
            Extent {
                start: 200,
                len: 100,
            },
            Extent {
                start: 400,
                len: 10,
            },
        ];
        let s = split_at(&r, 250);
        assert_eq!(s.len(), 4);
        assert_eq!(
            (s[1].start, s[1].len, s[2].start, s[2].len),
            (200, 50, 250, 50)
        );
        assert_eq!(
            split_at(&r, 200).len(),
            3,
            "a range starting at the boundary stays whole"
        );
    }
}
