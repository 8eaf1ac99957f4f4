//! The memory/CPU budget: every pod the selected components run, with the
//! requests picluster writes into its manifests, placed on the cluster's nodes
//! the way the scheduler would have to place them. A selection that cannot be
//! placed is refused before anything is built; the placement found becomes a
//! preferred node affinity in the manifests, so the plan is what runs.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::catalog::Component;
use super::settings::Settings;
use crate::node::{Media, Node, Role};

/// Memory of a Raspberry Pi 5 unless `[platform] node_memory` says otherwise.
pub const DEFAULT_NODE_MEMORY_MIB: u32 = 8192;
/// Kernel, systemd, sshd, NetworkManager, journald, page-cache floor.
pub const OS_RESERVED_MIB: u32 = 512;
/// K3s server process (apiserver, etcd, controllers) on an 8 GB Pi 5.
pub const K3S_SERVER_MIB: u32 = 1600;
/// K3s agent process (kubelet, containerd, flannel).
pub const K3S_AGENT_MIB: u32 = 300;
/// K3s's own add-ons (CoreDNS, metrics-server, Traefik, local-path), counted on the first server.
pub const K3S_ADDONS_MIB: u32 = 256;
/// picluster's one-off Jobs (the platform self-test, 96 MiB, and SeaweedFS's
/// bucket Job, 64 MiB), which may run at the same time; reserved on the first
/// server, whichever node the scheduler gives them.
pub const ONE_OFF_JOBS_MIB: u32 = 160;
/// Four Cortex-A76 cores.
pub const NODE_CPU_M: u32 = 4000;
pub const OS_RESERVED_CPU_M: u32 = 200;
pub const K3S_SERVER_CPU_M: u32 = 600;
pub const K3S_AGENT_CPU_M: u32 = 100;
pub const K3S_ADDONS_CPU_M: u32 = 200;

/// How many copies of a pod run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Count {
    Replicas(u32),
    /// A DaemonSet: one on every node (that matches its node selector).
    EveryNode,
}

/// Where a pod would rather run; the server stays as light as possible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Prefer {
    /// Agents before servers.
    Agents,
    /// Agents booting from NVMe, then other agents, then servers (databases, storage).
    NvmeAgents,
}

/// One pod template and the requests picluster renders for it (memory
/// requests equal limits: a Pi has no swap to absorb overcommit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodSpec {
    /// Unique key, also used as the row label: `trino-worker`.
    pub id: &'static str,
    pub component: Component,
    pub mem_mib: u32,
    pub cpu_m: u32,
    pub count: Count,
    pub prefer: Prefer,
    pub node_selector: BTreeMap<String, String>,
}

/// Fixed sizes of the helper pods picluster does not let users resize.
pub mod sizes {
    /// (memory MiB, CPU millicores) requests.
    pub type Size = (u32, u32);
    pub const CNPG_OPERATOR: Size = (192, 100);
    pub const TRINO_COORDINATOR: Size = (2048, 500);
    pub const PROMETHEUS_OPERATOR: Size = (128, 50);
    pub const CONFIG_RELOADER: Size = (32, 10);
    pub const ALERTMANAGER: Size = (64, 20);
    /// Grafana 13 with the chart's ~30 default dashboards; the grafana chart
    /// (12.11.1 templates/_pod.tpl) sets GOMEMLIMIT to the whole limit.
    pub const GRAFANA: Size = (512, 100);
    /// Each of Grafana's two sidecars (dashboards, datasources).
    pub const GRAFANA_SIDECAR: Size = (64, 10);
    pub const KUBE_STATE_METRICS: Size = (96, 20);
    pub const NODE_EXPORTER: Size = (48, 20);
    pub const ALLOY: Size = (160, 50);
    pub const ALLOY_RELOADER: Size = (16, 5);
    pub const METALLB_CONTROLLER: Size = (64, 20);
    pub const METALLB_SPEAKER: Size = (64, 20);
    pub const CERT_MANAGER_CONTROLLER: Size = (128, 20);
    pub const CERT_MANAGER_WEBHOOK: Size = (64, 10);
    pub const CERT_MANAGER_CAINJECTOR: Size = (128, 20);
    /// A request only: upstream sets no limit (it also serves Longhorn's webhooks).
    pub const LONGHORN_MANAGER: Size = (256, 100);
    /// The platform self-test Job (Python, standard library).
    pub const PLATFORM_CHECK: Size = (96, 20);
    /// Instance manager, engine image and CSI plugin per node: Longhorn sets
    /// no memory request for these, so this is an estimate.
    pub const LONGHORN_NODE_ESTIMATE: Size = (384, 150);
    /// UI, driver deployer, CSI attacher/provisioner/resizer/snapshotter (one each).
    pub const LONGHORN_CLUSTER_ESTIMATE: Size = (384, 100);
}

