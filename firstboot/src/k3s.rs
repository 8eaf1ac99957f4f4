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
use crate::timefmt::span;

/// Commands install.sh links to the k3s binary.
pub const LINKS: &[&str] = &["kubectl", "crictl", "ctr"];

/// Where embedded etcd (or SQLite) keeps a server's datastore.
const SERVER_DB: &str = "/var/lib/rancher/k3s/server/db";

/// The kubeconfig K3s writes for an agent's kubelet.
pub const KUBELET_KUBECONFIG: &str = "/var/lib/rancher/k3s/agent/kubelet.kubeconfig";

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

/// `host:port` of an `https://host:port` URL, when the host is an IPv4 address.
fn url_addr(url: &str) -> Option<SocketAddr> {
    url.strip_prefix("https://")?
        .trim_end_matches('/')
        .parse()
        .ok()
}

/// Probe `candidates` in order, in rounds with backoff, until one answers
/// or `host.timing.peer_wait` has passed. Returns the one that answered and
/// a record of every round.
fn probe_in_rounds(host: &Host, candidates: &[SocketAddr]) -> (Option<SocketAddr>, String) {
    let start = host.env.now();
    let deadline = start + host.timing.peer_wait.as_secs() as i64;
    let mut round = 0;
    loop {
        round += 1;
        if let Some(a) = candidates
            .iter()
            .copied()
            .find(|a| host.env.tcp_answers(*a, host.timing.probe_timeout))
        {
            return (
                Some(a),
                format!(
                    "{a} answered in probe round {round} after {}",
                    span((host.env.now() - start).max(0) as u64)
                ),
            );
        }
        let list: Vec<String> = candidates.iter().map(|a| a.to_string()).collect();
        if host.env.now() >= deadline {
            return (
                None,
                format!(
                    "none of {} answered in {round} probe rounds over {}",
                    list.join(", "),
                    span((host.env.now() - start).max(0) as u64)
                ),
            );
        }
        let pause = host
            .timing
            .backoff(round)
            .min(std::time::Duration::from_secs(
                (deadline - host.env.now()).max(1) as u64,
            ));
        host.log.info(&format!(
            "probe round {round}: none of {} answers on TCP; next round in {}",
            list.join(", "),
            span(pause.as_secs())
        ));
        host.env.sleep(pause);
    }
}

/// Wait (forever, with backoff) until the node's own address is up: before
/// that no probe of a peer means anything.
fn wait_own_address(host: &Host, bundle: &NodeBundle) {
    let ip = bundle.node.ip;
    let mut attempt = 0;
    while !host.env.address_assigned(ip) {
        attempt += 1;
        let pause = host.timing.backoff(attempt);
        host.log.warn(&format!(
            "{ip} is not assigned yet: not deciding between joining and initialising the \
             cluster until it is (check {attempt}, next in {})",
            span(pause.as_secs())
        ));
        host.env.sleep(pause);
    }
}

fn rewrite_server(files: &mut [FileSpec], url: &str) {
    for f in files
        .iter_mut()
        .filter(|f| f.path == node_paths::K3S_CONFIG)
    {
        f.content = join_existing(&f.content, url);
    }
}

/// The files K3s needs before its first start, with `server:` chosen here:
/// - a joining node registers with the first of its registration addresses
///   that answers (so it joins while the first server is down);
/// - a first server with no datastore whose file lists other servers may be a
///   re-flash into a running cluster: once its own address is up it probes the
///   other servers with backoff for several minutes, joins the first that
///   answers, and initialises the cluster only if none does.
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
    let role = node.role.as_str();
    let how = match (node.role, node.init_server) {
        (Role::Agent, _) | (Role::Server, false) => {
            let urls = &node.registration_urls;
            let addrs: Vec<(SocketAddr, &String)> = urls
                .iter()
                .filter_map(|u| url_addr(u).map(|a| (a, u)))
                .collect();
            if urls.len() < 2 || addrs.len() < urls.len() {
                // One address, or a DNS name / VIP: K3s resolves and retries it.
                format!("{role} joining {}", node.server_url)
            } else {
                let candidates: Vec<SocketAddr> = addrs.iter().map(|(a, _)| *a).collect();
                match probe_in_rounds(host, &candidates) {
                    (Some(a), what) => {
                        let url = addrs
                            .iter()
                            .find(|(x, _)| *x == a)
                            .map(|(_, u)| u.as_str())
                            .expect("probed");
                        if url != node.server_url {
                            rewrite_server(&mut files, url);
                        }
                        format!(
                            "{role} joining {url} (registration addresses in order: {}; {what})",
                            urls.join(", ")
                        )
                    }
                    (None, what) => format!(
                        "{role} joining {} ({what}; kept the rendered address, K3s keeps retrying it)",
                        node.server_url
                    ),
                }
            }
        }
        (Role::Server, true) if host.path(SERVER_DB).exists() => {
            "first server with an existing datastore: kept as it is".to_string()
        }
        (Role::Server, true) if node.other_servers.is_empty() => {
            "first server: initialising the cluster (cluster-init); the file lists no other server"
                .to_string()
        }
        (Role::Server, true) => {
            wait_own_address(host, bundle);
            let peers: Vec<SocketAddr> = node
                .other_servers
                .iter()
                .map(|ip| SocketAddr::from((*ip, 6443)))
                .collect();
            match probe_in_rounds(host, &peers) {
                (Some(a), what) => {
                    let url = format!("https://{a}");
                    rewrite_server(&mut files, &url);
                    let msg = format!(
                        "re-flashed first server: {a} answers, so the cluster is running ({what}); \
                         joining it at {url} instead of initialising a second cluster"
                    );
                    host.log.warn(&msg);
                    msg
                }
                (None, what) => {
                    let msg = format!(
                        "first server: initialising the cluster (cluster-init): {} is up and {what}",
                        node.ip
                    );
                    host.log.info(&msg);
                    msg
                }
            }
        }
    };
    (files, how)
}

