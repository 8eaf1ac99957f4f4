//! `picluster plan`: validate the cluster file and show, per node, every file
//! and kernel argument its image will receive. Secrets are masked.

mod text;

use std::path::PathBuf;

use anyhow::Result;
use picluster_profiles::bundle::{BootAsset, boot_files};
use picluster_profiles::platform::{Budget, Platform};
use picluster_profiles::render::{self, RenderInputs};
use picluster_profiles::{Cluster, Node, Phase, Secrets};
use serde::Serialize;

pub use text::text;

use crate::agent;
use crate::base;
use crate::bootfiles::{self, BootFile, Content, Payload};
use crate::cache::Cache;
use crate::cmd::build::{Inputs, build_epoch, load_inputs, select_nodes};
use crate::fetch::Expect;
use crate::obtain::BaseRequest;
use crate::oslist;
use crate::release::{self, FirstBoot};

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

/// What `plan --json` prints. Sizes are bytes, memory MiB, CPU millicores
/// (the unit is in each field's name where it is not bytes). A field that
/// changes meaning or goes away bumps `schema_version`; the shape is pinned by
/// builder/tests/json_shape.rs.
#[derive(Debug, Serialize)]
pub struct Plan {
    pub schema_version: u32,
    pub cluster: String,
    pub k3s_version: String,
    pub k3s_source: String,
    pub api_server: String,
    pub base: PlannedBase,
    pub agent: PlannedAgent,
    /// Data-platform components (empty when none are selected).
    pub platform: Vec<PlannedComponent>,
    /// Per-node memory/CPU requests of the platform.
    pub budget: Option<PlannedBudget>,
    pub nodes: Vec<NodePlan>,
    /// The platform and budget as `plan` prints them.
    #[serde(skip)]
    pub platform_text: String,
    #[serde(skip)]
    pub budget_text: Option<String>,
}

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct PlannedBase {
    /// URL or path of the compressed base image.
    pub location: String,
    /// The pinned digest of the download (absent for a local file checked
    /// against the `.sha256` beside it).
    pub sha256: Option<String>,
    /// Already decompressed in the cache (no download at build time).
    pub cached: bool,
    /// Its Debian release and how it boots first: read from the image once it
    /// is in the cache (`first_boot_known`), else taken from the file name
    /// (`…-raspios-<codename>-arm64-lite.img.xz`) and checked at build time.
    pub codename: Option<String>,
    pub first_boot: Option<FirstBoot>,
    pub first_boot_known: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// Found and built from this picluster's sources.
    Ready,
    NotBuilt,
    /// Found, but `build` would refuse it (`problem` says why).
    Unusable,
}

