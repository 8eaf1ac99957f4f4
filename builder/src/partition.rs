//! The image's partition table. Raspberry Pi OS uses a DOS (MBR) table with a
//! FAT32 boot partition first and an ext4 root second; their offsets changed
//! between releases (4 MiB, then 8 MiB alignment), so they are always read,
//! never assumed.

use std::fs::File;
use std::io::{Cursor, Read, Seek};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub const SECTOR: u64 = 512;

/// A byte range of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Extent {
    pub start: u64,
    pub len: u64,
}

impl Extent {
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Partition {
    /// 1-based, as Linux numbers them (`p1`, `p2`).
    pub number: u32,
    /// DOS type byte (0x0c FAT32 LBA, 0x83 Linux), or 0 for GPT.
    pub type_id: u8,
    /// GPT type name, when the table is GPT.
    pub gpt_type: Option<String>,
    pub name: Option<String>,
    pub bootable: bool,
    pub extent: Extent,
}

impl Partition {
    pub fn type_name(&self) -> String {
        if let Some(t) = &self.gpt_type {
            return t.clone();
        }
        match self.type_id {
            0x0b => "FAT32 (CHS)".into(),
            0x0c => "FAT32 (LBA)".into(),
            0x0e => "FAT16 (LBA)".into(),
            0x06 => "FAT16".into(),
            0x83 => "Linux".into(),
            0x82 => "Linux swap".into(),
            0x05 | 0x0f => "Extended".into(),
            0xee => "GPT protective".into(),
            t => format!("type 0x{t:02x}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    Dos,
    Gpt,
}

#[derive(Debug, Clone, Serialize)]
pub struct Table {
    pub kind: TableKind,
    /// DOS disk identifier (`root=PARTUUID=<id>-02`), or the GPT disk GUID.
    pub disk_id: String,
    pub partitions: Vec<Partition>,
}

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    // The cause is printed after this, as the error chain (never twice).
    #[error("cannot read the partition table of {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} has no partition table (no 0x55AA boot signature in its first sector); is it a disk image?", .0.display())]
    Missing(PathBuf),
    #[error("{} is not a disk image: it holds {size} bytes, less than the first 512-byte sector that carries the partition table", path.display())]
    TooShort { path: PathBuf, size: u64 },
    #[error("{}: partition {number} ({start}..{end} bytes) extends past the end of the {size}-byte image; the image is truncated", path.display())]
    OutOfBounds {
        path: PathBuf,
        number: u32,
        start: u64,
        end: u64,
        size: u64,
    },
    #[error("{}: the GPT partition table cannot be read: {reason}", path.display())]
    Gpt { path: PathBuf, reason: String },
}

/// Read the partition table of an image (or a block device).
pub fn read_table(file: &File, path: &Path, size: u64) -> Result<Table, TableError> {
    let io = |source| TableError::Io {
        path: path.to_path_buf(),
        source,
    };
    if size < 512 {
        return Err(TableError::TooShort {
            path: path.to_path_buf(),
            size,
        });
    }
    let mut sector0 = [0u8; 512];
    file.read_exact_at(&mut sector0, 0).map_err(io)?;
    if sector0[510..] != [0x55, 0xAA] {
        return Err(TableError::Missing(path.to_path_buf()));
    }
    let header = mbrman::MBRHeader::read_from(&mut Cursor::new(&sector0[..]))
        .map_err(|e| io(std::io::Error::other(e.to_string())))?;
    let entries = [
        &header.partition_1,
        &header.partition_2,
        &header.partition_3,
        &header.partition_4,
    ];
    if entries.iter().any(|e| e.sys == 0xee) {
        return read_gpt(file, path, size);
    }
    let mut partitions = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if e.is_unused() {
            continue;
        }
        let p = Partition {
            number: i as u32 + 1,
            type_id: e.sys,
            gpt_type: None,
            name: None,
            bootable: e.boot == 0x80,
            extent: Extent {
                start: u64::from(e.starting_lba) * SECTOR,
                len: u64::from(e.sectors) * SECTOR,
            },
        };
        if p.extent.end() > size {
            return Err(TableError::OutOfBounds {
                path: path.to_path_buf(),
                number: p.number,
                start: p.extent.start,
                end: p.extent.end(),
                size,
            });
        }
        partitions.push(p);
    }
    Ok(Table {
        kind: TableKind::Dos,
        disk_id: format!("{:08x}", u32::from_le_bytes(header.disk_signature)),
        partitions,
    })
}

/// Read/Seek over a shared file, for the gpt crate (which wants a device object).
/// `size` is the disk's length: a block device's metadata says 0.
#[derive(Debug)]
struct SharedReader {
    file: File,
    pos: u64,
    size: u64,
}

impl Read for SharedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for SharedReader {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        self.pos = match to {
            std::io::SeekFrom::Start(n) => n,
            std::io::SeekFrom::End(d) => self.size.saturating_add_signed(d),
            std::io::SeekFrom::Current(d) => self.pos.saturating_add_signed(d),
        };
        Ok(self.pos)
    }
}

impl std::io::Write for SharedReader {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other("read-only"))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The largest partition entry array read: 8192 entries of 128 bytes. Every
/// partitioning tool writes 128 entries (16 KiB); the bound keeps a crafted
/// entry count from making the gpt crate allocate gigabytes.
const MAX_GPT_ENTRIES_BYTES: u64 = 1 << 20;

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

/// Check the primary GPT header (LBA 1) and its entry array before the gpt
/// crate sees them: the crate asserts on entry sizes other than 128 and
/// allocates the whole array from the header's counts. The checks are the
/// Linux kernel's `is_gpt_valid` (block/partitions/efi.c: signature, header
/// CRC32, my_lba, 128-byte entries, usable LBAs on the disk, entry array CRC32)
/// plus bounds on every LBA and count, so that once they pass the crate takes
/// this header (it only falls back to the backup when the primary fails its
/// own, weaker, checks).
fn check_gpt(file: &File, size: u64) -> Result<(), String> {
    let sectors = size / SECTOR;
    if sectors < 3 {
        return Err(format!("the disk is only {size} bytes"));
    }
    let mut h = [0u8; SECTOR as usize];
    file.read_exact_at(&mut h, SECTOR)
        .map_err(|e| format!("cannot read LBA 1: {e}"))?;
    if &h[..8] != b"EFI PART" {
        return Err(
            "the protective MBR announces a GPT but LBA 1 holds no GPT header (no \"EFI PART\" signature)".into(),
        );
    }
    // Header size: UEFI allows 92..=block size, every tool writes 92, and the
    // gpt crate checks the CRC over 92 bytes only.
    let header_size = le32(&h, 12);
    if header_size != 92 {
        return Err(format!(
            "the GPT header size is {header_size} bytes; picluster reads 92-byte headers (what every partitioning tool writes)"
        ));
    }
    let stored = le32(&h, 16);
    let mut zeroed = h;
    zeroed[16..20].fill(0);
    let computed = crc32fast::hash(&zeroed[..92]);
    if stored != computed {
        return Err(format!(
            "the GPT header CRC32 is {stored:08x} but the header hashes to {computed:08x}: the header is corrupt"
        ));
    }
    if le64(&h, 24) != 1 {
        return Err(format!(
            "the primary GPT header says it is at LBA {}, not 1",
            le64(&h, 24)
        ));
    }
    let entry_size = le32(&h, 84);
    if entry_size != 128 {
        return Err(format!(
            "the GPT partition entries are {entry_size} bytes; UEFI allows 128 × 2^n but picluster, like the Linux kernel, reads only 128-byte entries"
        ));
    }
    let (first_usable, last_usable) = (le64(&h, 40), le64(&h, 48));
    if first_usable > last_usable || last_usable >= sectors {
        return Err(format!(
            "the GPT's usable sectors {first_usable}..={last_usable} are not on the {sectors}-sector disk"
        ));
    }
    let count = u64::from(le32(&h, 80));
    let entries_lba = le64(&h, 72);
    let entries_len = count * u64::from(entry_size);
    if entries_len > MAX_GPT_ENTRIES_BYTES {
        return Err(format!(
            "the GPT lists {count} partition entries, more than the {} picluster reads",
            MAX_GPT_ENTRIES_BYTES / 128
        ));
    }
    let entries_start = entries_lba
        .checked_mul(SECTOR)
        .filter(|s| entries_lba >= 2 && s.checked_add(entries_len).is_some_and(|e| e <= size))
        .ok_or_else(|| {
            format!(
                "the GPT partition entries ({count} at LBA {entries_lba}) are not on the {sectors}-sector disk"
            )
        })?;
    let mut entries = vec![0u8; entries_len as usize];
    file.read_exact_at(&mut entries, entries_start)
        .map_err(|e| format!("cannot read the GPT partition entries: {e}"))?;
    let (stored, computed) = (le32(&h, 88), crc32fast::hash(&entries));
    if stored != computed {
        return Err(format!(
            "the GPT partition entries' CRC32 is {stored:08x} but they hash to {computed:08x}: the table is corrupt"
        ));
    }
    Ok(())
}

fn read_gpt(file: &File, path: &Path, size: u64) -> Result<Table, TableError> {
    let err = |reason: String| TableError::Gpt {
        path: path.to_path_buf(),
        reason,
    };
    check_gpt(file, size).map_err(err)?;
    let dev = SharedReader {
        file: file.try_clone().map_err(|e| err(e.to_string()))?,
        pos: 0,
        size,
    };
    let disk = gpt::GptConfig::new()
        .writable(false)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .open_from_device(dev)
        .map_err(|e| err(e.to_string()))?;
    let mut partitions = Vec::new();
    for (number, p) in disk.partitions() {
        // Entries are the disk's word: check before multiplying.
        let extent = (p.first_lba <= p.last_lba)
            .then(|| {
                let start = p.first_lba.checked_mul(SECTOR)?;
                let len = (p.last_lba - p.first_lba).checked_add(1)?.checked_mul(SECTOR)?;
                start.checked_add(len)?;
                Some(Extent { start, len })
            })
            .flatten()
            .ok_or_else(|| {
                err(format!(
                    "partition {number} runs from sector {} to sector {}, which is not a range of the disk",
                    p.first_lba, p.last_lba
                ))
            })?;
        if extent.end() > size {
            return Err(TableError::OutOfBounds {
                path: path.to_path_buf(),
                number: *number,
                start: extent.start,
                end: extent.end(),
                size,
            });
        }
        partitions.push(Partition {
            number: *number,
            type_id: 0,
            gpt_type: Some(format!(
                "{:?} {}",
                p.part_type_guid.os, p.part_type_guid.guid
            )),
            name: Some(p.name.clone()).filter(|n| !n.is_empty()),
            bootable: false,
            extent,
        });
    }
    Ok(Table {
        kind: TableKind::Gpt,
        disk_id: disk.guid().to_string(),
        partitions,
    })
}
