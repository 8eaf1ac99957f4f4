//! `picluster status`: the whole cluster's first-boot progress, from the
//! workstation. Per node of the cluster file: TCP reachability (SSH, and the
//! API port on servers), then what the API server says (registered, Ready,
//! roles, K3s version, the agent's step from its Node annotations); per
//! data-platform component, the HelmChart install Job and the self-test Job.

pub mod api;
mod show;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::Result;
use picluster_profiles::bundle::annotations;
use picluster_profiles::{Cluster, Role};
use serde::Serialize;

pub use show::{json, table};

/// Bumped when a field changes meaning; fields are only ever added.
pub const SCHEMA: u32 = 1;

/// The self-test Job of the data platform (overlays/platform-check.yaml).
pub const SELF_TEST: (&str, &str) = ("picluster", "picluster-platform-check");

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: u32,
    pub cluster: String,
    /// The API server asked (the kubeconfig's `server:`), if any.
    pub api: Option<String>,
    /// Why the API gave no answer (then nodes show reachability only).
    pub api_error: Option<String>,
    /// Every node registered and Ready, every component installed.
    pub ready: bool,
    pub nodes: Vec<NodeReport>,
    pub components: Vec<ComponentReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    pub name: String,
    /// "server" or "agent", from the cluster file.
    pub role: String,
    pub ip: String,
    /// TCP 22 answered.
    pub ssh: bool,
    /// TCP 6443 answered (servers only).
    pub api_port: Option<bool>,
    /// A Node object of this name exists (false also when the API was not asked).
    pub registered: bool,
    pub ready: Option<bool>,
    pub roles: Vec<String>,
    pub k3s_version: Option<String>,
    /// `picluster.io/step` on the Node: the agent's last step (or failure).
    pub step: Option<String>,
    pub agent_version: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ComponentReport {
    pub name: String,
    pub namespace: String,
    /// The Job that installs it (or runs the self-test).
    pub job: Option<String>,
    /// "succeeded", "failed", "running" or "pending" (no Job yet).
    pub state: String,
}

fn reachable(addr: SocketAddr, timeout: Duration) -> bool {
    TcpStream::connect_timeout(&addr, timeout).is_ok()
}

/// Probe every node's ports, in parallel.
fn probe(cluster: &Cluster, timeout: Duration) -> Vec<(bool, Option<bool>)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = cluster
            .nodes
            .iter()
            .map(|n| {
                s.spawn(move || {
                    let ssh = reachable(SocketAddr::from((n.ip, 22)), timeout);
                    let api = (n.role == Role::Server)
                        .then(|| reachable(SocketAddr::from((n.ip, 6443)), timeout));
                    (ssh, api)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or((false, None)))
            .collect()
    })
}

/// What the API server knows; `Err` when it cannot be asked.
struct Answers {
    nodes: Vec<api::Node>,
    components: Vec<ComponentReport>,
}

fn ask(api: &api::Api) -> Result<Answers> {
    let nodes = api
        .get::<api::List<api::Node>>("/api/v1/nodes")?
        .map(|l| l.items)
        .unwrap_or_default();
    let charts = api
        .get::<api::List<api::HelmChart>>("/apis/helm.cattle.io/v1/helmcharts")?
        .map(|l| l.items)
        .unwrap_or_default();
    let mut components = Vec::new();
    let job_state = |ns: &str, job: &str| -> Result<Option<&'static str>> {
        Ok(api
            .get::<api::Job>(&format!("/apis/batch/v1/namespaces/{ns}/jobs/{job}"))?
            .map(|j| j.state()))
    };
    for c in charts {
        let ns = c
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let state = match &c.status.job_name {
            Some(job) => job_state(&ns, job)?.unwrap_or("pending"),
            None => "pending",
        };
        components.push(ComponentReport {
            name: c.metadata.name,
            namespace: ns,
            job: c.status.job_name,
            state: state.to_string(),
        });
    }
    let (ns, job) = SELF_TEST;
    if let Some(state) = job_state(ns, job)? {
        components.push(ComponentReport {
            name: "self-test".into(),
            namespace: ns.into(),
            job: Some(job.into()),
            state: state.to_string(),
        });
    }
    Ok(Answers { nodes, components })
}

/// Gather the report. `api` is `Err(why)` when there are no credentials.
pub fn collect(cluster: &Cluster, api: Result<api::Api, String>, timeout: Duration) -> Report {
    let probes = probe(cluster, timeout);
    let (server, answers) = match &api {
        Ok(a) => (
            Some(a.base().to_string()),
            ask(a).map_err(|e| format!("{e:#}")),
        ),
        Err(why) => (None, Err(why.clone())),
    };
    let (known, components, api_error) = match answers {
        Ok(a) => (a.nodes, a.components, None),
        Err(e) => (Vec::new(), Vec::new(), Some(e)),
    };
    let nodes: Vec<NodeReport> = cluster
        .nodes
        .iter()
        .zip(probes)
        .map(|(n, (ssh, api_port))| {
            let k = known.iter().find(|k| k.metadata.name == n.name);
            let ann = |key: &str| k.and_then(|k| k.metadata.annotations.get(key).cloned());
            NodeReport {
                name: n.name.clone(),
                role: n.role.as_str().to_string(),
                ip: n.ip.to_string(),
                ssh,
                api_port,
                registered: k.is_some(),
                ready: k.and_then(api::Node::ready),
                roles: k.map(api::Node::roles).unwrap_or_default(),
                k3s_version: k
                    .map(|k| k.status.node_info.kubelet_version.clone())
                    .filter(|v| !v.is_empty()),
                step: ann(annotations::STEP),
                agent_version: ann(annotations::AGENT_VERSION),
            }
        })
        .collect();
    let ready = api_error.is_none()
        && nodes.iter().all(|n| n.ready == Some(true))
        && components.iter().all(|c| c.state == "succeeded");
    Report {
        schema: SCHEMA,
        cluster: cluster.name.clone(),
        api: server,
        api_error,
        ready,
        nodes,
        components,
    }
}
