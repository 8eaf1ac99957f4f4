//! `[cluster]`: the cluster's name, the pinned K3s release and where it comes
//! from, the API address, `tls_san` and `join`.

use std::net::Ipv4Addr;

use serde::Serialize;
use toml::Spanned;

use super::convert::Builder;
use crate::catalog;
use crate::checks;
use crate::node::{Node, Role};
use crate::schema::RawCluster;

/// Where K3s release assets come from unless `k3s_mirror` says otherwise.
pub const DEFAULT_K3S_MIRROR: &str = "https://github.com/k3s-io/k3s/releases/download";

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
pub(super) fn join_host(url: &str) -> &str {
    let rest = url.strip_prefix("https://").unwrap_or(url);
    rest.rsplit_once(':').map_or(rest, |(h, _)| h)
}

impl Builder<'_, '_> {
    /// `join`: `https://<host>:<port>` of an existing cluster. `Some(None)` when absent.
    pub(super) fn join(&mut self, c: &RawCluster) -> Option<Option<String>> {
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
    pub(super) fn api_endpoint_is_a_server(
        &mut self,
        ep: &Spanned<String>,
        nodes: &[Node],
        join: bool,
    ) {
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
    pub(super) fn cluster_table(
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
}
