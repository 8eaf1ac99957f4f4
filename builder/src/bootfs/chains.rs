//! Cluster chains of the boot partition's root directory and of every entry
//! in it, walked before fatfs touches them. fatfs 0.3.6 follows chains as the
//! FAT says: a directory whose chain loops (a cluster linked to itself) is an
//! endless directory, so listing it, looking a name up or creating a file in
//! it never ends; a cluster number of 0, 1 or past the volume underflows its
//! offset arithmetic. picluster only ever reads and writes the root directory
//! and the files in it, so checking those chains once, when the filesystem is
//! opened, bounds every walk fatfs does for it: each chain must end in an
//! end-of-chain mark, stay within the volume's clusters and share no cluster
//! with another (a visited set catches loops and cross-links in one pass, so
//! the walk itself is bounded by the number of clusters).

use std::io::{self, Read, Seek, SeekFrom};

use crate::region::CachedRegion;
use crate::usedblocks::Bpb;

/// FAT32 entries hold 28 bits; these are the end-of-chain and bad marks.
const ENTRY_MASK: u32 = 0x0FFF_FFFF;
const BAD: u32 = 0x0FFF_FFF7;
const END: u32 = 0x0FFF_FFF8;

fn corrupt(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

struct Walker<'a, 'f> {
    disk: &'a mut CachedRegion<'f>,
    bpb: Bpb,
    /// One bit per cluster number (2..clusters+2): already part of a chain.
    seen: Vec<u64>,
}

impl Walker<'_, '_> {
    fn read(&mut self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        self.disk.seek(SeekFrom::Start(pos))?;
        self.disk.read_exact(buf)
    }

    fn next(&mut self, cluster: u32) -> io::Result<u32> {
        let mut e = [0u8; 4];
        let fat = self.bpb.reserved * self.bpb.bytes_per_sector;
        self.read(fat + u64::from(cluster) * 4, &mut e)?;
        Ok(u32::from_le_bytes(e) & ENTRY_MASK)
    }

    /// Walk the chain from `first`; return its clusters in order (only for
    /// the root directory, whose content is read next).
    fn walk(&mut self, what: &str, first: u32, keep: bool) -> io::Result<Vec<u32>> {
        let limit = self.bpb.clusters + 2;
        let mut out = Vec::new();
        let mut c = first;
        loop {
            if c < 2 || u64::from(c) >= limit {
                return Err(corrupt(format!(
                    "{what}: its cluster chain reaches cluster {c}, outside the volume's clusters 2..{limit}"
                )));
            }
            let (word, bit) = ((c / 64) as usize, c % 64);
            if self.seen[word] >> bit & 1 == 1 {
                return Err(corrupt(format!(
                    "{what}: its cluster chain comes back to cluster {c} (a loop, or a cluster shared with another file)"
                )));
            }
            self.seen[word] |= 1 << bit;
            if keep {
                out.push(c);
            }
            match self.next(c)? {
                n if n >= END => return Ok(out),
                BAD => {
                    return Err(corrupt(format!(
                        "{what}: its cluster chain reaches cluster {c}, marked bad"
                    )));
                }
                0 => {
                    return Err(corrupt(format!(
                        "{what}: its cluster chain runs into free cluster {c} instead of ending"
                    )));
                }
                n => c = n,
            }
        }
    }
}

/// Check the chains of the FAT32 root directory and of each entry in it.
/// `boot` is the volume's first sector.
pub(super) fn check(disk: &mut CachedRegion<'_>, boot: &[u8]) -> io::Result<()> {
    let bpb = Bpb::parse(boot)
        .filter(|b| b.bits == 32)
        .ok_or_else(|| corrupt("its boot sector describes no consistent FAT32 layout".into()))?;
    let limit = bpb.clusters + 2;
    let cluster_bytes = bpb.cluster_bytes();
    let data = bpb.data_start();
    let mut w = Walker {
        disk,
        bpb,
        seen: vec![0; limit.div_ceil(64) as usize],
    };
    let root = u32::from_le_bytes(boot[0x2C..0x30].try_into().expect("4 bytes"));
    let clusters = w.walk("the root directory", root, true)?;
    let mut buf = vec![0u8; cluster_bytes as usize];
    for c in clusters {
        w.read(data + u64::from(c - 2) * cluster_bytes, &mut buf)?;
        for e in buf.chunks_exact(32) {
            match (e[0], e[11]) {
                (0, _) => return Ok(()),             // end of the directory
                (0xE5, _) => continue,               // deleted
                (_, 0x0F) => continue,               // long-name part
                (_, a) if a & 0x08 != 0 => continue, // volume label
                _ => {}
            }
            let first = u32::from(u16::from_le_bytes([e[20], e[21]])) << 16
                | u32::from(u16::from_le_bytes([e[26], e[27]]));
            let size = u32::from_le_bytes(e[28..32].try_into().expect("4 bytes"));
            let is_dir = e[11] & 0x10 != 0;
            if first == 0 {
                if size != 0 && !is_dir {
                    let name = String::from_utf8_lossy(&e[..11]).trim().to_string();
                    return Err(corrupt(format!(
                        "root entry {name:?} has {size} bytes but no clusters"
                    )));
                }
                continue;
            }
            let name = String::from_utf8_lossy(&e[..11]).trim().to_string();
            w.walk(&format!("root entry {name:?}"), first, false)?;
        }
    }
    Ok(())
}
