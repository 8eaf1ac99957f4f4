//! Opening a base image and checking it is what picluster can build on:
//! Raspberry Pi OS Bookworm or Trixie for arm64 (DOS table, FAT32 p1, ext4 p2).

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::bootfs::{BootEntry, BootFs, BootFsError};
use crate::partition::{self, Extent, Table, TableError, TableKind};
use crate::release::{self, FirstBoot};
use crate::rootfs::{self, RootfsError, RootfsInfo};

/// A base image and what it contains.
#[derive(Debug, Clone, Serialize)]
pub struct BaseImage {
    pub path: PathBuf,
    pub size: u64,
    pub table: Table,
    pub boot: Extent,
    pub root: Extent,
    pub rootfs: RootfsInfo,
    pub boot_label: String,
    pub boot_files: Vec<BootEntry>,
    pub boot_free: u64,
    pub cmdline: String,
    pub config_txt: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    #[error("cannot open base image {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("{}: not a Raspberry Pi OS image: {reason}", path.display())]
    Shape { path: PathBuf, reason: String },
    #[error("{}", path.display())]
    Rootfs {
        path: PathBuf,
        #[source]
        source: RootfsError,
    },
    #[error("{}", path.display())]
    Bootfs {
        path: PathBuf,
        #[source]
        source: BootFsError,
    },
    #[error(
        "{}: the root filesystem is {pretty}, not Debian bookworm or trixie; use [image] base = \"raspios-bookworm-arm64-lite\" (or \"raspios-trixie-arm64-lite\"; `picluster images` lists them)",
        path.display()
    )]
    Release { path: PathBuf, pretty: String },
    #[error(
        "{}: the userland is {arch} (read from {probe}), not arm64; use the 64-bit (arm64) Raspberry Pi OS Lite image",
        path.display()
    )]
    Arch {
        path: PathBuf,
        arch: String,
        probe: String,
    },
}

/// Read an image's layout, boot files and OS release, without judging them.
pub fn inspect(path: &Path) -> Result<BaseImage, BaseError> {
    let file = File::open(path).map_err(|source| BaseError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    inspect_file(&file, path)
}

/// As [`inspect`], for an already open image.
pub fn inspect_file(file: &File, path: &Path) -> Result<BaseImage, BaseError> {
    let shape = |reason: String| BaseError::Shape {
        path: path.to_path_buf(),
        reason,
    };
    let size = file
        .metadata()
        .map_err(|source| BaseError::Open {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    let table = partition::read_table(file, path, size)?;
    if table.kind != TableKind::Dos {
        return Err(shape(
            "it has a GPT partition table; Raspberry Pi OS images use a DOS (MBR) table".into(),
        ));
    }
    let p1 = table.partitions.iter().find(|p| p.number == 1);
    let p2 = table.partitions.iter().find(|p| p.number == 2);
    let (Some(p1), Some(p2)) = (p1, p2) else {
        return Err(shape(format!(
            "expected two partitions (FAT32 boot, ext4 root), found {}",
            table.partitions.len()
        )));
    };
    if !matches!(p1.type_id, 0x0b | 0x0c) {
        return Err(shape(format!(
            "partition 1 is {}, expected FAT32 (type 0x0c)",
            p1.type_name()
        )));
    }
    if p2.type_id != 0x83 {
        return Err(shape(format!(
            "partition 2 is {}, expected Linux (type 0x83)",
            p2.type_name()
        )));
    }
    if p1.extent.end() > p2.extent.start {
        return Err(shape("partition 1 overlaps partition 2".into()));
    }
    let (boot, root) = (p1.extent, p2.extent);
    let bootfs_err = |source| BaseError::Bootfs {
        path: path.to_path_buf(),
        source,
    };
    let fs = BootFs::open(file, boot, 0).map_err(bootfs_err)?;
    let boot_label = fs.label();
    let boot_files = fs.list().map_err(bootfs_err)?;
    let boot_free = fs.free_bytes().map_err(bootfs_err)?;
    let cmdline = fs.read_string("cmdline.txt").map_err(bootfs_err)?;
    let config_txt = fs.read_string("config.txt").map_err(bootfs_err)?;
    drop(fs); // read-only use: nothing to flush
    let (Some(cmdline), Some(config_txt)) = (cmdline, config_txt) else {
        return Err(shape(
            "the boot partition has no cmdline.txt or config.txt".into(),
        ));
    };
    let rootfs = rootfs::inspect(file, root).map_err(|source| BaseError::Rootfs {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(BaseImage {
        path: path.to_path_buf(),
        size,
        table,
        boot,
        root,
        rootfs,
        boot_label,
        boot_files,
        boot_free,
        cmdline,
        config_txt,
    })
}

impl BaseImage {
    /// How the base boots first ([`FirstBoot::SysMods`] or [`FirstBoot::CloudInit`]).
    pub fn first_boot(&self) -> FirstBoot {
        release::first_boot(
            self.rootfs.codename(),
            self.rootfs.cloud_init,
            &self.cmdline,
        )
    }

    /// cloud-init seed files on the boot partition.
    pub fn seed_files(&self) -> Vec<String> {
        release::seed_files(&self.boot_files)
    }

    /// Refuse anything but Raspberry Pi OS Bookworm or Trixie for arm64.
    pub fn validate(&self) -> Result<(), BaseError> {
        let path = self.path.clone();
        let pretty = self.rootfs.pretty_name().to_string();
        if !matches!(self.rootfs.codename(), "bookworm" | "trixie") {
            return Err(BaseError::Release { path, pretty });
        }
        if self.rootfs.arch != "arm64" {
            return Err(BaseError::Arch {
                path,
                arch: self.rootfs.arch.clone(),
                probe: self.rootfs.arch_probe.clone(),
            });
        }
        if !self.cmdline.contains("root=") {
            return Err(BaseError::Shape {
                path,
                reason: "cmdline.txt names no root= device".into(),
            });
        }
        Ok(())
    }
}
