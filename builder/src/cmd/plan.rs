//! `picluster plan`: validate the cluster file and show, per node, every file
//! and kernel argument its image will receive. Secrets are masked.

use std::path::PathBuf;

use anyhow::Result;
use picluster_profiles::bundle::BootAsset;
use picluster_profiles::render::{self, RenderInputs};
use picluster_profiles::{Cluster, Node, Phase, Secrets};
use serde::Serialize;

use crate::agent;
use crate::base;
use crate::bootfiles::{self, BootFile, Content, Payload};
use crate::cache::Cache;
use crate::cmd::build::{Inputs, build_epoch, load_inputs, select_nodes};
use crate::fetch::Expect;
use crate::obtain::BaseRequest;
use crate::progress;

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The cluster file.
    #[arg(short, long, default_value = "cluster.toml")]
    pub config: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Show only these nodes (repeatable).
    #[arg(long = "node", value_name = "NAME")]
    pub nodes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Plan {
    pub cluster: String,
    pub k3s_version: String,
    pub k3s_source: String,
    pub api_server: String,
    pub base: String,
    pub base_sha256: Option<String>,
    pub base_cached: bool,
    pub agent: String,
    /// Data-platform components, one line each (empty when none are selected).
    pub platform: Vec<String>,
    /// Per-node memory/CPU budget of the platform, as printed.
    pub budget: Option<String>,
    pub nodes: Vec<NodePlan>,
}

#[derive(Debug, Serialize)]
pub struct NodePlan {
    pub name: String,
    pub role: &'static str,
    pub init_server: bool,
    pub address: String,
    pub gateway: String,
    pub media: &'static str,
    pub labels: Vec<String>,
    pub kernel_args_added: Vec<String>,
    /// The full command line, when the base image is in the cache.
    pub cmdline: Option<String>,
    pub config_txt_added: String,
    pub boot_files: Vec<PlannedBootFile>,
    pub rootfs_files: Vec<PlannedRootFile>,
    pub user: PlannedUser,
}

