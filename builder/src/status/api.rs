//! A small typed client for the few Kubernetes API reads `picluster status`
//! makes (nodes, HelmCharts, Jobs), on the reqwest/rustls stack the builder
//! already uses for downloads. kube-rs + k8s-openapi would bring tokio, a
//! second HTTP stack and every API type of Kubernetes for three GETs; these
//! types hold only the fields shown, so unknown fields and newer API versions
//! never break them.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::kubeconfig::Credentials;

#[derive(Debug, Deserialize)]
pub struct List<T> {
    #[serde(default = "Vec::new")]
    pub items: Vec<T>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Meta {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    #[serde(default)]
    pub message: Option<String>,
}

/// `v1 Node`, the parts shown.
#[derive(Debug, Deserialize)]
pub struct Node {
    pub metadata: Meta,
    #[serde(default)]
    pub status: NodeStatus,
}

#[derive(Debug, Default, Deserialize)]
pub struct NodeStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(rename = "nodeInfo", default)]
    pub node_info: NodeInfo,
}

#[derive(Debug, Default, Deserialize)]
pub struct NodeInfo {
    /// K3s reports its own version here (`v1.33.5+k3s1`).
    #[serde(rename = "kubeletVersion", default)]
    pub kubelet_version: String,
}

impl Node {
    /// The Ready condition: `Some(true)` only when its status is "True".
    pub fn ready(&self) -> Option<bool> {
        self.status
            .conditions
            .iter()
            .find(|c| c.kind == "Ready")
            .map(|c| c.status == "True")
    }

    /// Roles from `node-role.kubernetes.io/<role>` labels, as kubectl shows them.
    pub fn roles(&self) -> Vec<String> {
        self.metadata
            .labels
            .keys()
            .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
            .map(str::to_string)
            .collect()
    }
}

/// `helm.cattle.io/v1 HelmChart` (K3s's helm-controller), the parts shown.
#[derive(Debug, Deserialize)]
pub struct HelmChart {
    pub metadata: Meta,
    #[serde(default)]
    pub status: HelmChartStatus,
}

#[derive(Debug, Default, Deserialize)]
pub struct HelmChartStatus {
    /// The install Job helm-controller runs for the chart.
    #[serde(rename = "jobName", default)]
    pub job_name: Option<String>,
}

/// `batch/v1 Job`, the parts shown.
#[derive(Debug, Deserialize)]
pub struct Job {
    #[serde(default)]
    pub status: JobStatus,
}

#[derive(Debug, Default, Deserialize)]
pub struct JobStatus {
    #[serde(default)]
    pub active: u32,
    #[serde(default)]
    pub succeeded: u32,
    #[serde(default)]
    pub failed: u32,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

impl Job {
    /// "succeeded", "failed" or "running" (Job conditions `Complete`/`Failed`).
    pub fn state(&self) -> &'static str {
        let cond = |kind: &str| {
            self.status
                .conditions
                .iter()
                .any(|c| c.kind == kind && c.status == "True")
        };
        if cond("Complete") || (self.status.succeeded > 0 && self.status.active == 0) {
            "succeeded"
        } else if cond("Failed") {
            "failed"
        } else {
            "running"
        }
    }
}

/// The API server named by a kubeconfig, authenticated by its client certificate.
pub struct Api {
    client: reqwest::blocking::Client,
    base: String,
}

impl Api {
    pub fn new(creds: &Credentials) -> Result<Api> {
        // Only the cluster's server CA is trusted: the API server's certificate
        // must chain to it and name the address we dial.
        let ca = reqwest::Certificate::from_pem(creds.ca.as_bytes())
            .context("the kubeconfig's certificate-authority-data is not a PEM certificate")?;
        let identity =
            reqwest::Identity::from_pem(format!("{}{}", creds.cert, creds.key).as_bytes())
                .context("the kubeconfig's client certificate or key is not PEM")?;
        let client = reqwest::blocking::Client::builder()
            .tls_certs_only([ca])
            .identity(identity)
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("picluster/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot set up the HTTPS client")?;
        Ok(Api {
            client,
            base: creds.server.trim_end_matches('/').to_string(),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// GET a path; `Ok(None)` on 404 (the resource or its API does not exist).
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .client
            .get(&url)
            .header("Accept", "application/json")
            .send()
            .map_err(|e| anyhow::anyhow!("{url}: {}", error_chain(&e)))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            bail!(
                "{url}: {status}{}",
                match status.as_u16() {
                    401 =>
                        " (the API server does not accept the kubeconfig's client certificate: was the cluster made with these CAs?)",
                    403 => " (the admin certificate is not in system:masters)",
                    _ => "",
                }
            );
        }
        let body = resp
            .bytes()
            .with_context(|| format!("{url}: reading the answer"))?;
        serde_json::from_slice(&body)
            .map(Some)
            .with_context(|| format!("{url}: not the JSON the Kubernetes API answers"))
    }
}

/// reqwest's error with its causes (the TLS reason is in a source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}
