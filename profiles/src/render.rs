//! Rendering a node: every file and kernel argument a node receives, computed on
//! the workstation from the cluster file and secrets, so `picluster plan` can
//! show it before anything is written.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::bundle::{
    BOOT_MOUNT, BUNDLE_FORMAT, BootAsset, FileSpec, K3sPlan, NodeBundle, NodeIdentity, NodeSecrets,
    Phase, UserPlan, boot_files, node_paths,
};
use crate::cluster::{Cluster, Media, Node, Role};
use crate::error::Error;
use crate::platform::{self, Component};
use crate::secrets::Secrets;

/// Arguments that stay on the kernel command line for good: K3s needs the
/// memory cgroup, which the Pi firmware disables by prepending
/// `cgroup_disable=memory`; `cgroup_enable=memory` overrides it.
/// `cgroup_memory=1` is not added: it only meant something for cgroup v1 and
/// 6.12 Pi kernels log it as unknown (raspberrypi/linux #6980).
pub fn persistent_kernel_args(cluster: &Cluster) -> Vec<String> {
    let mut args = vec!["cgroup_enable=memory".to_string()];
    args.extend(cluster.image.extra_kernel_args.iter().cloned());
    args
}

/// Arguments that run stage 1 of the agent on the boot after Raspberry Pi OS's
/// own first boot (which removes its `init=` and reboots). Stage 1 removes them.
/// On failure the node stays up showing the error instead of rebooting in a loop.
pub fn stage1_kernel_args() -> Vec<String> {
    vec![
        format!("systemd.run=\"{BOOT_MOUNT}/{} stage1\"", boot_files::AGENT),
        "systemd.run_success_action=reboot".to_string(),
        "systemd.run_failure_action=none".to_string(),
        "systemd.unit=kernel-command-line.target".to_string(),
    ]
}

/// What picluster adds to cmdline.txt, in order (persistent arguments first).
pub fn added_kernel_args(cluster: &Cluster) -> Vec<String> {
    let mut args = persistent_kernel_args(cluster);
    args.extend(stage1_kernel_args());
    args
}

/// Where the teardown script goes (install.sh's `KILLALL_K3S_SH`).
pub const KILLALL_SCRIPT: &str = "/usr/local/bin/k3s-killall.sh";
const KILLALL: &str = include_str!("scripts/k3s-killall.sh");
/// `{{SERVICE}}` is `k3s` or `k3s-agent`.
const UNINSTALL: &str = include_str!("scripts/k3s-uninstall.sh");

/// Build-time facts that are not in the cluster file.
#[derive(Debug, Clone)]
pub struct RenderInputs {
    pub built_at: i64,
    pub picluster_version: String,
    pub k3s_binary: BootAsset,
    pub k3s_airgap: Option<BootAsset>,
}

/// Groups Raspberry Pi OS gives its first user; the agent skips any that do not exist.
const USER_GROUPS: &[&str] = &[
    "adm", "dialout", "cdrom", "sudo", "audio", "video", "plugdev", "users", "input", "render",
    "netdev", "gpio", "i2c", "spi",
];