/// Publish the agent's step on its own Node object (what `picluster status`
/// shows), with the node's kubelet credentials: the Node authorizer and the
/// NodeRestriction admission plugin let a node change its own Node object
/// (kubernetes `plugin/pkg/admission/noderestriction`), and servers run a
/// kubelet with the same kubeconfig. Best effort: failure is only logged.
pub fn publish_step(host: &Host, bundle: &NodeBundle, step: &str) {
    use picluster_profiles::bundle::annotations;
    let name = &bundle.node.name;
    let cmd = Cmd::live(node_paths::K3S_BINARY).args([
        "kubectl".to_string(),
        "annotate".into(),
        format!("--kubeconfig={KUBELET_KUBECONFIG}"),
        "--overwrite".into(),
        "--request-timeout=10s".into(),
        format!("node/{name}"),
        format!("{}={step}", annotations::STEP),
        format!("{}={}", annotations::AGENT_VERSION, crate::VERSION),
    ]);
    match host.try_run(&cmd) {
        Ok(out) if out.success() => {}
        Ok(out) => host.log.warn(&format!(
            "cannot publish step {step:?} on node/{name}: {}",
            out.tail()
        )),
        Err(e) => host.log.warn(&format!(
            "cannot publish step {step:?} on node/{name}: {e:#}"
        )),
    }
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
                Ok((200, body)) if body.trim() == "ok" => {}
                Ok((code, body)) => {
                    return Err(format!(
                        "kubelet health check answered {code}: {}",
                        body.trim()
                    ));
                }
                Err(e) => {
                    return Err(format!(
                        "kubelet health endpoint http://{KUBELET_HEALTHZ}/healthz: {e}"
                    ));
                }
            }
            // A healthy kubelet is not yet a Ready node: read the Node's Ready
            // condition with the agent's own credentials (the system:node role
            // may get/list/watch nodes).
            let cmd = Cmd::live(node_paths::K3S_BINARY).args([
                "kubectl".to_string(),
                "wait".into(),
                format!("--kubeconfig={KUBELET_KUBECONFIG}"),
                "--for=condition=Ready".into(),
                format!("--timeout={}s", host.timing.ready_attempt.as_secs()),
                format!("node/{name}"),
            ]);
            match host.try_run(&cmd) {
                Ok(out) if out.success() => Ok(format!(
                    "{service} active, kubelet healthy, node/{name} condition Ready"
                )),
                Ok(out) => Err(format!(
                    "`k3s kubectl wait` (kubelet credentials) says: {}",
                    out.tail()
                )),
                Err(e) => Err(format!("{e:#}")),
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
        // K3s #12908 (backports #12927 for 1.32, #12926 for 1.33): the member
        // controller may fail to record the removal, so the member survives
        // `kubectl delete node`; etcdctl with K3s's client certificate removes it.
        return Some(format!(
            "the cluster's etcd still has a member for {name} from before this node was \
             re-imaged. On another server run:  sudo k3s kubectl delete node {name}  \
             (K3s then removes the stale etcd member). If this message keeps coming back, \
             the member survived the delete (K3s bug #12908 on 1.32/1.33): on that server list \
             the members with  sudo etcdctl --endpoints https://127.0.0.1:2379 \
             --cacert /var/lib/rancher/k3s/server/tls/etcd/server-ca.crt \
             --cert /var/lib/rancher/k3s/server/tls/etcd/server-client.crt \
             --key /var/lib/rancher/k3s/server/tls/etcd/server-client.key member list  and \
             remove the one named {name}-<8 hex> with  member remove <ID>  (same options). \
             Nothing is needed on this node: it keeps retrying and joins once the old member \
             is gone."
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
            "K3s cannot find the memory cgroup: add `cgroup_enable=memory` \
             to /boot/firmware/cmdline.txt (one line) and reboot."
                .to_string(),
        );
    }
    // K3s's HTTP client reports a refused request as "<url>: <status>"
    // (k3s pkg/clientaccess/token.go, get()); with a plain token the CA is not
    // pinned and the first authenticated request, to /v1-k3s/…, gets 401.
    let unauthorized = log
        .lines()
        .any(|l| l.contains("/v1-k3s/") && l.contains("401 Unauthorized"));
    if unauthorized
        || log.contains("token CA hash does not match")
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