#[derive(Debug, Serialize)]
pub struct PlannedAgent {
    pub state: AgentState,
    pub path: Option<String>,
    pub version: Option<String>,
    pub sha256: Option<String>,
    pub size: Option<u64>,
    pub problem: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PlannedComponent {
    pub name: &'static str,
    pub summary: &'static str,
    pub namespace: &'static str,
    /// The selected component that needed this one, when the cluster file
    /// did not list it.
    pub added_for: Option<&'static str>,
    pub charts: Vec<PlannedChart>,
    pub images: Vec<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct PlannedChart {
    pub name: &'static str,
    pub version: &'static str,
    pub repo: &'static str,
}

#[derive(Debug, Serialize)]
pub struct PlannedBudget {
    pub node_memory_mib: u32,
    /// Summed over the nodes: requested by the platform, and left for it
    /// after the OS and K3s.
    pub memory_requested_mib: u32,
    pub memory_capacity_mib: u32,
    pub nodes: Vec<BudgetRow>,
}

#[derive(Debug, Serialize)]
pub struct BudgetRow {
    pub node: String,
    pub role: &'static str,
    pub media: &'static str,
    pub memory_requested_mib: u32,
    pub memory_capacity_mib: u32,
    pub cpu_requested_millicores: u32,
    pub cpu_capacity_millicores: u32,
    pub pods: Vec<BudgetPod>,
}

#[derive(Debug, Serialize)]
pub struct BudgetPod {
    pub id: String,
    pub memory_mib: u32,
    pub cpu_millicores: u32,
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
    let planned_agent = planned_agent(&agent);
    let codename = match &cached {
        Some(b) => Some(b.rootfs.codename().to_string()),
        None => oslist::lite_arm64(&request.location.file_name()).map(|(_, c)| c),
    };
    let first_boot = match &cached {
        Some(b) => Some(b.first_boot()),
        None => codename
            .as_deref()
            .map(|c| release::first_boot(c, false, "")),
    };
    let pending = |what: &str| BootAsset {
        file: what.to_string(),
        sha256: "(checked at build time)".into(),
        size: 0,
    };
    let inputs = RenderInputs {
        built_at: build_epoch()?,
        picluster_version: env!("CARGO_PKG_VERSION").to_string(),
        k3s_binary: pending(boot_files::K3S_BINARY),
        k3s_airgap: cluster.k3s.airgap.then(|| pending(boot_files::K3S_AIRGAP)),
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
        .map(|n| {
            node_plan(
                cluster,
                secrets,
                n,
                (&inputs, &payload),
                cached.as_ref(),
                first_boot,
            )
        })
        .collect::<Result<_>>()?;
    Ok(Plan {
        schema_version: SCHEMA_VERSION,
        cluster: cluster.name.clone(),
        k3s_version: cluster.k3s.version.clone(),
        k3s_source: format!("{}/{}", cluster.k3s.mirror, cluster.k3s.version),
        api_server: format!("https://{}:6443", cluster.api_endpoint),
        base: PlannedBase {
            location: request.location.to_string(),
            sha256: digest,
            cached: cached.is_some(),
            codename,
            first_boot,
            first_boot_known: cached.is_some(),
        },
        agent: planned_agent,
        platform: planned_components(&cluster.platform),
        budget: cluster.platform.budget_table().map(planned_budget),
        nodes: node_plans,
        platform_text: cluster.platform.describe(),
        budget_text: cluster.platform.budget_table().map(|b| b.to_string()),
    })
}

fn planned_agent(found: &Result<agent::AgentBinary, agent::AgentError>) -> PlannedAgent {
    let none = |state, problem: Option<String>| PlannedAgent {
        state,
        path: None,
        version: None,
        sha256: None,
        size: None,
        problem,
    };
    match found {
        Ok(a) => PlannedAgent {
            state: AgentState::Ready,
            path: Some(a.path.display().to_string()),
            version: Some(a.version.clone()),
            sha256: Some(a.sha256.clone()),
            size: Some(a.size),
            problem: None,
        },
        Err(agent::AgentError::NotFound(_)) => none(AgentState::NotBuilt, None),
        // Stale or foreign: `build` would refuse it, say why now.
        Err(e) => PlannedAgent {
            path: e.path().map(|p| p.display().to_string()),
            ..none(AgentState::Unusable, Some(e.to_string().replace('\n', " ")))
        },
    }
}

fn planned_components(platform: &Platform) -> Vec<PlannedComponent> {
    platform
        .components
        .iter()
        .map(|&c| PlannedComponent {
            name: c.name(),
            summary: c.summary(),
            namespace: c.namespace(),
            added_for: platform
                .added
                .iter()
                .find(|a| a.component == c)
                .map(|a| a.needed_by.name()),
            charts: c
                .charts()
                .iter()
                .map(|(_, chart)| PlannedChart {
                    name: chart.name,
                    version: chart.version,
                    repo: chart.repo,
                })
                .collect(),
            images: c.images().to_vec(),
        })
        .collect()
}

fn planned_budget(b: &Budget) -> PlannedBudget {
    let nodes: Vec<BudgetRow> = b
        .nodes
        .iter()
        .map(|n| BudgetRow {
            node: n.node.clone(),
            role: n.role.as_str(),
            media: n.media.as_str(),
            memory_requested_mib: n.mem_used(),
            memory_capacity_mib: n.mem_capacity_mib,
            cpu_requested_millicores: n.cpu_used(),
            cpu_capacity_millicores: n.cpu_capacity_m,
            pods: n
                .pods
                .iter()
                .map(|(id, mem, cpu)| BudgetPod {
                    id: id.clone(),
                    memory_mib: *mem,
                    cpu_millicores: *cpu,
                })
                .collect(),
        })
        .collect();
    PlannedBudget {
        node_memory_mib: b.node_memory_mib,
        memory_requested_mib: nodes.iter().map(|n| n.memory_requested_mib).sum(),
        memory_capacity_mib: nodes.iter().map(|n| n.memory_capacity_mib).sum(),
        nodes,
    }
}

fn node_plan(
    cluster: &Cluster,
    secrets: &Secrets,
    node: &Node,
    (inputs, payload): (&RenderInputs, &Payload),
    base: Option<&base::BaseImage>,
    first_boot: Option<FirstBoot>,
) -> Result<NodePlan> {
    let (bundle, node_secrets) = render::render_node(cluster, secrets, node, inputs)?;
    let boot: Vec<BootFile> =
        bootfiles::boot_files(base, cluster, node, &bundle, &node_secrets, payload);
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
        kernel_args_added: bootfiles::added_kernel_args(cluster, first_boot),
        // As written to the image (the boot file list), once the base is known.
        cmdline: base
            .and(boot.iter().find(|f| f.name == boot_files::CMDLINE))
            .and_then(|f| match &f.content {
                Content::Bytes(b) => Some(String::from_utf8_lossy(b).trim_end().to_string()),
                _ => None,
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
