//! The node bundle: the contract between the workstation (`picluster build`)
//! and the node agent (`picluster-node`). The builder renders every file a node
//! receives; the agent executes the plan it is handed. Data flows one way.
//!
//! On the FAT boot partition everything sits at the root (the fatfs crate writes
//! directories that `fsck.vfat` rejects), under the names in [`boot_files`].
//! Nothing named here contains the substring `firstboot`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::cluster::{Media, Role};

/// Bumped whenever a field changes meaning; the agent refuses other formats.
pub const BUNDLE_FORMAT: u32 = 1;

/// Where Raspberry Pi OS Bookworm mounts the boot partition.
pub const BOOT_MOUNT: &str = "/boot/firmware";

/// File names at the root of the boot partition.
pub mod boot_files {
    /// The node agent, a static aarch64 binary.
    pub const AGENT: &str = "picluster-node";
    /// [`super::NodeBundle`] as JSON (no secrets; stays on the card).
    pub const BUNDLE: &str = "picluster-node.json";
    /// [`super::NodeSecrets`] as JSON; stage 1 moves it into the rootfs and scrubs it.
    pub const SECRETS: &str = "picluster-secrets.json";
    /// The pinned K3s binary.
    pub const K3S_BINARY: &str = "k3s-arm64";
    /// Optional air-gap image archive.
    pub const K3S_AIRGAP: &str = "k3s-airgap-images-arm64.tar.zst";
    /// The agent's log of stage 1, readable by pulling the card.
    pub const LOG: &str = "picluster-node.log";
    /// How many times stage 1 has failed on this card (bounded retries).
    pub const STAGE1_TRIES: &str = "picluster-stage1-tries";
    /// Raspberry Pi OS's own switches.
    pub const SSH: &str = "ssh";
    pub const USERCONF: &str = "userconf.txt";
    pub const CMDLINE: &str = "cmdline.txt";
    pub const CONFIG: &str = "config.txt";
}

/// Paths on the node.
pub mod node_paths {
    pub const CONFIG_DIR: &str = "/etc/picluster";
    /// The bundle, copied off the boot partition by stage 1.
    pub const BUNDLE: &str = "/etc/picluster/node.json";
    /// The secrets, moved off the boot partition by stage 1 (root, 0600).
    pub const SECRETS: &str = "/etc/picluster/secrets.json";
    pub const STATE_DIR: &str = "/var/lib/picluster";
    /// The step journal.
    pub const JOURNAL: &str = "/var/lib/picluster/state.json";
    pub const AGENT: &str = "/usr/local/sbin/picluster-node";
    pub const AGENT_UNIT: &str = "picluster-node.service";
    pub const K3S_BINARY: &str = "/usr/local/bin/k3s";
    pub const K3S_CONFIG: &str = "/etc/rancher/k3s/config.yaml";
    pub const NODE_PASSWORD: &str = "/etc/rancher/node/password";
    pub const AIRGAP_DIR: &str = "/var/lib/rancher/k3s/agent/images";
    pub const MANIFESTS_DIR: &str = "/var/lib/rancher/k3s/server/manifests";
}

/// Annotations the node agent sets on its own Node object once it has
/// registered, and `picluster status` reads from the workstation.
pub mod annotations {
    /// The last first-boot step the agent finished (or what failed).
    pub const STEP: &str = "picluster.io/step";
    /// The agent's version.
    pub const AGENT_VERSION: &str = "picluster.io/agent-version";
}

/// A Unix permission mode, written as an octal string ("0600") in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mode(pub u32);

impl fmt::Debug for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl Serialize for Mode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        u32::from_str_radix(&s, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .map(Mode)
            .ok_or_else(|| serde::de::Error::custom(format!("\"{s}\" is not an octal file mode")))
    }
}

/// When the agent writes a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Stage 1: no network, before the first normal boot.
    Stage1,
    /// Stage 2, before K3s first starts (config.yaml, node password, units).
    BeforeK3s,
    /// Stage 2, once the node is Ready (data-platform manifests, first server only).
    AfterReady,
}

