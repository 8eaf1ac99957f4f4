//! `picluster inspect IMAGE`: what is in an image: partition table, OS release
//! and architecture, boot files, and the node identity picluster embedded (never
//! its secrets).

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use picluster_profiles::NodeBundle;
use picluster_profiles::bundle::boot_files;
use serde::Serialize;

use crate::agent;
use crate::bootfs::{BootEntry, BootFs};
use crate::decompress::{self, Compression};
use crate::partition::{self, Partition, Table, TableKind};
use crate::progress;
use crate::release::{self, FirstBoot};
use crate::rootfs;

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// A disk image (.img, or .img.xz / .img.gz / .img.zst, decompressed to a temporary file).
    pub image: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// What `inspect --json` prints (sizes and offsets in bytes, times as Unix
/// seconds and as UTC text). A field that changes meaning or goes away bumps
/// `schema_version`; builder/tests/json_shape.rs pins the shape.
#[derive(Debug, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub image: String,
    pub size: u64,
    pub table: TableView,
    pub os: Option<Os>,
    pub boot: Option<Boot>,
    pub picluster: Option<Identity>,
    /// How the image boots first (needs both partitions readable).
    pub first_boot: Option<FirstBoot>,
    /// Parts that could not be read, with why.
    pub problems: Vec<String>,
}

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct TableView {
    /// `dos` or `gpt`.
    pub kind: TableKind,
    /// DOS disk identifier (`root=PARTUUID=<id>-02`), or the GPT disk GUID.
    pub disk_id: String,
    pub partitions: Vec<PartitionView>,
}

#[derive(Debug, Serialize)]
pub struct PartitionView {
    pub number: u32,
    /// What it holds, in words (`FAT32 (LBA)`, `Linux`, a GPT type name).
    #[serde(rename = "type")]
    pub type_name: String,
    /// DOS type byte (0 on GPT).
    pub type_id: u8,
    pub name: Option<String>,
    pub bootable: bool,
    pub start: u64,
    pub size: u64,
}

