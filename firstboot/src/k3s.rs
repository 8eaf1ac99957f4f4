//! K3s on the node: install the pinned binary from the boot partition (checked
//! against the bundle's digest), choose how the server joins, tell whether the
//! node is Ready, and turn K3s's failures into instructions.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use anyhow::{Context, Result, bail};
use picluster_profiles::Role;
use picluster_profiles::bundle::{BootAsset, FileSpec, NodeBundle, NodeSecrets, Phase, node_paths};

use crate::fsutil::{Installed, Perms, install_verified};
use crate::host::{Cmd, Host};

/// Commands install.sh links to the k3s binary.
pub const LINKS: &[&str] = &["kubectl", "crictl", "ctr"];

/// Where embedded etcd (or SQLite) keeps a server's datastore.
const SERVER_DB: &str = "/var/lib/rancher/k3s/server/db";

/// The kubelet's local health endpoint.
pub const KUBELET_HEALTHZ: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 10248);

fn install_asset(host: &Host, asset: &BootAsset, dest: &Path, mode: u32) -> Result<Installed> {
    let src = host.boot_file(&asset.file);
    let have_dest = dest.exists();
    if !src.exists() && !have_dest {
        bail!(
            "{} is missing from the boot partition; rebuild the image with `picluster build`",
            src.display()
        );
    }
    install_verified(&src, dest, &asset.sha256, asset.size, Perms::root(mode))
}

/// Install `k3s` and its `kubectl`/`crictl`/`ctr` links.
pub fn install_binary(host: &Host, bundle: &NodeBundle) -> Result<String> {
    let asset = &bundle.k3s.binary;
    let dest = host.path(node_paths::K3S_BINARY);
    let how = install_asset(host, asset, &dest, 0o755)
        .with_context(|| format!("cannot install K3s {}", bundle.k3s.version))?;
    let dir = dest.parent().expect("k3s has a directory");
    let mut linked = Vec::new();
    for name in LINKS {
        let link = dir.join(name);
        match std::fs::symlink_metadata(&link) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::os::unix::fs::symlink("k3s", &link)
                    .with_context(|| format!("cannot link {}", link.display()))?;
                linked.push(*name);
            }
            Err(e) => return Err(e).with_context(|| format!("cannot stat {}", link.display())),
            Ok(m) if m.file_type().is_symlink() => linked.push(*name),
            // A real command of that name is kept, as install.sh does.
            Ok(_) => host.log.info(&format!(
                "{} exists and is not a link: kept",
                link.display()
            )),
        }
    }
    Ok(format!(
        "K3s {} (sha256 {}...) {} {}; {} link to it",
        bundle.k3s.version,
        &asset.sha256[..asset.sha256.len().min(12)],
        match how {
            Installed::Copied => "verified and installed as",
            Installed::AlreadyThere => "already installed as",
        },
        node_paths::K3S_BINARY,
        linked.join(", ")
    ))
}

/// Put the air-gap image archive where K3s imports it at start.
pub fn install_airgap(host: &Host, bundle: &NodeBundle) -> Result<String> {
    let Some(asset) = &bundle.k3s.airgap_images else {
        return Ok("no air-gap archive in this image: K3s pulls its images".into());
    };
    let dest = host.path(&format!("{}/{}", node_paths::AIRGAP_DIR, asset.file));
    let how = install_asset(host, asset, &dest, 0o644)
        .context("cannot install the K3s air-gap image archive")?;
    Ok(format!(
        "{} ({} MiB) {} {}",
        asset.file,
        asset.size / (1024 * 1024),
        match how {
            Installed::Copied => "verified and copied to",
            Installed::AlreadyThere => "already in",
        },
        node_paths::AIRGAP_DIR
    ))
}

/// A first server's config turned into a joining one: `cluster-init` gives
/// way to `server: <url>`; everything else stays as rendered.
pub fn join_existing(config: &str, url: &str) -> String {
    let server = format!("server: {}", serde_json::to_string(url).expect("string"));
    let mut out = String::new();
    let mut placed = false;
    for line in config.split_inclusive('\n') {
        let key = line.split(':').next().unwrap_or("").trim();
        if key == "cluster-init" || key == "server" {
            if !placed {
                out.push_str(&server);
                out.push('\n');
                placed = true;
            }
            continue;
        }
        out.push_str(line);
    }
    if !placed {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&server);
        out.push('\n');
    }
    out
}

/// The files K3s needs before its first start, with the first server's
/// config adjusted when it was re-flashed into a running cluster: if one of
/// the other servers answers on :6443 and this node has no datastore yet, it
/// joins that server instead of initialising a second cluster.
pub fn before_start_files(
    host: &Host,
    bundle: &NodeBundle,
    secrets: &NodeSecrets,
) -> (Vec<FileSpec>, String) {
    let mut files: Vec<FileSpec> = bundle
        .files_for(secrets, Phase::BeforeK3s)
        .cloned()
        .collect();
    let node = &bundle.node;
    let how = match (node.role, node.init_server) {
        (Role::Agent, _) => format!("agent joining {}", node.server_url),
        (Role::Server, false) => format!("server joining {}", node.server_url),
        (Role::Server, true) if host.path(SERVER_DB).exists() => {
            "first server with an existing datastore: kept as it is".to_string()
        }
        (Role::Server, true) => {
            let live = node.other_servers.iter().copied().find(|ip| {
                host.env
                    .tcp_answers(SocketAddr::from((*ip, 6443)), host.timing.probe_timeout)
            });
            match live {
                Some(ip) => {
                    let url = format!("https://{ip}:6443");
                    for f in files
                        .iter_mut()
                        .filter(|f| f.path == node_paths::K3S_CONFIG)
                    {
                        f.content = join_existing(&f.content, &url);
                    }
                    let msg = format!(
                        "re-flashed first server: {ip}:6443 answers, so the cluster is running; \
                         joining it at {url} instead of initialising a second cluster"
                    );
                    host.log.warn(&msg);
                    msg
                }
                None if node.other_servers.is_empty() => {
                    "first server: initialising the cluster (cluster-init)".to_string()
                }
                None => {
                    let others: Vec<String> =
                        node.other_servers.iter().map(|i| i.to_string()).collect();
                    format!(
                        "first server: initialising the cluster (cluster-init); no other server \
                         answers on :6443 ({})",
                        others.join(", ")
                    )
                }
            }
        }
    };
    (files, how)
}

