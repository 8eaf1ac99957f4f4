//! The validated cluster model: what a cluster file means once every field has
//! been checked. Everything downstream (plan, bundle, image) starts here.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use crate::catalog;
use crate::checks;
use crate::error::{Error, Problem, Source};
use crate::platform::Platform;
use crate::schema::{RawAccess, RawCluster, RawClusterFile, RawImage, RawNetwork, RawNode};

/// Where K3s release assets come from unless `k3s_mirror` says otherwise.
pub const DEFAULT_K3S_MIRROR: &str = "https://github.com/k3s-io/k3s/releases/download";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Server,
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Agent => "agent",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Media {
    Sd,
    Nvme,
}

impl Media {
    pub fn as_str(self) -> &'static str {
        match self {
            Media::Sd => "sd",
            Media::Nvme => "nvme",
        }
    }
}

/// Where the base image comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum BaseSource {
    /// A catalogue entry, pinned by digest.
    Catalog(catalog::CatalogImage),
    /// A URL or path; without `sha256` the sibling `.sha256` file is trusted.
    Url { url: String, sha256: Option<String> },
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageSettings {
    pub source: BaseSource,
    pub pi5_4k_pages: bool,
    pub extra_kernel_args: Vec<String>,
    pub extra_config_txt: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct K3sSettings {
    pub version: String,
    /// Base URL holding `<version>/k3s-arm64`; no trailing slash.
    pub mirror: String,
    pub airgap: bool,
    /// Pinned digest of `k3s-arm64` (cluster file, else images/k3s.toml);
    /// without one the release's checksum list (https only) is trusted.
    pub binary_sha256: Option<String>,
    /// Pinned digest of the air-gap archive, likewise.
    pub airgap_sha256: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Network {
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub dns: Vec<Ipv4Addr>,
    pub interface: String,
}

impl Network {
    pub fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    pub fn network_address(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.gateway) & self.mask())
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.gateway) & self.mask()
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network_address()) | !self.mask())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Access {
    pub user: String,
    pub ssh_authorized_keys: Vec<String>,
    /// A crypt hash; a secret (it never appears in plan output).
    #[serde(skip)]
    pub password_hash: Option<String>,
    /// Line and column of `user` in the cluster file, for later checks.
    #[serde(skip)]
    pub user_at: Option<(usize, usize)>,
}

impl Access {
    pub fn keys_only(&self) -> bool {
        self.password_hash.is_none()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub name: String,
    pub ip: Ipv4Addr,
    pub role: Role,
    pub media: Media,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<String>,
    /// The first server: it initialises the cluster (`cluster-init: true`).
    pub init: bool,
}

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

/// Raspberry Pi OS's own consoles on `cmdline.txt` (DESIGN.md).
const PIOS_CONSOLES: &[&str] = &["console=serial0,115200", "console=tty1"];

/// An IPv4 literal or a DNS name. A name made of numbers and dots only is
/// neither (`999.1.1.1` is a mistyped address, not a host name).
fn host_or_ip(v: &str) -> Result<(), String> {
    if v.parse::<Ipv4Addr>().is_ok() {
        return Ok(());
    }
    if v.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "\"{v}\" is not a valid IPv4 address (each of the four numbers is 0 to 255)"
        ));
    }
    if v.is_empty() || v.len() > 253 || !v.split('.').all(|l| checks::hostname(l).is_ok()) {
        return Err(format!("\"{v}\" is neither an IPv4 address nor a DNS name"));
    }
    // RFC 1123 §2.1: the top-level label is never all-numeric.
    if v.rsplit('.')
        .next()
        .is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(format!(
            "\"{v}\" ends in a numeric label, so it is not a DNS name"
        ));
    }
    Ok(())
}