/// Every pod the components run, in component order.
pub fn pods(components: &[Component], settings: &BTreeMap<Component, Settings>) -> Vec<PodSpec> {
    let mut out = Vec::new();
    for &c in components {
        let s = &settings[&c];
        let mut pod = |id, (mem_mib, cpu_m): sizes::Size, count, prefer| {
            out.push(PodSpec {
                id,
                component: c,
                mem_mib,
                cpu_m,
                count,
                prefer,
                node_selector: s.node_selector.clone(),
            });
        };
        let main = (s.memory_mib, s.cpu_m);
        use Count::*;
        use Prefer::*;
        match c {
            Component::Postgresql => {
                pod("cnpg-operator", sizes::CNPG_OPERATOR, Replicas(1), Agents);
                pod("postgresql", main, Replicas(s.replicas), NvmeAgents);
            }
            Component::Seaweedfs => pod("seaweedfs", main, Replicas(1), NvmeAgents),
            Component::Minio => pod("minio", main, Replicas(1), NvmeAgents),
            Component::Trino => {
                pod(
                    "trino-coordinator",
                    sizes::TRINO_COORDINATOR,
                    Replicas(1),
                    Agents,
                );
                pod("trino-worker", main, Replicas(s.replicas), Agents);
            }
            Component::Nifi => pod("nifi", main, Replicas(1), NvmeAgents),
            Component::Jupyter => pod("jupyter", main, Replicas(1), Agents),
            Component::Monitoring => {
                let r = sizes::CONFIG_RELOADER;
                pod(
                    "prometheus",
                    (s.memory_mib + r.0, s.cpu_m + r.1),
                    Replicas(1),
                    NvmeAgents,
                );
                pod(
                    "alertmanager",
                    (sizes::ALERTMANAGER.0 + r.0, sizes::ALERTMANAGER.1 + r.1),
                    Replicas(1),
                    Agents,
                );
                let (g, sc) = (sizes::GRAFANA, sizes::GRAFANA_SIDECAR);
                pod(
                    "grafana",
                    (g.0 + 2 * sc.0, g.1 + 2 * sc.1),
                    Replicas(1),
                    Agents,
                );
                pod(
                    "prometheus-operator",
                    sizes::PROMETHEUS_OPERATOR,
                    Replicas(1),
                    Agents,
                );
                pod(
                    "kube-state-metrics",
                    sizes::KUBE_STATE_METRICS,
                    Replicas(1),
                    Agents,
                );
                pod("node-exporter", sizes::NODE_EXPORTER, EveryNode, Agents);
            }
            Component::Logs => {
                pod("loki", main, Replicas(1), NvmeAgents);
                let (a, r) = (sizes::ALLOY, sizes::ALLOY_RELOADER);
                pod("alloy", (a.0 + r.0, a.1 + r.1), EveryNode, Agents);
            }
            Component::Metallb => {
                pod(
                    "metallb-controller",
                    sizes::METALLB_CONTROLLER,
                    Replicas(1),
                    Agents,
                );
                pod("metallb-speaker", sizes::METALLB_SPEAKER, EveryNode, Agents);
            }
            Component::CertManager => {
                pod(
                    "cert-manager",
                    sizes::CERT_MANAGER_CONTROLLER,
                    Replicas(1),
                    Agents,
                );
                pod(
                    "cert-manager-webhook",
                    sizes::CERT_MANAGER_WEBHOOK,
                    Replicas(1),
                    Agents,
                );
                pod(
                    "cert-manager-cainjector",
                    sizes::CERT_MANAGER_CAINJECTOR,
                    Replicas(1),
                    Agents,
                );
            }
            Component::Longhorn => {
                let (m, e) = (sizes::LONGHORN_MANAGER, sizes::LONGHORN_NODE_ESTIMATE);
                pod("longhorn-node", (m.0 + e.0, m.1 + e.1), EveryNode, Agents);
                pod(
                    "longhorn-cluster",
                    sizes::LONGHORN_CLUSTER_ESTIMATE,
                    Replicas(1),
                    Agents,
                );
            }
        }
    }
    out
}