/// One bounded readiness check. `Err` says why the node is not Ready.
pub fn check_ready(host: &Host, bundle: &NodeBundle) -> std::result::Result<String, String> {
    let name = &bundle.node.name;
    let service = format!("{}.service", bundle.k3s.service);
    match bundle.node.role {
        Role::Server => {
            let cmd = Cmd::live(node_paths::K3S_BINARY).args([
                "kubectl".to_string(),
                "wait".into(),
                "--for=condition=Ready".into(),
                format!("--timeout={}s", host.timing.ready_attempt.as_secs()),
                format!("node/{name}"),
            ]);
            match host.try_run(&cmd) {
                Ok(out) if out.success() => Ok(format!("node/{name} condition Ready")),
                Ok(out) => Err(format!("`k3s kubectl wait` says: {}", out.tail())),
                Err(e) => Err(format!("{e:#}")),
            }
        }
        Role::Agent => {
            let active = host.try_run(&host.systemctl_live(&["is-active", &service]));
            match active {
                Ok(out) if out.success() => {}
                Ok(out) => {
                    return Err(format!(
                        "{service} is {}",
                        out.stdout.split_whitespace().next().unwrap_or("not active")
                    ));
                }
                Err(e) => return Err(format!("{e:#}")),
            }
            match host
                .env
                .http_get(KUBELET_HEALTHZ, "/healthz", host.timing.probe_timeout)
            {
                Ok((200, body)) if body.trim() == "ok" => {
                    Ok(format!("{service} active, kubelet healthy"))
                }
                Ok((code, body)) => Err(format!(
                    "kubelet health check answered {code}: {}",
                    body.trim()
                )),
                Err(e) => Err(format!(
                    "kubelet health endpoint http://{KUBELET_HEALTHZ}/healthz: {e}"
                )),
            }
        }
    }
}

/// Recent K3s log lines of this boot (empty when journalctl fails).
pub fn recent_log(host: &Host, bundle: &NodeBundle) -> String {
    let cmd = Cmd::live("journalctl").args([
        "-u".to_string(),
        format!("{}.service", bundle.k3s.service),
        "-b".into(),
        "-n".into(),
        "300".into(),
        "--no-pager".into(),
        "-o".into(),
        "cat".into(),
    ]);
    host.try_run(&cmd).map(|o| o.stdout).unwrap_or_default()
}

/// What to do about a K3s failure recognised in its log, if any.
pub fn diagnose(log: &str, bundle: &NodeBundle) -> Option<String> {
    let name = &bundle.node.name;
    if log.contains("duplicate node name found") {
        return Some(format!(
            "the cluster's etcd still has a member for {name} from before this node was \
             re-imaged. On another server run:  sudo k3s kubectl delete node {name}  \
             (K3s then removes the stale etcd member). Nothing is needed on this node: it \
             keeps retrying and joins once the old member is gone."
        ));
    }
    if log.contains("Node password rejected") {
        return Some(format!(
            "the cluster rejects {name}'s node password: its Node object was registered with \
             another one (an image built from a different secrets.toml?). Either rebuild this \
             node's image with the cluster's secrets.toml, or on a server run:  \
             sudo k3s kubectl delete node {name}  and this node registers again."
        ));
    }
    if log.contains("failed to find memory cgroup") {
        return Some(
            "K3s cannot find the memory cgroup: add `cgroup_enable=memory cgroup_memory=1` \
             to /boot/firmware/cmdline.txt (one line) and reboot."
                .to_string(),
        );
    }
    if log.contains("token CA hash does not match")
        || log.contains("failed to validate token")
        || log.contains("token is not valid")
    {
        return Some(format!(
            "the server at {} does not accept this node's token: the cluster was created with \
             other secrets. Rebuild this node's image with the cluster's own secrets.toml.",
            bundle.node.server_url
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const INIT: &str = "# Written by picluster\ntoken: \"t\"\nagent-token: \"a\"\ncluster-init: true\nnode-name: \"pi-master\"\n";

    #[test]
    fn join_existing_replaces_cluster_init_in_place() {
        let out = join_existing(INIT, "https://192.168.0.121:6443");
        assert_eq!(
            out,
            "# Written by picluster\ntoken: \"t\"\nagent-token: \"a\"\nserver: \"https://192.168.0.121:6443\"\nnode-name: \"pi-master\"\n"
        );
        // Already joining: the server line is replaced, never duplicated.
        assert_eq!(join_existing(&out, "https://192.168.0.121:6443"), out);
    }
}