/// The host of a validated `https://host:port` URL.
fn join_host(url: &str) -> &str {
    let rest = url.strip_prefix("https://").unwrap_or(url);
    rest.rsplit_once(':').map_or(rest, |(h, _)| h)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn span<T>(s: &Spanned<T>) -> Option<Range<usize>> {
    Some(s.span())
}

/// Converts raw tables into the model, reporting every problem it meets and
/// returning `None` for what it could not convert.
struct Builder<'s, 'a> {
    src: &'s mut Source<'a>,
}

impl Builder<'_, '_> {
    fn bad<T>(&mut self, at: &Spanned<T>, field: &str, msg: String, hint: Option<&str>) {
        self.src
            .report(span(at), field, msg, hint.map(str::to_string));
    }

    fn check<T>(
        &mut self,
        at: &Spanned<T>,
        field: &str,
        result: Result<(), String>,
        hint: Option<&str>,
    ) -> bool {
        match result {
            Ok(()) => true,
            Err(msg) => {
                self.bad(at, field, msg, hint);
                false
            }
        }
    }

    fn ipv4(&mut self, at: &Spanned<String>, field: &str) -> Option<Ipv4Addr> {
        match at.get_ref().parse::<Ipv4Addr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.bad(
                    at,
                    field,
                    format!("\"{}\" is not an IPv4 address", at.get_ref()),
                    Some("write it as four numbers, e.g. 192.168.0.120"),
                );
                None
            }
        }
    }

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
            (k.get_ref().trim() == crate::SAMPLE_SSH_KEY).then(|| {
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
            (None, Some(url)) => join_host(url).to_string(),
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

    /// `join`: `https://<host>:<port>` of an existing cluster. `Some(None)` when absent.
    fn join(&mut self, c: &RawCluster) -> Option<Option<String>> {
        let Some(j) = &c.join else {
            return Some(None);
        };
        let v = j.get_ref().trim_end_matches('/');
        let host_ok = |h: &str| host_or_ip(h).is_ok();
        let ok = v
            .strip_prefix("https://")
            .and_then(|rest| rest.rsplit_once(':'))
            .is_some_and(|(host, port)| host_ok(host) && port.parse::<u16>().is_ok_and(|p| p > 0));
        self.check(
            j,
            "cluster.join",
            if ok {
                Ok(())
            } else {
                Err(format!("\"{v}\" is not an https://host:port URL"))
            },
            Some("give the existing cluster's API address, e.g. join = \"https://k3s.lan:6443\" (K3s only accepts https)"),
        )
        .then(|| Some(v.to_string()))
    }

    /// An IPv4 `api_endpoint` must be a server of this file (agents do not
    /// answer on :6443), unless the nodes join a cluster described elsewhere.
    fn api_endpoint_is_a_server(&mut self, ep: &Spanned<String>, nodes: &[Node], join: bool) {
        let Ok(ip) = ep.get_ref().parse::<Ipv4Addr>() else {
            return;
        };
        if join {
            return;
        }
        if let Some(n) = nodes.iter().find(|n| n.ip == ip && n.role == Role::Agent) {
            self.bad(
                ep,
                "cluster.api_endpoint",
                format!("{ip} is the address of agent {}, which does not serve the Kubernetes API", n.name),
                Some("use a server's IP, a DNS name or VIP that reaches the servers, or leave the key out (the first server's IP)"),
            );
        } else if !nodes.iter().any(|n| n.ip == ip) {
            self.bad(
                ep,
                "cluster.api_endpoint",
                format!("{ip} is not the address of any server in this file"),
                Some("use a server's IP, or a DNS name or VIP that reaches the servers; to join a cluster described elsewhere, set `join`"),
            );
        }
    }

    #[allow(clippy::type_complexity)]
    fn cluster_table(
        &mut self,
        c: &RawCluster,
    ) -> (
        Option<String>,
        Option<K3sSettings>,
        Option<String>,
        Vec<String>,
    ) {
        let name = self
            .check(
                &c.name,
                "cluster.name",
                checks::hostname(c.name.get_ref()),
                None,
            )
            .then(|| c.name.get_ref().clone());
        let version_ok = self.check(
            &c.k3s_version,
            "cluster.k3s_version",
            checks::k3s_version(c.k3s_version.get_ref()),
            None,
        );
        let mirror = match &c.k3s_mirror {
            None => Some(DEFAULT_K3S_MIRROR.to_string()),
            Some(m) => {
                let url = m.get_ref().trim_end_matches('/');
                let ok = ["https://", "http://", "file://"]
                    .iter()
                    .any(|p| url.starts_with(p))
                    || url.starts_with('/');
                self.check(
                    m,
                    "cluster.k3s_mirror",
                    if ok {
                        Ok(())
                    } else {
                        Err(format!("\"{url}\" is not an http(s):// or file:// URL or an absolute path"))
                    },
                    Some("give the base URL that holds <version>/k3s-arm64, e.g. https://mirror.lan/k3s"),
                )
                .then(|| url.to_string())
            }
        };
        let k3s = match (version_ok, mirror) {
            (true, Some(mirror)) => self.k3s_pins(c, mirror),
            _ => None,
        };
        let api_endpoint = c.api_endpoint.as_ref().and_then(|ep| {
            let v = ep.get_ref();
            self.check(
                ep,
                "cluster.api_endpoint",
                host_or_ip(v),
                Some("use the first server's IP (the default when the key is left out) or a DNS name that resolves to a server"),
            )
            .then(|| v.clone())
        });
        let mut tls_san = Vec::new();
        for (i, san) in c.tls_san.iter().enumerate() {
            let v = san.get_ref();
            if self.check(
                san,
                &format!("cluster.tls_san[{i}]"),
                host_or_ip(v),
                Some("give an IPv4 address such as 192.168.0.120 or a DNS name such as k3s.lan"),
            ) {
                tls_san.push(v.clone());
            }
        }
        (name, k3s, api_endpoint, tls_san)
    }

    /// The K3s digests to check downloads against. Over plain http:// a
    /// man in the middle could swap both the binary and the checksum list, so
    /// such a mirror needs every asset the cluster uses pinned.
    fn k3s_pins(&mut self, c: &RawCluster, mirror: String) -> Option<K3sSettings> {
        let version = c.k3s_version.get_ref();
        let listed = catalog::k3s_pin(version);
        let mut ok = true;
        let mut pin = |key: &Option<Spanned<String>>, field: &str| {
            key.as_ref().and_then(|s| {
                let v = s.get_ref().to_ascii_lowercase();
                let good = self.check(s, field, checks::sha256_hex(&v), None);
                ok &= good;
                good.then_some(v)
            })
        };
        let binary_sha256 = pin(&c.k3s_sha256, "cluster.k3s_sha256")
            .or_else(|| listed.as_ref().map(|p| p.k3s_arm64.clone()));
        let airgap_sha256 = pin(&c.k3s_airgap_sha256, "cluster.k3s_airgap_sha256")
            .or_else(|| listed.and_then(|p| p.airgap_arm64));
        if let Some(m) = c
            .k3s_mirror
            .as_ref()
            .filter(|_| mirror.starts_with("http://"))
        {
            let mut unpinned = Vec::new();
            if binary_sha256.is_none() {
                unpinned.push("k3s_sha256 (k3s-arm64)");
            }
            if c.airgap && airgap_sha256.is_none() {
                unpinned.push("k3s_airgap_sha256 (the air-gap archive)");
            }
            if !unpinned.is_empty() {
                ok = false;
                self.bad(
                    m,
                    "cluster.k3s_mirror",
                    format!(
                        "a plain http:// mirror can be tampered with on the way, and {version} has no pinned {}",
                        unpinned.join(" or ")
                    ),
                    Some("use an https:// mirror, or pin the digests from the release's sha256sum-arm64.txt: `k3s_sha256 = \"…\"` (and `k3s_airgap_sha256` with airgap) under [cluster]"),
                );
            }
        }
        ok.then(|| K3sSettings {
            version: version.clone(),
            mirror,
            airgap: c.airgap,
            binary_sha256,
            airgap_sha256,
        })
    }

    fn image(&mut self, img: Option<&RawImage>) -> Option<ImageSettings> {
        let default_source = || {
            BaseSource::Catalog(
                catalog::find(catalog::DEFAULT_BASE).expect("default base is in the catalogue"),
            )
        };
        let Some(img) = img else {
            return Some(ImageSettings {
                source: default_source(),
                pi5_4k_pages: true,
                extra_kernel_args: Vec::new(),
                extra_config_txt: Vec::new(),
            });
        };
        let mut ok = true;
        let sha256 = img.sha256.as_ref().and_then(|s| {
            let v = s.get_ref().to_ascii_lowercase();
            self.check(s, "image.sha256", checks::sha256_hex(&v), None)
                .then_some(v)
        });
        if img.sha256.is_some() && sha256.is_none() {
            ok = false;
        }
        let source = match (&img.base, &img.url) {
            (Some(b), Some(_)) => {
                self.bad(
                    b,
                    "image.base",
                    "give either `base` or `url`, not both".into(),
                    Some("remove one of the two keys"),
                );
                None
            }
            (Some(b), None) => match catalog::find(b.get_ref()) {
                Some(entry) => {
                    if let Some(s) = &img.sha256 {
                        self.bad(
                            s,
                            "image.sha256",
                            "`sha256` pins a `url`; catalogue images are pinned already".into(),
                            Some("remove `sha256`, or use `url` instead of `base`"),
                        );
                    }
                    Some(BaseSource::Catalog(entry))
                }
                None => {
                    let names: Vec<String> =
                        catalog::images().into_iter().map(|i| i.name).collect();
                    self.bad(
                        b,
                        "image.base",
                        format!(
                            "\"{}\" is not in the image catalogue (images/catalog.toml)",
                            b.get_ref()
                        ),
                        Some(&format!(
                            "use one of: {}; or give `url` (and optionally `sha256`)",
                            names.join(", ")
                        )),
                    );
                    None
                }
            },
            (None, Some(u)) => {
                let url = u.get_ref();
                if url.trim().is_empty() {
                    self.bad(
                        u,
                        "image.url",
                        "is empty".into(),
                        Some("give an https:// URL, a file:// URL or a path to a .img.xz"),
                    );
                    None
                } else if url.starts_with("http://") && sha256.is_none() {
                    // The sibling .sha256 would come over the same unprotected
                    // connection as the image: it proves nothing.
                    self.bad(
                        u,
                        "image.url",
                        "a plain http:// download can be swapped on the way, and no `sha256` pins it".into(),
                        Some("use an https:// URL, or add `sha256 = \"…\"` (the digest Raspberry Pi publishes beside the image) under [image]"),
                    );
                    None
                } else {
                    Some(BaseSource::Url {
                        url: url.clone(),
                        sha256: sha256.clone(),
                    })
                }
            }
            (None, None) => Some(default_source()),
        };
        let mut extra_kernel_args = Vec::new();
        for (i, a) in img.extra_kernel_args.iter().enumerate() {
            // Raspberry Pi OS's own consoles (DESIGN.md, cmdline.txt) and the
            // arguments given before this one.
            let mut existing: Vec<&str> = PIOS_CONSOLES.to_vec();
            existing.extend(extra_kernel_args.iter().map(String::as_str));
            if self.check(
                a,
                &format!("image.extra_kernel_args[{i}]"),
                checks::kernel_arg(a.get_ref(), &existing),
                Some("give one plain argument such as usbcore.autosuspend=-1; picluster sets root, init, systemd.*, cgroup and console arguments itself"),
            ) {
                extra_kernel_args.push(a.get_ref().clone());
            } else {
                ok = false;
            }
        }
        let mut extra_config_txt = Vec::new();
        for (i, l) in img.extra_config_txt.iter().enumerate() {
            let v = l.get_ref();
            if v.contains('\n') {
                self.bad(
                    l,
                    &format!("image.extra_config_txt[{i}]"),
                    "holds a line break".into(),
                    Some("give one config.txt line per list entry"),
                );
                ok = false;
            } else {
                extra_config_txt.push(v.clone());
            }
        }
        (ok && source.is_some()).then(|| ImageSettings {
            source: source.expect("checked"),
            pi5_4k_pages: img.pi5_4k_pages.unwrap_or(true),
            extra_kernel_args,
            extra_config_txt,
        })
    }

    fn network(&mut self, n: &RawNetwork) -> Option<Network> {
        let prefix = *n.prefix.get_ref();
        let prefix_ok = self.check(
            &n.prefix,
            "network.prefix",
            if (8..=30).contains(&prefix) {
                Ok(())
            } else {
                Err(format!("{prefix} is not a usable IPv4 prefix length"))
            },
            Some("use the length of your LAN's netmask, e.g. 24 for 255.255.255.0 (8 to 30)"),
        );
        let gateway = self.ipv4(&n.gateway, "network.gateway");
        let mut dns = Vec::new();
        let mut dns_ok = true;
        for (i, d) in n.dns.iter().enumerate() {
            match self.ipv4(d, &format!("network.dns[{i}]")) {
                Some(ip) => dns.push(ip),
                None => dns_ok = false,
            }
        }
        let interface = match &n.interface {
            None => Some("eth0".to_string()),
            Some(i) => {
                let v = i.get_ref();
                let ok = !v.is_empty()
                    && v.len() <= 15
                    && v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
                self.check(
                    i,
                    "network.interface",
                    if ok {
                        Ok(())
                    } else {
                        Err(format!("\"{v}\" is not a network interface name"))
                    },
                    Some("the Pi's wired interface is eth0"),
                )
                .then(|| v.clone())
            }
        };
        let gateway = gateway?;
        if dns.is_empty() && dns_ok {
            dns.push(gateway);
        }
        let net = Network {
            prefix: u8::try_from(prefix).ok().filter(|_| prefix_ok)?,
            gateway,
            dns,
            interface: interface?,
        };
        if gateway == net.network_address() || gateway == net.broadcast() {
            self.bad(
                &n.gateway,
                "network.gateway",
                format!(
                    "{gateway} is the network or broadcast address of {}/{}",
                    net.network_address(),
                    net.prefix
                ),
                Some("give your router's address on the LAN"),
            );
            return None;
        }
        dns_ok.then_some(net)
    }

    fn access(&mut self, a: &Spanned<RawAccess>) -> Option<Access> {
        let raw = a.get_ref();
        let user_ok = self.check(
            &raw.user,
            "access.user",
            checks::username(raw.user.get_ref()),
            Some("choose a personal administrator name such as alice; stage 1 renames Raspberry Pi OS's first user (uid 1000) to it"),
        );
        let mut keys = Vec::new();
        let mut ok = user_ok;
        for (i, k) in raw.ssh_authorized_keys.iter().enumerate() {
            let v = k.get_ref().trim();
            if self.check(
                k,
                &format!("access.ssh_authorized_keys[{i}]"),
                checks::ssh_public_key(v),
                Some("paste the contents of a .pub file, e.g. `cat ~/.ssh/id_ed25519.pub`"),
            ) {
                keys.push(v.to_string());
            } else {
                ok = false;
            }
        }
        let password_hash = match &raw.password_hash {
            None => None,
            Some(h) => {
                if self.check(
                    h,
                    "access.password_hash",
                    checks::password_hash(h.get_ref()),
                    Some("paste the whole output of `openssl passwd -6` or `mkpasswd -m yescrypt`, or remove the key for a keys-only account"),
                ) {
                    Some(h.get_ref().clone())
                } else {
                    ok = false;
                    None
                }
            }
        };
        if raw.ssh_authorized_keys.is_empty() && raw.password_hash.is_none() {
            self.bad(
                a,
                "access.ssh_authorized_keys",
                "no SSH key and no password hash: nobody could log in to the nodes".into(),
                Some("add your public key, e.g. ssh_authorized_keys = [\"ssh-ed25519 AAAA… you@laptop\"]"),
            );
            ok = false;
        }
        let user_at = Some(self.src.line_col(raw.user.span().start));
        ok.then(|| Access {
            user_at,
            user: raw.user.get_ref().clone(),
            ssh_authorized_keys: keys,
            password_hash,
        })
    }

    fn nodes(
        &mut self,
        raw: &[Spanned<RawNode>],
        net: Option<&Network>,
        join: bool,
    ) -> Option<Vec<Node>> {
        if raw.is_empty() {
            self.src.report(
                None,
                "nodes",
                "the cluster has no nodes",
                Some("add at least one [[nodes]] table with name, ip and role = \"server\"".into()),
            );
            return None;
        }
        let mut ok = true;
        let mut nodes = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut ips: HashMap<Ipv4Addr, usize> = HashMap::new();
        let mut first_server: Option<usize> = None;
        for (i, sn) in raw.iter().enumerate() {
            let n = sn.get_ref();
            let field = |f: &str| format!("nodes[{i}].{f}");
            let name = n.name.get_ref();
            let mut node_ok = self.check(
                &n.name,
                &field("name"),
                checks::hostname(name),
                Some("use a lower-case RFC 1123 name such as pi-worker-1"),
            );
            if node_ok && let Some(prev) = names.insert(name.clone(), i) {
                self.bad(
                    &n.name,
                    &field("name"),
                    format!("\"{name}\" is already the name of nodes[{prev}]"),
                    Some("node names must be unique"),
                );
                node_ok = false;
            }
            let ip = self.ipv4(&n.ip, &field("ip"));
            if let (Some(ip), Some(net)) = (ip, net) {
                if !net.contains(ip) {
                    self.bad(
                        &n.ip,
                        &field("ip"),
                        format!(
                            "{ip} is outside the cluster network {}/{}",
                            net.network_address(),
                            net.prefix
                        ),
                        Some(&format!(
                            "use an address in {}/{} (network.gateway {} and network.prefix {})",
                            net.network_address(),
                            net.prefix,
                            net.gateway,
                            net.prefix
                        )),
                    );
                    node_ok = false;
                } else if ip == net.gateway {
                    self.bad(
                        &n.ip,
                        &field("ip"),
                        format!("{ip} is the gateway's address"),
                        Some("give the node an address of its own"),
                    );
                    node_ok = false;
                } else if ip == net.network_address() || ip == net.broadcast() {
                    self.bad(
                        &n.ip,
                        &field("ip"),
                        format!("{ip} is the network or broadcast address"),
                        Some("give the node a host address"),
                    );
                    node_ok = false;
                }
            }
            if let Some(ip) = ip {
                if let Some(prev) = ips.insert(ip, i) {
                    self.bad(
                        &n.ip,
                        &field("ip"),
                        format!("{ip} is already the address of nodes[{prev}]"),
                        Some("every node needs its own IP"),
                    );
                    node_ok = false;
                }
            } else {
                node_ok = false;
            }
            let role = match n.role.get_ref().as_str() {
                "server" => Some(Role::Server),
                "agent" => Some(Role::Agent),
                other => {
                    self.bad(
                        &n.role,
                        &field("role"),
                        format!("\"{other}\" is not a role"),
                        Some("use \"server\" (control plane + etcd) or \"agent\" (worker)"),
                    );
                    None
                }
            };
            if role == Some(Role::Server) && first_server.is_none() {
                first_server = Some(i);
            }
            let media = match n.media.as_ref().map(|m| m.get_ref().as_str()) {
                None | Some("sd") => Some(Media::Sd),
                Some("nvme") => Some(Media::Nvme),
                Some(other) => {
                    let m = n.media.as_ref().expect("matched Some");
                    self.bad(
                        m,
                        &field("media"),
                        format!("\"{other}\" is not a boot medium"),
                        Some("use \"sd\" or \"nvme\""),
                    );
                    None
                }
            };
            let mut labels = BTreeMap::new();
            if let Some(l) = &n.labels {
                for (k, v) in l.get_ref() {
                    let res = checks::node_label_key(k).and_then(|()| checks::label_value(v));
                    let hint = (checks::label_key(k).is_ok() && checks::node_label_key(k).is_err())
                        .then(|| {
                            format!(
                                "apply it once the node has joined: kubectl label node {} {k}={v}",
                                name
                            )
                        });
                    if self.check(l, &format!("nodes[{i}].labels.{k}"), res, hint.as_deref()) {
                        labels.insert(k.clone(), v.clone());
                    } else {
                        node_ok = false;
                    }
                }
            }
            let mut taints = Vec::new();
            for (j, t) in n.taints.iter().enumerate() {
                if self.check(
                    t,
                    &format!("nodes[{i}].taints[{j}]"),
                    checks::taint(t.get_ref()),
                    None,
                ) {
                    taints.push(t.get_ref().clone());
                } else {
                    node_ok = false;
                }
            }
            match (node_ok, ip, role, media) {
                (true, Some(ip), Some(role), Some(media)) => nodes.push(Node {
                    name: name.clone(),
                    ip,
                    role,
                    media,
                    labels,
                    taints,
                    // Joining a cluster described elsewhere: nobody initialises one.
                    init: !join && Some(i) == first_server,
                }),
                _ => ok = false,
            }
        }
        let servers = raw
            .iter()
            .filter(|n| n.get_ref().role.get_ref() == "server")
            .count();
        if servers == 0 && join {
            // Agents joining an existing control plane (the seed layout).
        } else if servers == 0 {
            self.src.report(
                Some(raw[0].span()),
                "nodes",
                "no node has role = \"server\"",
                Some("make the first node a server (it initialises the cluster), or set `join` to join an existing cluster".into()),
            );
            ok = false;
        } else if servers % 2 == 0 && !join {
            let last = raw
                .iter()
                .rev()
                .find(|n| n.get_ref().role.get_ref() == "server")
                .expect("servers > 0");
            self.src.report(
                Some(last.span()),
                "nodes",
                format!(
                    "{servers} servers: embedded etcd needs an odd number of servers to keep quorum"
                ),
                Some(format!(
                    "use {} or {} servers (turn one into an agent, or add one)",
                    servers - 1,
                    servers + 1
                )),
            );
            ok = false;
        }
        ok.then_some(nodes)
    }
}
