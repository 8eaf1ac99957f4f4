//! The validated cluster model: what a cluster file means once every field has
//! been checked. Everything downstream (plan, bundle, image) starts here.
//!
//! Each table's rules live in a module of their own; the node and network
//! model, which the platform selection uses as well, lives in [`crate::node`]
//! and [`crate::network`], so the platform never imports the cluster back.

mod access;
mod convert;
mod image;
mod k3s;
mod nodes;

use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

pub use self::access::Access;
pub use self::image::{BaseSource, ImageSettings};
pub use self::k3s::{DEFAULT_K3S_MIRROR, K3sSettings};
pub use crate::network::Network;
pub use crate::node::{Media, Node, Role};

use self::convert::Builder;
use crate::error::{Error, Problem, Source};
use crate::platform::Platform;
use crate::schema::RawClusterFile;

/// A cluster file, validated.
#[derive(Debug, Clone, Serialize)]
pub struct Cluster {
    /// The file it came from.
    pub path: PathBuf,
    /// SHA-256 of the file's bytes (recorded in build.json).
    pub sha256: String,
    pub name: String,
    pub k3s: K3sSettings,
    /// Address agents and joining servers use to reach the API (IP or DNS name).
    pub api_endpoint: String,
    pub tls_san: Vec<String>,
    /// `https://host:6443` of an existing cluster not described in this file:
    /// every node joins it (no node initialises a cluster).
    pub join: Option<String>,
    pub image: ImageSettings,
    pub network: Network,
    pub access: Access,
    pub nodes: Vec<Node>,
    pub platform: Platform,
    /// Where the file still holds the sample key of `picluster init` (no known
    /// private half): `plan` and `build` refuse it, see [`Cluster::refuse_sample_key`].
    #[serde(skip)]
    pub sample_key: Option<Problem>,
}

impl Cluster {
    /// Refuse a cluster whose only way in is the sample key nobody holds the
    /// private half of (`picluster init` writes it when no `~/.ssh/*.pub` exists).
    pub fn refuse_sample_key(&self) -> Result<(), Error> {
        match &self.sample_key {
            Some(p) => Err(Error::Invalid(vec![p.clone()])),
            None => Ok(()),
        }
    }

    /// Refuse an administrator name the base image already uses for a system
    /// account or group (id below 1000), as read from its `/etc/passwd` and
    /// `/etc/group` by the builder.
    pub fn refuse_base_account(&self, system: &[(String, u32)], image: &str) -> Result<(), Error> {
        let user = &self.access.user;
        match system.iter().find(|(n, _)| n == user) {
            None => Ok(()),
            Some((_, id)) => Err(Error::Invalid(vec![Problem {
                file: self.path.clone(),
                line: self.access.user_at,
                field: "access.user".into(),
                message: format!(
                    "\"{user}\" is a system account or group (id {id}) in the base image ({image})"
                ),
                hint: Some("choose a personal administrator name such as alice; stage 1 renames Raspberry Pi OS's first user (uid 1000) to it".into()),
            }])),
        }
    }

    /// The URLs a joining node registers with, in the order it tries them:
    /// the `join` URL alone, or else `api_endpoint` and then every server of
    /// the file in order (never `except` itself), so a node can join or
    /// re-join while the first server is down.
    pub fn registration_urls(&self, except: &str) -> Vec<String> {
        if let Some(j) = &self.join {
            return vec![j.clone()];
        }
        let mut urls = vec![format!("https://{}:6443", self.api_endpoint)];
        for s in self.servers().filter(|s| s.name != except) {
            let u = format!("https://{}:6443", s.ip);
            if !urls.contains(&u) {
                urls.push(u);
            }
        }
        if let Some(me) = self.node(except) {
            let own = format!("https://{}:6443", me.ip);
            urls.retain(|u| *u != own);
        }
        urls
    }

    /// Read and validate a cluster file.
    pub fn load(path: &Path) -> Result<Cluster, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Cluster::parse(path, &text)
    }

    /// Validate cluster-file text; `path` is used in messages only.
    pub fn parse(path: &Path, text: &str) -> Result<Cluster, Error> {
        let mut src = Source::new(path, text);
        let raw: RawClusterFile = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                src.toml_problem(&e);
                src.finish()?;
                unreachable!("a reported problem makes finish() fail");
            }
        };
        let sha256 = hex(&Sha256::digest(text.as_bytes()));
        let cluster = Builder { src: &mut src }.cluster(path, sha256, raw);
        src.finish()?;
        Ok(cluster.expect("no problems means every field was converted"))
    }

    pub fn servers(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == Role::Server)
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The directory holding the cluster file (secrets and overlays are relative to it).
    pub fn dir(&self) -> &Path {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Builder<'_, '_> {
    fn cluster(&mut self, path: &Path, sha256: String, raw: RawClusterFile) -> Option<Cluster> {
        let (name, k3s, api_endpoint, tls_san) = self.cluster_table(raw.cluster.get_ref());
        let join = self.join(raw.cluster.get_ref());
        let image = self.image(raw.image.as_ref().map(Spanned::get_ref));
        let network = self.network(raw.network.get_ref());
        let access = self.access(&raw.access);
        let nodes = self.nodes(
            &raw.nodes,
            network.as_ref(),
            raw.cluster.get_ref().join.is_some(),
        );
        if let (Some(ep), Some(nodes)) = (&raw.cluster.get_ref().api_endpoint, &nodes) {
            self.api_endpoint_is_a_server(ep, nodes, raw.cluster.get_ref().join.is_some());
        }
        let sample_key = raw.access.get_ref().ssh_authorized_keys.iter().find_map(|k| {
            (k.get_ref().trim() == crate::sample::SAMPLE_SSH_KEY).then(|| {
                let (line, col) = self.src.line_col(k.span().start);
                Problem {
                    file: path.to_path_buf(),
                    line: Some((line, col)),
                    field: "access.ssh_authorized_keys".into(),
                    message: "this is the example key of the sample cluster file: nobody holds its private half, so nobody could log in to the nodes".into(),
                    hint: Some("put your own public key here (`cat ~/.ssh/id_ed25519.pub`; create one with `ssh-keygen -t ed25519`)".into()),
                }
            })
        });
        let platform = Platform::from_table(
            raw.platform.as_ref(),
            self.src,
            nodes.as_deref(),
            network.as_ref(),
        );

        let (network, nodes) = (network?, nodes?);
        let join = join?;
        let api_endpoint = match (api_endpoint, &join) {
            (Some(ep), _) => ep,
            (None, Some(url)) => k3s::join_host(url).to_string(),
            (None, None) => nodes.iter().find(|n| n.init)?.ip.to_string(),
        };
        Some(Cluster {
            path: path.to_path_buf(),
            sha256,
            name: name?,
            k3s: k3s?,
            api_endpoint,
            tls_san,
            join,
            image: image?,
            network,
            access: access?,
            nodes,
            platform: platform?,
            sample_key,
        })
    }
}