impl From<&Table> for TableView {
    fn from(t: &Table) -> TableView {
        TableView {
            kind: t.kind,
            disk_id: t.disk_id.clone(),
            partitions: t
                .partitions
                .iter()
                .map(|p| PartitionView {
                    number: p.number,
                    type_name: p.type_name(),
                    type_id: p.type_id,
                    name: p.name.clone(),
                    bootable: p.bootable,
                    start: p.extent.start,
                    size: p.extent.len,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Os {
    /// `/etc/os-release` ID, VERSION_ID, VERSION_CODENAME and PRETTY_NAME.
    pub id: String,
    pub version_id: String,
    pub codename: String,
    pub pretty_name: String,
    /// CPU architecture of the userland (`aarch64`).
    pub arch: String,
    /// cloud-init is installed.
    pub cloud_init: bool,
}

#[derive(Debug, Serialize)]
pub struct Boot {
    pub label: String,
    pub free: u64,
    pub files: Vec<BootEntry>,
    pub cmdline: Option<String>,
    /// cloud-init seed files at its root.
    pub cloud_init_seed: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Identity {
    pub cluster: String,
    pub node: String,
    pub role: String,
    pub init_server: bool,
    pub address: String,
    pub server_url: String,
    pub user: String,
    pub k3s_version: String,
    pub picluster_version: String,
    pub agent_version: Option<String>,
    pub built_at: i64,
    pub built_at_utc: String,
    /// The secrets file is still on the card (the node has not booted yet).
    pub secrets_on_card: bool,
}

pub fn run(args: &InspectArgs) -> Result<()> {
    let report = inspect(&args.image)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text(&report));
    }
    Ok(())
}

pub fn inspect(path: &Path) -> Result<Report> {
    let compression =
        Compression::detect(path).with_context(|| format!("cannot read {}", path.display()))?;
    let _tmp;
    let raw_path = if compression == Compression::None {
        path.to_path_buf()
    } else {
        let tmp = tempfile::NamedTempFile::new().context("cannot create a temporary file")?;
        let mut r = decompress::open(path, "decompress")?;
        decompress::write_sparse(&mut r, tmp.as_file())
            .with_context(|| format!("cannot decompress {}", path.display()))?;
        let p = tmp.path().to_path_buf();
        _tmp = tmp;
        p
    };
    let file = File::open(&raw_path).with_context(|| format!("cannot open {}", path.display()))?;
    let size = file.metadata()?.len();
    let table = partition::read_table(&file, path, size)?;
    let mut problems = Vec::new();
    let by_type =
        |pred: fn(&Partition) -> bool| table.partitions.iter().find(|p| pred(p)).map(|p| p.extent);
    let boot_ext = by_type(|p| matches!(p.type_id, 0x0b | 0x0c | 0x0e | 0x06));
    let root_ext = by_type(|p| p.type_id == 0x83);

    let os = root_ext.and_then(|ext| match rootfs::inspect(&file, ext) {
        Ok(r) => Some(Os {
            id: r.id().to_string(),
            version_id: r.os_release.get("VERSION_ID").cloned().unwrap_or_default(),
            codename: r.codename().to_string(),
            pretty_name: r.pretty_name().to_string(),
            arch: r.arch.clone(),
            cloud_init: r.cloud_init,
        }),
        Err(e) => {
            problems.push(format!("root partition: {e}"));
            None
        }
    });
    let mut picluster = None;
    let boot = boot_ext.and_then(|ext| match BootFs::open(&file, ext, 0) {
        Ok(fs) => {
            let files = fs.list().unwrap_or_default();
            let read = |n: &str| fs.read(n).ok().flatten();
            if let Some(json) = read(boot_files::BUNDLE) {
                match serde_json::from_slice::<NodeBundle>(&json) {
                    Ok(b) => {
                        picluster = Some(Identity {
                            cluster: b.cluster.clone(),
                            node: b.node.name.clone(),
                            role: b.node.role.as_str().into(),
                            init_server: b.node.init_server,
                            address: format!("{}/{}", b.node.ip, b.node.prefix),
                            server_url: b.node.server_url.clone(),
                            user: b.user.name.clone(),
                            k3s_version: b.k3s.version.clone(),
                            picluster_version: b.picluster_version.clone(),
                            agent_version: read(boot_files::AGENT)
                                .and_then(|a| agent::version_of(&a)),
                            built_at: b.built_at,
                            built_at_utc: picluster_profiles::timefmt::utc(b.built_at),
                            secrets_on_card: files.iter().any(|f| f.name == boot_files::SECRETS),
                        })
                    }
                    Err(e) => problems.push(format!(
                        "{}: {}",
                        boot_files::BUNDLE,
                        picluster_profiles::error::json_error_redacted(&e)
                    )),
                }
            }
            Some(Boot {
                label: fs.label(),
                free: fs.free_bytes().unwrap_or(0),
                cmdline: read(boot_files::CMDLINE)
                    .map(|c| String::from_utf8_lossy(&c).trim_end().to_string()),
                cloud_init_seed: release::seed_files(&files),
                files,
            })
        }
        Err(e) => {
            problems.push(format!("boot partition: {e}"));
            None
        }
    });
    let first_boot = os.as_ref().zip(boot.as_ref()).map(|(o, b)| {
        release::first_boot(
            &o.codename,
            o.cloud_init,
            b.cmdline.as_deref().unwrap_or(""),
        )
    });
    Ok(Report {
        schema_version: SCHEMA_VERSION,
        image: path.display().to_string(),
        size,
        table: TableView::from(&table),
        os,
        boot,
        picluster,
        first_boot,
        problems,
    })
}

pub fn text(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "{}: {}", r.image, progress::size(r.size));
    let _ = writeln!(
        s,
        "partition table: {}, disk id {}",
        match r.table.kind {
            TableKind::Dos => "DOS (MBR)",
            TableKind::Gpt => "GPT",
        },
        r.table.disk_id
    );
    for p in &r.table.partitions {
        let _ = writeln!(
            s,
            "  p{}  start {:>10} B ({:>4} MiB)  size {:>10}  {}{}",
            p.number,
            p.start,
            p.start >> 20,
            progress::size(p.size),
            p.type_name,
            if p.bootable { "  boot" } else { "" }
        );
    }
    if let Some(os) = &r.os {
        // PRETTY_NAME usually names the codename already ("… 12 (bookworm)").
        let name = if os.pretty_name.contains(&os.codename) {
            os.pretty_name.clone()
        } else {
            format!("{} ({})", os.pretty_name, os.codename)
        };
        let _ = writeln!(s, "root filesystem: {name}, userland {}", os.arch);
    }
    if let Some(fb) = r.first_boot {
        let _ = writeln!(s, "first boot: {}", fb.describe());
    }
    if let Some(b) = &r.boot {
        let _ = writeln!(
            s,
            "boot partition \"{}\": {} free",
            b.label,
            progress::size(b.free)
        );
        if let Some(c) = &b.cmdline {
            let _ = writeln!(s, "  cmdline.txt: {c}");
        }
        for f in &b.files {
            let _ = writeln!(
                s,
                "  {:<36} {:>10}",
                if f.is_dir {
                    format!("{}/", f.name)
                } else {
                    f.name.clone()
                },
                if f.is_dir {
                    String::new()
                } else {
                    progress::size(f.size)
                }
            );
        }
    }
    match &r.picluster {
        Some(id) => {
            let _ = writeln!(s, "picluster node:");
            let _ = writeln!(s, "  cluster      {}", id.cluster);
            let _ = writeln!(
                s,
                "  node         {} ({}{})",
                id.node,
                id.role,
                if id.init_server {
                    ", initialises the cluster"
                } else {
                    ""
                }
            );
            let _ = writeln!(s, "  address      {}", id.address);
            let _ = writeln!(s, "  API server   {}", id.server_url);
            let _ = writeln!(s, "  user         {}", id.user);
            let _ = writeln!(s, "  K3s          {}", id.k3s_version);
            let _ = writeln!(
                s,
                "  agent        picluster-node {}",
                id.agent_version.as_deref().unwrap_or("(missing)")
            );
            let _ = writeln!(
                s,
                "  built by     picluster {} at {}",
                id.picluster_version, id.built_at_utc
            );
            let _ = writeln!(
                s,
                "  secrets      {}",
                if id.secrets_on_card {
                    "on the card (not booted yet)"
                } else {
                    "moved off the card"
                }
            );
        }
        None => {
            let _ = writeln!(s, "picluster node: none (not built by picluster)");
        }
    }
    for p in &r.problems {
        let _ = writeln!(s, "note: {p}");
    }
    s
}