/// The bundle and secrets for one node. Fails only when `secrets.toml` lacks
/// data-platform secrets the selection needs (see [`Secrets::fill_platform`]).
pub fn render_node(
    cluster: &Cluster,
    secrets: &Secrets,
    node: &Node,
    inputs: &RenderInputs,
) -> Result<(NodeBundle, NodeSecrets), Error> {
    let server_url = join_url(cluster);
    let tokens = Tokens::for_node(cluster, secrets, node)?;
    let identity = NodeIdentity {
        name: node.name.clone(),
        role: node.role,
        init_server: node.init,
        ip: node.ip,
        prefix: cluster.network.prefix,
        gateway: cluster.network.gateway,
        dns: cluster.network.dns.clone(),
        interface: cluster.network.interface.clone(),
        media: node.media,
        labels: node.labels.clone(),
        taints: node.taints.clone(),
        server_url,
        registration_urls: cluster.registration_urls(&node.name),
        other_servers: cluster
            .servers()
            .filter(|s| s.name != node.name)
            .map(|s| s.ip)
            .collect(),
    };
    let (service, command) = match node.role {
        Role::Server => ("k3s", "server"),
        Role::Agent => ("k3s-agent", "agent"),
    };
    let access = &cluster.access;
    let mut files = vec![
        FileSpec::root(
            "/etc/hostname",
            0o644,
            Phase::Stage1,
            format!("{}\n", node.name),
        ),
        FileSpec::root("/etc/hosts", 0o644, Phase::Stage1, hosts(cluster, node)),
        FileSpec::root(
            &format!(
                "/etc/NetworkManager/system-connections/picluster-{}.nmconnection",
                cluster.network.interface
            ),
            0o600,
            Phase::Stage1,
            nm_keyfile(cluster, node),
        ),
        FileSpec::root(
            "/etc/systemd/system/systemd-time-wait-sync.service.d/picluster.conf",
            0o644,
            Phase::Stage1,
            "# picluster: do not hold boot forever without a time server; the node\n\
             # agent then keeps the clock no earlier than the image build time.\n\
             [Service]\nTimeoutStartSec=90s\n"
                .to_string(),
        ),
        FileSpec::root(
            &format!("/etc/systemd/system/{}", node_paths::AGENT_UNIT),
            0o644,
            Phase::Stage1,
            agent_unit(cluster),
        ),
        FileSpec::root(
            "/etc/ssh/sshd_config.d/10-picluster.conf",
            0o644,
            Phase::Stage1,
            sshd_config(access.keys_only()),
        ),
    ];
    if access.keys_only() {
        files.push(FileSpec::root(
            "/etc/sudoers.d/010_picluster-nopasswd",
            0o440,
            Phase::Stage1,
            format!("# picluster: the account has no password, so sudo cannot ask for one.\n{} ALL=(ALL) NOPASSWD: ALL\n", access.user),
        ));
    }
    files.push(FileSpec::root(
        &format!("/etc/systemd/system/{service}.service"),
        0o644,
        Phase::BeforeK3s,
        k3s_unit(node.role),
    ));
    files.push(FileSpec::root(
        &format!("/etc/systemd/system/{service}.service.env"),
        0o600,
        Phase::BeforeK3s,
        String::new(),
    ));
    // KillMode=process leaves containers running when the unit stops; K3s
    // documents tearing a node down with these two scripts, which its
    // install.sh writes (checked against k3s install.sh, create_killall and
    // create_uninstall). Ours do the same work and are our own text.
    files.push(FileSpec::root(
        KILLALL_SCRIPT,
        0o755,
        Phase::BeforeK3s,
        KILLALL.to_string(),
    ));
    files.push(FileSpec::root(
        &format!("/usr/local/bin/{service}-uninstall.sh"),
        0o755,
        Phase::BeforeK3s,
        UNINSTALL.replace("{{SERVICE}}", service),
    ));

    let mut secret_files = vec![
        FileSpec::root(
            node_paths::K3S_CONFIG,
            0o600,
            Phase::BeforeK3s,
            k3s_config(cluster, &tokens, node),
        ),
        FileSpec::root(
            node_paths::NODE_PASSWORD,
            0o600,
            Phase::BeforeK3s,
            secrets.node_password(&node.name),
        ),
    ];

    // The node that initialises the cluster brings its CAs: K3s uses the files
    // it finds in server/tls at first start (k3s deps.go, createSigningCertKey);
    // servers that join get them with the bootstrap data, agents never.
    if let (true, Role::Server, None, Some(pki)) =
        (node.init, node.role, &cluster.join, &secrets.pki)
    {
        for (name, content) in &pki.files {
            secret_files.push(FileSpec::root(
                &format!("{}/{name}", crate::pki::NODE_TLS_DIR),
                0o600,
                Phase::BeforeK3s,
                content.clone(),
            ));
        }
    }

    // The first server drops the data-platform manifests into K3s's
    // auto-deploy directory once it is Ready; Secrets stay in the node secrets.
    if node.init {
        for m in platform::manifests::manifests(cluster, secrets)? {
            let (list, mode) = if m.secret {
                (&mut secret_files, 0o600)
            } else {
                (&mut files, 0o644)
            };
            list.push(FileSpec::root(
                &m.path(),
                mode,
                Phase::AfterReady,
                m.content,
            ));
        }
    }
    let apt_packages = if cluster.platform.has(Component::Longhorn) {
        vec!["open-iscsi".to_string()]
    } else {
        Vec::new()
    };

    let bundle = NodeBundle {
        format: BUNDLE_FORMAT,
        picluster_version: inputs.picluster_version.clone(),
        built_at: inputs.built_at,
        cluster: cluster.name.clone(),
        node: identity,
        user: UserPlan {
            name: access.user.clone(),
            uid: 1000,
            groups: USER_GROUPS.iter().map(|g| g.to_string()).collect(),
            authorized_keys: access.ssh_authorized_keys.clone(),
            keys_only: access.keys_only(),
        },
        k3s: K3sPlan {
            version: cluster.k3s.version.clone(),
            service: service.to_string(),
            command: command.to_string(),
            binary: inputs.k3s_binary.clone(),
            airgap_images: inputs.k3s_airgap.clone(),
        },
        apt_packages,
        stage1_kernel_args: stage1_kernel_args(),
        files,
    };
    let node_secrets = NodeSecrets {
        format: BUNDLE_FORMAT,
        node: node.name.clone(),
        password_hash: access.password_hash.clone(),
        files: secret_files,
    };
    Ok((bundle, node_secrets))
}

