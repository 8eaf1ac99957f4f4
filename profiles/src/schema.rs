//! The cluster file as written, with source spans kept for error messages.
//! `cluster.rs` turns this into the validated model.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClusterFile {
    pub cluster: Spanned<RawCluster>,
    #[serde(default)]
    pub image: Option<Spanned<RawImage>>,
    pub network: Spanned<RawNetwork>,
    pub access: Spanned<RawAccess>,
    #[serde(default)]
    pub nodes: Vec<Spanned<RawNode>>,
    #[serde(default)]
    pub platform: Option<Spanned<toml::Table>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub name: Spanned<String>,
    pub k3s_version: Spanned<String>,
    pub k3s_mirror: Option<Spanned<String>>,
    /// Pins `k3s-arm64` (over images/k3s.toml): needed for a plain-http mirror.
    pub k3s_sha256: Option<Spanned<String>>,
    pub k3s_airgap_sha256: Option<Spanned<String>>,
    pub api_endpoint: Option<Spanned<String>>,
    /// `https://host:6443` of an existing K3s cluster the nodes join.
    pub join: Option<Spanned<String>>,
    #[serde(default)]
    pub airgap: bool,
    #[serde(default)]
    pub tls_san: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawImage {
    pub base: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    pub sha256: Option<Spanned<String>>,
    /// `kernel=kernel8.img` under `[pi5]`: 4 KiB pages (jemalloc-based images fail on 16 KiB).
    pub pi5_4k_pages: Option<bool>,
    #[serde(default)]
    pub extra_kernel_args: Vec<Spanned<String>>,
    #[serde(default)]
    pub extra_config_txt: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    pub prefix: Spanned<i64>,
    pub gateway: Spanned<String>,
    #[serde(default)]
    pub dns: Vec<Spanned<String>>,
    pub interface: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccess {
    pub user: Spanned<String>,
    #[serde(default)]
    pub ssh_authorized_keys: Vec<Spanned<String>>,
    pub password_hash: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub name: Spanned<String>,
    pub ip: Spanned<String>,
    pub role: Spanned<String>,
    pub media: Option<Spanned<String>>,
    pub labels: Option<Spanned<BTreeMap<String, String>>>,
    #[serde(default)]
    pub taints: Vec<Spanned<String>>,
}
