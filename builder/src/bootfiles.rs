//! What picluster writes onto a node's boot partition, and the writing itself.
//! The list is computed once per node and used both by `plan` (to show it) and
//! by `build` (to write it), so the two cannot disagree.

use std::fs::File;
use std::path::PathBuf;

use picluster_profiles::bundle::boot_files;
use picluster_profiles::{Cluster, Media, Node, NodeBundle, NodeSecrets, cmdline, render};

use crate::base::BaseImage;
use crate::bootfs::{BootFs, BootFsError};
use crate::partition::Extent;
use crate::release::{self, FirstBoot};

/// Where a boot file's bytes come from.
#[derive(Debug, Clone)]
pub enum Content {
    Bytes(Vec<u8>),
    /// A verified file (agent, K3s): copied as is.
    File {
        path: PathBuf,
        size: u64,
        sha256: String,
    },
    /// Known only at build time (plan without downloads).
    Pending(String),
}

#[derive(Debug, Clone)]
pub struct BootFile {
    pub name: String,
    pub content: Content,
    /// Holds secrets: never shown, removed from the card by the agent's stage 1.
    pub secret: bool,
    pub what: &'static str,
}

impl BootFile {
    fn bytes(name: &str, what: &'static str, secret: bool, data: Vec<u8>) -> BootFile {
        BootFile {
            name: name.to_string(),
            content: Content::Bytes(data),
            secret,
            what,
        }
    }

    pub fn size(&self) -> Option<u64> {
        match &self.content {
            Content::Bytes(b) => Some(b.len() as u64),
            Content::File { size, .. } => Some(*size),
            Content::Pending(_) => None,
        }
    }
}

/// What picluster adds to a base's cmdline.txt: `cloud-init=disabled` first
/// when the base's first boot is cloud-init's (so stage 1 is the only writer
/// of the identity), then the cluster's arguments.
pub fn added_kernel_args(cluster: &Cluster, first_boot: Option<FirstBoot>) -> Vec<String> {
    let mut add = Vec::new();
    if first_boot == Some(FirstBoot::CloudInit) {
        add.push(release::CLOUD_INIT_OFF.to_string());
    }
    add.extend(render::added_kernel_args(cluster));
    add
}

/// The base's cmdline.txt with [`added_kernel_args`] appended; a cloud-init
/// base also loses the `ds=nocloud…` Imager adds.
pub fn patched_cmdline(base: &str, cluster: &Cluster, first_boot: Option<FirstBoot>) -> String {
    let mut line = base.to_string();
    if first_boot == Some(FirstBoot::CloudInit) {
        let imager: Vec<String> = cmdline::tokens(base)
            .into_iter()
            .filter(|t| t.starts_with(release::IMAGER_DATASOURCE))
            .collect();
        line = cmdline::remove(&line, &imager);
    }
    cmdline::append(&line, &added_kernel_args(cluster, first_boot))
}

const CONFIG_MARK: &str = "# --- picluster";

/// The base's config.txt with picluster's block appended (unchanged when the
/// node needs nothing).
pub fn patched_config_txt(base: &str, cluster: &Cluster, node: &Node) -> String {
    let mut block = String::new();
    if cluster.image.pi5_4k_pages {
        block.push_str(
            "[pi5]\n# 4 KiB memory pages: some container images (jemalloc) fail on the\n\
             # 16 KiB-page kernel_2712.img the Pi 5 boots by default.\nkernel=kernel8.img\n[all]\n",
        );
    }
    if node.media == Media::Nvme {
        block.push_str(
            "# NVMe: enable the Pi 5's external PCIe connector. Booting from NVMe also\n\
             # needs BOOT_ORDER in the bootloader EEPROM (see README, \"NVMe nodes\").\n\
             dtparam=pciex1\n",
        );
    }
    for line in &cluster.image.extra_config_txt {
        block.push_str(line);
        block.push('\n');
    }
    if block.is_empty() {
        return base.to_string();
    }
    // Rebuilding from a patched image must not stack blocks.
    let kept = base
        .find(CONFIG_MARK)
        .map_or(base, |i| &base[..i])
        .trim_end();
    format!("{kept}\n\n{CONFIG_MARK} (node {}) ---\n{block}", node.name)
}

/// The verified agent and K3s files, or what plan shows in their place.
#[derive(Debug, Clone)]
pub struct Payload {
    pub agent: Content,
    pub k3s: Content,
    pub airgap: Option<Content>,
}

