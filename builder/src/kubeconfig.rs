//! The admin kubeconfig: a client certificate signed by the cluster's client
//! CA (see [`crate::pki`]), the server CA, and `https://<api_endpoint>:6443`,
//! which every server's certificate names (it is in their `tls-san`).
//!
//! The certificates are embedded (`*-data`), so the file stands alone; it is
//! written 0600, like K3s's own `k3s.yaml` under `write-kubeconfig-mode`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine;
use picluster_profiles::Cluster;
use picluster_profiles::pki::{ClusterPki, SERVER_CA_CERT, pki_path};

use crate::pki::{ADMIN_CN, ADMIN_DAYS, ADMIN_GROUP, issue_admin};

pub const FILE_NAME: &str = "kubeconfig";
/// The first line of every kubeconfig picluster writes: only such a file is
/// ever replaced (a user's own kubeconfig is never overwritten).
const HEADER: &str = "# picluster admin kubeconfig";

/// `kubeconfig` beside the cluster file.
pub fn default_path(cluster_file: &Path) -> PathBuf {
    picluster_profiles::paths::beside(cluster_file, FILE_NAME)
}

/// The API address a workstation uses.
pub fn server_url(cluster: &Cluster) -> String {
    format!("https://{}:6443", cluster.api_endpoint)
}

/// The cluster's PKI, or why picluster cannot make a kubeconfig for it.
pub fn cluster_pki(cluster: &Cluster) -> Result<ClusterPki> {
    if let Some(url) = &cluster.join {
        bail!(
            "{}: the nodes join the cluster at {url}, whose CAs picluster does not hold, so it cannot sign \
             an admin certificate for it\n  fix: copy /etc/rancher/k3s/k3s.yaml from one of that cluster's servers \
             and change its `server:` line to {url}",
            cluster.path.display()
        );
    }
    match ClusterPki::load_for(&cluster.path)? {
        Some(p) => Ok(p),
        None => bail!(
            "{}: this cluster has no CAs (made before picluster kept them)\n  fix: run `picluster secrets -c {}`, \
             then rebuild and re-flash the nodes; a cluster started with K3s's own CAs can only be reached with \
             the /etc/rancher/k3s/k3s.yaml of one of its servers",
            pki_path(&cluster.path).display(),
            cluster.path.display()
        ),
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

fn quoted(s: &str) -> String {
    // JSON strings are valid YAML double-quoted scalars.
    serde_json::to_string(s).expect("strings serialise")
}

/// The kubeconfig text, with a fresh admin certificate issued at `now`.
pub fn render(cluster: &Cluster, pki: &ClusterPki, now: i64) -> Result<String> {
    let admin = issue_admin(pki, now)?;
    let ca = pki
        .get(SERVER_CA_CERT)
        .context("the PKI has no server-ca.crt")?;
    let until = admin.not_after.date();
    let name = quoted(&cluster.name);
    let user = quoted(&format!("{}-admin", cluster.name));
    Ok(format!(
        "{HEADER} for cluster \"{cluster}\": CN={ADMIN_CN}, O={ADMIN_GROUP}, valid {ADMIN_DAYS} days (until {until}).\n\
         # Anyone holding this file administers the cluster: keep it 0600, out of git.\n\
         # A fresh one: picluster kubeconfig -c {file}\n\
         apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: {name}\n\
         \x20 cluster:\n\
         \x20   server: {server}\n\
         \x20   certificate-authority-data: {ca}\n\
         users:\n\
         - name: {user}\n\
         \x20 user:\n\
         \x20   client-certificate-data: {cert}\n\
         \x20   client-key-data: {key}\n\
         contexts:\n\
         - name: {name}\n\
         \x20 context:\n\
         \x20   cluster: {name}\n\
         \x20   user: {user}\n\
         current-context: {name}\n",
        cluster = cluster.name,
        file = cluster.path.display(),
        server = quoted(&server_url(cluster)),
        ca = b64(ca),
        cert = b64(&admin.cert),
        key = b64(&admin.key),
    ))
}

/// Write `text` to `path` (0600, atomically). An existing file is replaced
/// only when picluster wrote it.
pub fn write(path: &Path, text: &str) -> Result<()> {
    if let Ok(old) = std::fs::read(path)
        && !old.starts_with(HEADER.as_bytes())
    {
        bail!(
            "{} exists and is not a kubeconfig picluster wrote; it is left alone\n  fix: choose another file with -o, \
             or move that one away",
            path.display()
        );
    }
    crate::atomic::write(path, text.as_bytes(), 0o600)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Credentials read back from a kubeconfig picluster wrote: (server URL,
/// server CA PEM, client certificate PEM, client key PEM).
pub struct Credentials {
    pub server: String,
    pub ca: String,
    pub cert: String,
    pub key: String,
}

/// Read the fields of a kubeconfig in the form [`render`] writes.
pub fn read(path: &Path) -> Result<Credentials> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let field = |key: &str| -> Result<String> {
        let line = text
            .lines()
            .map(str::trim_start)
            .find_map(|l| l.strip_prefix(&format!("{key}: ")))
            .with_context(|| {
                format!(
                    "{}: no `{key}`; picluster reads the kubeconfigs it writes (make one with `picluster kubeconfig`)",
                    path.display()
                )
            })?;
        Ok(line.trim().trim_matches('"').to_string())
    };
    let decode = |key: &str| -> Result<String> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(field(key)?)
            .with_context(|| format!("{}: {key} is not base64", path.display()))?;
        String::from_utf8(raw).with_context(|| format!("{}: {key} is not PEM", path.display()))
    };
    Ok(Credentials {
        server: field("server")?,
        ca: decode("certificate-authority-data")?,
        cert: decode("client-certificate-data")?,
        key: decode("client-key-data")?,
    })
}