/// One node's share of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeBudget {
    pub node: String,
    pub role: Role,
    pub media: Media,
    /// Memory and CPU left for workloads after the OS and K3s.
    pub mem_capacity_mib: u32,
    pub cpu_capacity_m: u32,
    /// (pod id, memory MiB, CPU m) placed here.
    pub pods: Vec<(String, u32, u32)>,
}

impl NodeBudget {
    pub fn mem_used(&self) -> u32 {
        self.pods.iter().map(|p| p.1).sum()
    }
    pub fn cpu_used(&self) -> u32 {
        self.pods.iter().map(|p| p.2).sum()
    }
}

/// The placement of every pod: a table for `picluster plan`, and the nodes each
/// pod is steered to in the manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Budget {
    pub node_memory_mib: u32,
    pub nodes: Vec<NodeBudget>,
}

impl Budget {
    /// Nodes a pod id was placed on (each replica once; repeated for replicas
    /// sharing a node).
    pub fn nodes_of(&self, id: &str) -> Vec<&str> {
        self.nodes
            .iter()
            .flat_map(|n| {
                n.pods
                    .iter()
                    .filter(move |p| p.0 == id)
                    .map(move |_| n.node.as_str())
            })
            .collect()
    }
}

/// Why a selection does not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoesNotFit {
    pub message: String,
    pub hint: String,
}

fn taint_blocks(node: &Node) -> bool {
    node.taints
        .iter()
        .any(|t| t.ends_with(":NoSchedule") || t.ends_with(":NoExecute"))
}

fn selects(node: &Node, selector: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| node.labels.get(k) == Some(v))
}

/// Place every pod, largest first, on the node it prefers that has room.
pub fn place(nodes: &[Node], pods: &[PodSpec], node_memory_mib: u32) -> Result<Budget, DoesNotFit> {
    let mut budget = Budget {
        node_memory_mib,
        nodes: nodes
            .iter()
            .map(|n| {
                let (k3s_mem, k3s_cpu) = match n.role {
                    Role::Server => (K3S_SERVER_MIB, K3S_SERVER_CPU_M),
                    Role::Agent => (K3S_AGENT_MIB, K3S_AGENT_CPU_M),
                };
                let (addon_mem, addon_cpu) = if n.init {
                    (K3S_ADDONS_MIB + ONE_OFF_JOBS_MIB, K3S_ADDONS_CPU_M)
                } else {
                    (0, 0)
                };
                NodeBudget {
                    node: n.name.clone(),
                    role: n.role,
                    media: n.media,
                    mem_capacity_mib: node_memory_mib
                        .saturating_sub(OS_RESERVED_MIB + k3s_mem + addon_mem),
                    cpu_capacity_m: NODE_CPU_M
                        .saturating_sub(OS_RESERVED_CPU_M + k3s_cpu + addon_cpu),
                    pods: Vec::new(),
                }
            })
            .collect(),
    };
    // DaemonSets first: they land on every matching node whatever else runs there.
    for pod in pods.iter().filter(|p| p.count == Count::EveryNode) {
        for (i, n) in nodes.iter().enumerate() {
            if selects(n, &pod.node_selector) {
                budget.nodes[i]
                    .pods
                    .push((pod.id.to_string(), pod.mem_mib, pod.cpu_m));
            }
        }
    }
    let mut replicated: Vec<&PodSpec> = pods
        .iter()
        .filter(|p| matches!(p.count, Count::Replicas(_)))
        .collect();
    // Largest first (stable, so equal sizes keep component order).
    replicated.sort_by_key(|p| std::cmp::Reverse(p.mem_mib));
    for pod in replicated {
        let Count::Replicas(n) = pod.count else {
            continue;
        };
        for replica in 0..n {
            let rank = |i: usize| {
                let node = &nodes[i];
                let server = u8::from(node.role == Role::Server) * 2;
                let media = u8::from(pod.prefer == Prefer::NvmeAgents && node.media != Media::Nvme);
                server + media
            };
            let free = |b: &NodeBudget| {
                (
                    b.mem_capacity_mib.saturating_sub(b.mem_used()),
                    b.cpu_capacity_m.saturating_sub(b.cpu_used()),
                )
            };
            let candidates: Vec<usize> = (0..nodes.len())
                .filter(|&i| !taint_blocks(&nodes[i]) && selects(&nodes[i], &pod.node_selector))
                .collect();
            let choice = candidates
                .iter()
                .copied()
                .filter(|&i| {
                    let (m, c) = free(&budget.nodes[i]);
                    m >= pod.mem_mib && c >= pod.cpu_m
                })
                .min_by_key(|&i| (rank(i), std::cmp::Reverse(free(&budget.nodes[i]).0)));
            match choice {
                Some(i) => budget.nodes[i]
                    .pods
                    .push((pod.id.to_string(), pod.mem_mib, pod.cpu_m)),
                None => {
                    let what = if n > 1 {
                        format!("{} (replica {} of {n})", pod.id, replica + 1)
                    } else {
                        pod.id.to_string()
                    };
                    if candidates.is_empty() {
                        return Err(DoesNotFit {
                            message: format!(
                                "{what} of {} has no node to run on: no untainted node carries the labels {}",
                                pod.component,
                                selector_text(&pod.node_selector)
                            ),
                            hint: format!(
                                "label a node accordingly or change [platform.{}] node_selector",
                                pod.component
                            ),
                        });
                    }
                    let room: Vec<String> = candidates
                        .iter()
                        .map(|&i| {
                            let (m, c) = free(&budget.nodes[i]);
                            format!("{} {} MiB / {} m CPU", nodes[i].name, m, c)
                        })
                        .collect();
                    return Err(DoesNotFit {
                        message: format!(
                            "the selection does not fit on {} nodes of {} MiB: {what} of {} needs {} MiB and {} m CPU, but the most any node has left is: {}",
                            nodes.len(),
                            node_memory_mib,
                            pod.component,
                            pod.mem_mib,
                            pod.cpu_m,
                            room.join(", ")
                        ),
                        hint: format!(
                            "lower replicas or memory under [platform.{}], drop a component, or add a node (`picluster plan` prints the per-node budget)",
                            pod.component
                        ),
                    });
                }
            }
        }
    }
    Ok(budget)
}