/// Every file picluster writes to the node's boot partition, in writing order
/// (fixed, so images are reproducible).
pub fn boot_files(
    base: Option<&BaseImage>,
    cluster: &Cluster,
    node: &Node,
    bundle: &NodeBundle,
    secrets: &NodeSecrets,
    payload: &Payload,
) -> Vec<BootFile> {
    let first_boot = base.map(BaseImage::first_boot);
    let mut files = vec![
        BootFile::bytes(
            boot_files::CMDLINE,
            "kernel command line (cgroups, stage 1)",
            false,
            patched_cmdline(base.map_or("", |b| &b.cmdline), cluster, first_boot).into_bytes(),
        ),
        BootFile::bytes(
            boot_files::CONFIG,
            "firmware settings",
            false,
            patched_config_txt(base.map_or("", |b| &b.config_txt), cluster, node).into_bytes(),
        ),
        BootFile::bytes(
            boot_files::SSH,
            "enables sshd (Raspberry Pi OS)",
            false,
            Vec::new(),
        ),
    ];
    // The base's cloud-init seed, overwritten in place (same names, so
    // nothing else on the partition moves).
    if first_boot == Some(FirstBoot::CloudInit) {
        for name in base.map(BaseImage::seed_files).unwrap_or_default() {
            if let Some(text) = release::inert_seed(&name, &node.name) {
                files.push(BootFile::bytes(
                    &name,
                    "cloud-init seed, made inert (cloud-init is off)",
                    false,
                    text.into_bytes(),
                ));
            }
        }
    }
    if let Some(hash) = &cluster.access.password_hash {
        files.push(BootFile::bytes(
            boot_files::USERCONF,
            "user and password hash (Raspberry Pi OS)",
            true,
            format!("{}:{hash}\n", cluster.access.user).into_bytes(),
        ));
    }
    files.push(BootFile {
        name: boot_files::AGENT.into(),
        content: payload.agent.clone(),
        secret: false,
        what: "node agent (aarch64)",
    });
    files.push(BootFile {
        name: boot_files::K3S_BINARY.into(),
        content: payload.k3s.clone(),
        secret: false,
        what: "K3s binary",
    });
    if let Some(a) = &payload.airgap {
        files.push(BootFile {
            name: boot_files::K3S_AIRGAP.into(),
            content: a.clone(),
            secret: false,
            what: "K3s air-gap images",
        });
    }
    files.push(BootFile::bytes(
        boot_files::BUNDLE,
        "node bundle (identity, files, plan)",
        false,
        to_json(bundle),
    ));
    files.push(BootFile::bytes(
        boot_files::SECRETS,
        "node secrets (moved off the card at first boot)",
        true,
        to_json(secrets),
    ));
    files
}

fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    let mut s = serde_json::to_vec_pretty(v).expect("bundle serialises");
    s.push(b'\n');
    s
}

#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error(transparent)]
    BootFs(#[from] BootFsError),
    #[error("cannot read {}", path.display())]
    Source {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not known yet (internal error: plan-only content reached the builder)")]
    Pending(String),
}

/// Write `files` onto the FAT partition at `boot` of `image`.
pub fn write(image: &File, boot: Extent, files: &[BootFile], epoch: i64) -> Result<(), PatchError> {
    let fs = BootFs::open(image, boot, epoch)?;
    for f in files {
        match &f.content {
            Content::Bytes(b) => fs.write(&f.name, b)?,
            Content::File { path, size, .. } => {
                let mut src = File::open(path).map_err(|source| PatchError::Source {
                    path: path.clone(),
                    source,
                })?;
                fs.write_from(&f.name, *size, &mut src)?;
            }
            Content::Pending(what) => return Err(PatchError::Pending(what.clone())),
        }
    }
    fs.close()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cluster() -> Cluster {
        Cluster::parse(Path::new("c.toml"), picluster_profiles::SAMPLE_CLUSTER).unwrap()
    }

    #[test]
    fn config_txt_gains_pi5_kernel_and_nvme_for_nvme_nodes() {
        let c = cluster();
        let base = "arm_64bit=1\n\n[all]\n";
        let master = patched_config_txt(base, &c, &c.nodes[0]);
        assert!(master.starts_with("arm_64bit=1\n\n[all]\n"));
        assert!(master.contains("[pi5]\n") && master.contains("kernel=kernel8.img\n[all]\n"));
        assert!(master.contains("dtparam=pciex1\n"));
        let worker = patched_config_txt(base, &c, &c.nodes[1]);
        assert!(!worker.contains("pciex1"));
        // Idempotent when applied to an already patched file.
        assert_eq!(patched_config_txt(&master, &c, &c.nodes[0]), master);
    }

    #[test]
    fn cmdline_keeps_every_token_and_never_says_firstboot_in_what_it_adds() {
        let c = cluster();
        let base = "console=serial0,115200 console=tty1 root=PARTUUID=6c586e13-02 rootfstype=ext4 fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n";
        let out = patched_cmdline(base, &c, Some(FirstBoot::SysMods));
        assert!(out.starts_with(base.trim_end()));
        assert_eq!(out.lines().count(), 1);
        let added = &out[base.trim_end().len()..];
        assert!(!added.contains("firstboot"), "{added}");
        assert!(added.contains(" cgroup_enable=memory systemd.run="));
    }

    #[test]
    fn a_cloud_init_base_gets_it_turned_off_and_keeps_its_resize() {
        let c = cluster();
        // pi-gen trixie stage1/00-boot-files/files/cmdline.txt, plus what
        // Imager 2.x appends (rpi-imager src/downloadthread.cpp).
        let base = "console=serial0,115200 console=tty1 root=PARTUUID=6c586e13-02 rootfstype=ext4 fsck.repair=yes rootwait resize ds=nocloud;i=rpi-imager-1764000000000\n";
        let out = patched_cmdline(base, &c, Some(FirstBoot::CloudInit));
        let toks = cmdline::tokens(&out);
        assert!(toks.iter().any(|t| t == "resize"), "{out}");
        assert!(toks.iter().any(|t| t == "cloud-init=disabled"), "{out}");
        assert!(!out.contains("ds=nocloud"), "{out}");
        assert!(
            !out.contains("init=/usr/lib/raspberrypi-sys-mods/firstboot"),
            "{out}"
        );
        // Building again from such an image changes nothing.
        assert_eq!(
            patched_cmdline(&out, &c, Some(FirstBoot::CloudInitOff)),
            out
        );
        // Bookworm bases are left as they were.
        let plain = patched_cmdline(base, &c, Some(FirstBoot::SysMods));
        assert!(!plain.contains("cloud-init=disabled") && plain.contains("ds=nocloud"));
    }
}