#[derive(Debug, Serialize)]
pub struct PlannedBootFile {
    pub name: String,
    pub size: Option<u64>,
    pub what: &'static str,
    pub secret: bool,
    /// Content, for small non-secret text files.
    pub content: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PlannedRootFile {
    pub path: String,
    pub mode: String,
    pub owner: String,
    pub phase: Phase,
    pub size: usize,
    pub secret: bool,
    pub content: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PlannedUser {
    pub name: String,
    pub ssh_keys: usize,
    pub keys_only: bool,
}

const MASK: &str = "<secret>";

pub fn run(args: &PlanArgs) -> Result<()> {
    let Inputs { cluster, secrets } = load_inputs(&args.config, false)?;
    let plan = make_plan(&cluster, &secrets, &args.nodes)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", text(&plan));
    }
    Ok(())
}

pub fn make_plan(cluster: &Cluster, secrets: &Secrets, only: &[String]) -> Result<Plan> {
    let nodes = select_nodes(cluster, only)?;
    let request = BaseRequest::new(cluster, None);
    let cache = Cache::from_env().ok();
    // The base's own cmdline.txt and config.txt, when it is already in the cache.
    let digest = match &request.expect {
        Expect::Sha256(d) => Some(d.clone()),
        Expect::Sibling => None,
    };
    let cached = digest
        .as_ref()
        .zip(cache.as_ref())
        .map(|(d, c)| c.base(d))
        .filter(|p| p.exists())
        .and_then(|p| base::inspect(&p).ok());
    if let Some(b) = &cached {
        cluster.refuse_base_account(&b.rootfs.system_names, b.rootfs.pretty_name())?;
    }
    let agent = agent::locate(None);
    let agent_desc = match &agent {
        Ok(a) => format!("picluster-node {} ({})", a.version, a.path.display()),
        Err(agent::AgentError::NotFound(_)) => format!(
            "not built yet (cargo build --release -p picluster-node --target {})",
            agent::TARGET
        ),
        // Stale or foreign: `build` would refuse it, say why now.
        Err(e) => format!("not usable: {}", e.to_string().replace('\n', " ")),
    };
    let pending = |what: &str| BootAsset {
        file: what.to_string(),
        sha256: "(checked at build time)".into(),
        size: 0,
    };
    let inputs = RenderInputs {
        built_at: build_epoch()?,
        picluster_version: env!("CARGO_PKG_VERSION").to_string(),
        k3s_binary: pending(picluster_profiles::bundle::boot_files::K3S_BINARY),
        k3s_airgap: cluster
            .k3s
            .airgap
            .then(|| pending(picluster_profiles::bundle::boot_files::K3S_AIRGAP)),
    };
    let payload = Payload {
        agent: match &agent {
            Ok(a) => Content::File {
                path: a.path.clone(),
                size: a.size,
                sha256: a.sha256.clone(),
            },
            Err(_) => Content::Pending("node agent (not built yet)".into()),
        },
        k3s: Content::Pending(format!(
            "k3s-arm64 {} (fetched at build time)",
            cluster.k3s.version
        )),
        airgap: cluster
            .k3s
            .airgap
            .then(|| Content::Pending("air-gap images (fetched at build time)".into())),
    };
    let node_plans = nodes
        .iter()
        .map(|n| node_plan(cluster, secrets, n, &inputs, &payload, cached.as_ref()))
        .collect::<Result<_>>()?;
    Ok(Plan {
        cluster: cluster.name.clone(),
        k3s_version: cluster.k3s.version.clone(),
        k3s_source: format!("{}/{}", cluster.k3s.mirror, cluster.k3s.version),
        api_server: format!("https://{}:6443", cluster.api_endpoint),
        base: request.location.to_string(),
        base_sha256: digest,
        base_cached: cached.is_some(),
        agent: agent_desc,
        platform: cluster
            .platform
            .describe()
            .lines()
            .map(str::to_string)
            .collect(),
        budget: cluster.platform.budget_table().map(|b| b.to_string()),
        nodes: node_plans,
    })
}

fn node_plan(
    cluster: &Cluster,
    secrets: &Secrets,
    node: &Node,
    inputs: &RenderInputs,
    payload: &Payload,
    base: Option<&base::BaseImage>,
) -> Result<NodePlan> {
    let (bundle, node_secrets) = render::render_node(cluster, secrets, node, inputs)?;
    let base_cmdline = base.map_or("", |b| b.cmdline.as_str());
    let base_config = base.map_or("", |b| b.config_txt.as_str());
    let boot: Vec<BootFile> = bootfiles::boot_files(
        base_cmdline,
        base_config,
        cluster,
        node,
        &bundle,
        &node_secrets,
        payload,
    );
    let config_added = bootfiles::patched_config_txt("", cluster, node)
        .trim_start()
        .to_string();
    // cmdline.txt and config.txt are the base's lines plus picluster's: what
    // they hold is known once the base is in the cache (else see the fields
    // kernel_args_added and config_txt_added).
    let known =
        |f: &BootFile| base.is_some() || !matches!(f.name.as_str(), "cmdline.txt" | "config.txt");
    let boot_files = boot
        .iter()
        .map(|f| PlannedBootFile {
            name: f.name.clone(),
            size: f.size().filter(|_| known(f)),
            what: f.what,
            secret: f.secret,
            content: match &f.content {
                Content::Bytes(b)
                    if known(f)
                        && !f.secret
                        && b.len() <= 4096
                        && f.name != "picluster-node.json" =>
                {
                    Some(String::from_utf8_lossy(b).into_owned())
                }
                _ => None,
            },
        })
        .collect();
    let mut rootfs_files: Vec<PlannedRootFile> = bundle
        .files
        .iter()
        .map(|f| (f, false))
        .chain(node_secrets.files.iter().map(|f| (f, true)))
        .map(|(f, secret)| PlannedRootFile {
            path: f.path.clone(),
            mode: f.mode.to_string(),
            owner: format!("{}:{}", f.owner, f.group),
            phase: f.phase,
            size: f.content.len(),
            secret,
            content: (!secret).then(|| f.content.clone()),
        })
        .collect();
    rootfs_files.sort_by_key(|f| f.phase);
    Ok(NodePlan {
        name: node.name.clone(),
        role: node.role.as_str(),
        init_server: node.init,
        address: format!("{}/{}", node.ip, cluster.network.prefix),
        gateway: cluster.network.gateway.to_string(),
        media: node.media.as_str(),
        labels: node
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        kernel_args_added: render::added_kernel_args(cluster),
        cmdline: base.map(|b| {
            bootfiles::patched_cmdline(&b.cmdline, cluster)
                .trim_end()
                .to_string()
        }),
        config_txt_added: config_added,
        boot_files,
        rootfs_files,
        user: PlannedUser {
            name: bundle.user.name.clone(),
            ssh_keys: bundle.user.authorized_keys.len(),
            keys_only: bundle.user.keys_only,
        },
    })
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Stage1 => "stage 1",
        Phase::BeforeK3s => "before K3s",
        Phase::AfterReady => "after Ready",
    }
}