fn hosts(cluster: &Cluster, node: &Node) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n\n",
    );
    let _ = writeln!(
        s,
        "# picluster: cluster \"{}\" (this node is {})",
        cluster.name, node.name
    );
    for n in &cluster.nodes {
        let _ = writeln!(s, "{}\t{}", n.ip, n.name);
    }
    s
}

/// A UUID derived from its inputs, so rebuilt images are byte-identical.
fn stable_uuid(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let mut b: [u8; 16] = h.finalize()[..16].try_into().expect("16 bytes");
    b[6] = (b[6] & 0x0f) | 0x80; // RFC 9562 version 8 (custom)
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let x: String = b.iter().map(|v| format!("{v:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

fn nm_keyfile(cluster: &Cluster, node: &Node) -> String {
    let net = &cluster.network;
    let id = format!("picluster-{}", net.interface);
    let dns: String = net.dns.iter().map(|d| format!("{d};")).collect();
    format!(
        "# picluster: static address of {name} (cluster \"{cluster}\").\n\
         [connection]\nid={id}\nuuid={uuid}\ntype=ethernet\ninterface-name={iface}\nautoconnect=true\nautoconnect-priority=100\n\n\
         [ethernet]\n\n\
         [ipv4]\nmethod=manual\naddress1={ip}/{prefix},{gw}\ndns={dns}\nmay-fail=false\n\n\
         [ipv6]\nmethod=disabled\n\n\
         [proxy]\n",
        name = node.name,
        cluster = cluster.name,
        uuid = stable_uuid(&["nm", &cluster.name, &node.name, &net.interface]),
        iface = net.interface,
        ip = node.ip,
        prefix = net.prefix,
        gw = net.gateway,
    )
}

fn sshd_config(keys_only: bool) -> String {
    let mut s = String::from("# picluster: administrator access by SSH key.\nPermitRootLogin no\n");
    if keys_only {
        s.push_str("PasswordAuthentication no\nKbdInteractiveAuthentication no\n");
    }
    s
}

fn agent_unit(cluster: &Cluster) -> String {
    format!(
        "[Unit]\n\
         Description=picluster node agent: install K3s and join cluster \"{name}\"\n\
         Documentation=man:picluster-node(8)\n\
         Wants=network-online.target time-sync.target\n\
         After=network-online.target time-sync.target\n\
         ConditionPathExists={bundle}\n\n\
         [Service]\n\
         Type=simple\n\
         ExecStart={agent} stage2\n\
         Restart=on-failure\n\
         RestartSec=15s\n\
         StandardOutput=journal+console\n\
         StandardError=journal+console\n\n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        name = cluster.name,
        bundle = node_paths::BUNDLE,
        agent = node_paths::AGENT,
    )
}

/// The K3s unit, equivalent to what the upstream install script writes.
fn k3s_unit(role: Role) -> String {
    let (service, command) = match role {
        Role::Server => ("k3s", "server"),
        Role::Agent => ("k3s-agent", "agent"),
    };
    format!(
        "# picluster: K3s {command} (as the upstream install script sets it up).\n\
         [Unit]\n\
         Description=Lightweight Kubernetes\n\
         Documentation=https://k3s.io\n\
         Wants=network-online.target\n\
         After=network-online.target\n\n\
         [Install]\n\
         WantedBy=multi-user.target\n\n\
         [Service]\n\
         Type=notify\n\
         EnvironmentFile=-/etc/default/%N\n\
         EnvironmentFile=-/etc/sysconfig/%N\n\
         EnvironmentFile=-/etc/systemd/system/{service}.service.env\n\
         KillMode=process\n\
         Delegate=yes\n\
         User=root\n\
         LimitNOFILE=1048576\n\
         LimitNPROC=infinity\n\
         LimitCORE=infinity\n\
         TasksMax=infinity\n\
         TimeoutStartSec=0\n\
         Restart=always\n\
         RestartSec=5s\n\
         ExecStartPre=-/sbin/modprobe br_netfilter\n\
         ExecStartPre=-/sbin/modprobe overlay\n\
         ExecStart={bin} {command}\n",
        bin = node_paths::K3S_BINARY,
    )
}

fn yaml_str(s: &str) -> String {
    // JSON strings are valid YAML double-quoted scalars.
    serde_json::to_string(s).expect("strings serialise")
}

fn yaml_list(out: &mut String, key: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    let _ = writeln!(out, "{key}:");
    for i in items {
        let _ = writeln!(out, "  - {}", yaml_str(i));
    }
}

/// The URL joining nodes write into config.yaml: the `join` cluster's, or
/// `https://<api_endpoint>:6443`.
fn join_url(cluster: &Cluster) -> String {
    cluster
        .join
        .clone()
        .unwrap_or_else(|| format!("https://{}:6443", cluster.api_endpoint))
}

/// The tokens a node's config.yaml carries. Agents carry only an agent token.
struct Tokens {
    token: String,
    /// Servers of a cluster this file creates set the agent token for everyone.
    agent_token: Option<String>,
}

impl Tokens {
    /// With the cluster's own CAs the tokens take K3s's secure form,
    /// `K10<CA hash>::server:<secret>` and `K10<CA hash>::node:<secret>`, so
    /// every joining node checks the CA it is handed before sending
    /// credentials (docs.k3s.io cli/token, "Secure"; the first server may use
    /// it too because its CAs are pre-made). The secret after `server:` is the
    /// passphrase K3s encrypts bootstrap data with, as before.
    fn for_node(cluster: &Cluster, secrets: &Secrets, node: &Node) -> Result<Tokens, Error> {
        if cluster.join.is_none() {
            let (server, agent) = match &secrets.pki {
                Some(pki) => (
                    pki.secure_token("server", &secrets.k3s_token),
                    pki.secure_token("node", &secrets.k3s_agent_token),
                ),
                None => (secrets.k3s_token.clone(), secrets.k3s_agent_token.clone()),
            };
            return Ok(match node.role {
                Role::Server => Tokens {
                    token: server,
                    agent_token: Some(agent),
                },
                Role::Agent => Tokens {
                    token: agent,
                    agent_token: None,
                },
            });
        }
        let (value, field, what) = match node.role {
            Role::Server => (
                secrets.join_server_token.as_deref(),
                "join_server_token",
                "the existing cluster's server token (on one of its servers: sudo cat /var/lib/rancher/k3s/server/token)",
            ),
            Role::Agent => (
                secrets.join_token.as_deref(),
                "join_token",
                "the existing cluster's agent token (on one of its servers: sudo cat /var/lib/rancher/k3s/server/agent-token, or its node-token)",
            ),
        };
        match value {
            Some(token) => Ok(Tokens {
                token: token.to_string(),
                agent_token: None,
            }),
            None => {
                let path = crate::secrets::secrets_path(&cluster.path);
                Err(Error::Invalid(vec![crate::Problem {
                    file: path,
                    line: None,
                    field: field.into(),
                    message: format!(
                        "{} ({}) joins the cluster at {} but secrets.toml holds no {field}",
                        node.name,
                        node.role.as_str(),
                        join_url(cluster)
                    ),
                    hint: Some(format!(
                        "save {what} to a file and run `picluster secrets -c {} --join-token FILE` (or pipe it to `--join-token -`)",
                        cluster.path.display()
                    )),
                }]))
            }
        }
    }
}

/// `/etc/rancher/k3s/config.yaml` by role. Agents carry only the agent token.
fn k3s_config(cluster: &Cluster, tokens: &Tokens, node: &Node) -> String {
    let mut y = format!(
        "# Written by picluster for {} (cluster \"{}\"). Rebuild the image to change it.\n",
        node.name, cluster.name
    );
    let _ = writeln!(y, "token: {}", yaml_str(&tokens.token));
    if let Some(a) = &tokens.agent_token {
        let _ = writeln!(y, "agent-token: {}", yaml_str(a));
    }
    if node.init {
        y.push_str("cluster-init: true\n");
    } else {
        let _ = writeln!(y, "server: {}", yaml_str(&join_url(cluster)));
    }
    let _ = writeln!(y, "node-name: {}", yaml_str(&node.name));
    let _ = writeln!(y, "node-ip: {}", yaml_str(&node.ip.to_string()));
    let _ = writeln!(y, "flannel-iface: {}", yaml_str(&cluster.network.interface));
    let mut labels: Vec<String> = node
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    // Longhorn creates its disks only on labelled nodes: the NVMe ones.
    if cluster.platform.has(Component::Longhorn) && node.media == Media::Nvme {
        labels.push("node.longhorn.io/create-default-disk=true".to_string());
    }
    yaml_list(&mut y, "node-label", &labels);
    yaml_list(&mut y, "node-taint", &node.taints);
    if node.role == Role::Server {
        let mut sans = vec![
            cluster.api_endpoint.clone(),
            node.ip.to_string(),
            node.name.clone(),
        ];
        for s in &cluster.tls_san {
            if !sans.contains(s) {
                sans.push(s.clone());
            }
        }
        sans.dedup();
        yaml_list(&mut y, "tls-san", &sans);
        y.push_str("write-kubeconfig-mode: \"0600\"\n");
        // MetalLB answers for LoadBalancer services instead of ServiceLB.
        if cluster.platform.has(Component::Metallb) {
            yaml_list(&mut y, "disable", &["servicelb".to_string()]);
        }
        // kube-prometheus-stack scrapes etcd on :2381.
        if cluster.platform.has(Component::Monitoring) {
            y.push_str("etcd-expose-metrics: true\n");
        }
    }
    y
}