fn selector_text(sel: &BTreeMap<String, String>) -> String {
    if sel.is_empty() {
        return "(none)".into();
    }
    sel.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn gib(mib: u32) -> String {
    format!("{:.1} GiB", f64::from(mib) / 1024.0)
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Data-platform budget: requests per node ({} nodes of {}; after the OS and K3s)",
            self.nodes.len(),
            gib(self.node_memory_mib)
        )?;
        writeln!(
            f,
            "{:<20} {:<7} {:<5} {:>24} {:>21}  pods",
            "node", "role", "disk", "memory requested/free", "cpu requested/free"
        )?;
        for n in &self.nodes {
            let (m, c) = (n.mem_used(), n.cpu_used());
            let pct = (m * 100).checked_div(n.mem_capacity_mib).unwrap_or(100);
            let pods: Vec<String> = n
                .pods
                .iter()
                .map(|(id, mem, _)| format!("{id} {mem}Mi"))
                .collect();
            writeln!(
                f,
                "{:<20} {:<7} {:<5} {:>24} {:>21}  {}",
                n.node,
                n.role.as_str(),
                n.media.as_str(),
                format!("{}/{} ({pct}%)", gib(m), gib(n.mem_capacity_mib)),
                format!("{}m/{}m", c, n.cpu_capacity_m),
                if pods.is_empty() {
                    "-".to_string()
                } else {
                    pods.join(", ")
                }
            )?;
        }
        let (used, cap): (u32, u32) = self.nodes.iter().fold((0, 0), |(u, c), n| {
            (u + n.mem_used(), c + n.mem_capacity_mib)
        });
        let overhead = self.node_memory_mib * self.nodes.len() as u32 - cap;
        write!(
            f,
            "total: {} of {} requested; the OS, K3s and picluster's one-off Jobs keep {} of the {}",
            gib(used),
            gib(cap),
            gib(overhead),
            gib(self.node_memory_mib * self.nodes.len() as u32)
        )
    }
}