pub fn text(plan: &Plan) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "cluster \"{}\": {} node(s), K3s {}, API {}",
        plan.cluster,
        plan.nodes.len(),
        plan.k3s_version,
        plan.api_server
    );
    let _ = writeln!(
        s,
        "base:  {}{}",
        plan.base,
        if plan.base_cached {
            " (in cache)"
        } else {
            " (downloaded at build time)"
        }
    );
    let _ = writeln!(s, "k3s:   {}", plan.k3s_source);
    let _ = writeln!(s, "agent: {}", plan.agent);
    if !plan.platform.is_empty() {
        let _ = writeln!(s, "\ndata platform (deployed by the first server):");
        for l in &plan.platform {
            let _ = writeln!(s, "    {l}");
        }
    }
    if let Some(b) = &plan.budget {
        let _ = writeln!(s, "\n{}", b.trim_end());
    }
    for n in &plan.nodes {
        let _ = writeln!(s);
        let role = if n.init_server {
            "server, initialises the cluster".to_string()
        } else {
            n.role.to_string()
        };
        let _ = writeln!(
            s,
            "== {} ({role}) {} via {}, {}",
            n.name,
            n.address,
            n.gateway,
            n.media.to_uppercase()
        );
        if !n.labels.is_empty() {
            let _ = writeln!(s, "labels: {}", n.labels.join(", "));
        }
        let _ = writeln!(
            s,
            "kernel arguments added: {}",
            n.kernel_args_added.join(" ")
        );
        if let Some(c) = &n.cmdline {
            let _ = writeln!(s, "cmdline.txt: {c}");
        }
        if !n.config_txt_added.is_empty() {
            let _ = writeln!(s, "config.txt gains:");
            for l in n.config_txt_added.lines() {
                let _ = writeln!(s, "    {l}");
            }
        }
        let _ = writeln!(s, "boot partition:");
        for f in &n.boot_files {
            let size = match (f.secret, f.size) {
                (_, Some(z)) => progress::size(z),
                (_, None) => "at build".into(),
            };
            let _ = writeln!(
                s,
                "    {:<34} {:>10}  {}{}",
                f.name,
                size,
                f.what,
                if f.secret { "  [secret]" } else { "" }
            );
        }
        let _ = writeln!(s, "root filesystem (written by the node agent):");
        for f in &n.rootfs_files {
            let _ = writeln!(
                s,
                "    {:<11} {} {:<10} {}{}",
                phase_name(f.phase),
                f.mode,
                f.owner,
                f.path,
                if f.secret {
                    format!("  {MASK}")
                } else {
                    String::new()
                }
            );
        }
        let _ = writeln!(
            s,
            "user: {} with {} SSH key(s){}",
            n.user.name,
            n.user.ssh_keys,
            if n.user.keys_only {
                ", keys only (password login disabled)"
            } else {
                ", password set"
            }
        );
    }
    s
}