/// One file the agent writes on the node's root filesystem, rendered on the workstation.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Absolute path on the node.
    pub path: String,
    pub mode: Mode,
    pub owner: String,
    pub group: String,
    pub phase: Phase,
    pub content: String,
}

impl fmt::Debug for FileSpec {
    // Content may be secret: Debug shows its size only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSpec")
            .field("path", &self.path)
            .field("mode", &self.mode)
            .field("owner", &format_args!("{}:{}", self.owner, self.group))
            .field("phase", &self.phase)
            .field("bytes", &self.content.len())
            .finish()
    }
}

impl FileSpec {
    pub fn root(path: &str, mode: u32, phase: Phase, content: String) -> FileSpec {
        FileSpec {
            path: path.to_string(),
            mode: Mode(mode),
            owner: "root".into(),
            group: "root".into(),
            phase,
            content,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeIdentity {
    pub name: String,
    pub role: Role,
    /// The first server: `cluster-init: true`.
    pub init_server: bool,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub dns: Vec<Ipv4Addr>,
    pub interface: String,
    pub media: Media,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<String>,
    /// `https://<api_endpoint>:6443` (or the `join` URL): what config.yaml's
    /// `server:` says as rendered.
    pub server_url: String,
    /// Where a joining node registers, in the order it tries them until one
    /// answers on its port: `server_url` first, then every other server of the
    /// file. Stage 2 writes the first that answers into config.yaml.
    #[serde(default)]
    pub registration_urls: Vec<String>,
    /// The other servers' addresses. A re-flashed first server that finds one of
    /// them answering joins it instead of initialising a second cluster.
    pub other_servers: Vec<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPlan {
    pub name: String,
    /// The uid Raspberry Pi OS gives its first user; stage 1 renames that account.
    pub uid: u32,
    pub groups: Vec<String>,
    pub authorized_keys: Vec<String>,
    /// No password: SSH password login is disabled and sudo needs none.
    pub keys_only: bool,
}

/// A file picluster placed on the boot partition, with its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootAsset {
    /// Name at the root of the boot partition.
    pub file: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K3sPlan {
    pub version: String,
    /// `k3s` or `k3s-agent`.
    pub service: String,
    /// `server` or `agent`.
    pub command: String,
    pub binary: BootAsset,
    pub airgap_images: Option<BootAsset>,
}

/// Everything a node needs that is not secret. Stays readable on the card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeBundle {
    pub format: u32,
    pub picluster_version: String,
    /// Seconds since the epoch (SOURCE_DATE_EPOCH or the build time). A node
    /// without network time never sets its clock earlier than this.
    pub built_at: i64,
    pub cluster: String,
    pub node: NodeIdentity,
    pub user: UserPlan,
    pub k3s: K3sPlan,
    /// Debian packages stage 2 installs before K3s (e.g. open-iscsi for Longhorn).
    pub apt_packages: Vec<String>,
    /// Kernel arguments that only exist to run stage 1; stage 1 removes them
    /// from cmdline.txt (everything else stays).
    pub stage1_kernel_args: Vec<String>,
    pub files: Vec<FileSpec>,
}

/// The node's secrets. Moved off the boot partition by stage 1.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSecrets {
    pub format: u32,
    pub node: String,
    /// crypt hash for the admin user, when one was configured.
    pub password_hash: Option<String>,
    /// Files holding secrets (K3s config with its token, node password, Secrets manifests).
    pub files: Vec<FileSpec>,
}

impl fmt::Debug for NodeSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeSecrets")
            .field("node", &self.node)
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| "<redacted>"),
            )
            .field("files", &self.files)
            .finish()
    }
}

impl NodeBundle {
    /// All files of a phase, secrets included, in a stable order.
    pub fn files_for<'a>(
        &'a self,
        secrets: &'a NodeSecrets,
        phase: Phase,
    ) -> impl Iterator<Item = &'a FileSpec> {
        self.files
            .iter()
            .chain(secrets.files.iter())
            .filter(move |f| f.phase == phase)
    }
}
