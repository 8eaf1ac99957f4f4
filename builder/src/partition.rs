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
    #[error("cannot read the partition table of {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} has no partition table (no 0x55AA boot signature in its first sector); is it a disk image?", .0.display())]
    Missing(PathBuf),
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
#[derive(Debug)]
struct SharedReader {
    file: File,
    pos: u64,
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
            std::io::SeekFrom::End(d) => self.file.metadata()?.len().saturating_add_signed(d),
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

fn read_gpt(file: &File, path: &Path, size: u64) -> Result<Table, TableError> {
    let err = |reason: String| TableError::Gpt {
        path: path.to_path_buf(),
        reason,
    };
    let dev = SharedReader {
        file: file.try_clone().map_err(|e| err(e.to_string()))?,
        pos: 0,
    };
    let disk = gpt::GptConfig::new()
        .writable(false)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .open_from_device(dev)
        .map_err(|e| err(e.to_string()))?;
    let mut partitions = Vec::new();
    for (number, p) in disk.partitions() {
        let extent = Extent {
            start: p.first_lba * SECTOR,
            len: (p.last_lba + 1 - p.first_lba) * SECTOR,
        };
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
