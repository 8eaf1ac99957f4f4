//! Rendering the data-platform manifests the first server drops into K3s's
//! auto-deploy directory. Templates are the files in `overlays/`, embedded in
//! the binary; `@@name@@` placeholders are replaced by JSON values (YAML flow
//! style), so a substituted value can never break the surrounding YAML.
//!
//! Every component yields a public file (HelmChart resources, workloads) and,
//! when it has credentials, a secrets file with its Namespace and Kubernetes
//! Secrets. Secrets files go into [`crate::NodeSecrets`] only.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{Value, json};

use super::budget::sizes;
use super::catalog::{self, Chart, Component};
use super::chart_archive::chart_tgz;
use super::credentials::{keys, secret_specs};
use super::settings::Settings;
pub use super::sizing::trino_memory;
use super::sizing::{
    NIFI_CODE_CACHE, NIFI_METASPACE, g1_region_mib, nifi_heap_mib, pg_excluded_alerts,
};
pub use super::template::Manifest;
use super::template::{fill, jstr, resources, yaml_stream};
use super::{Platform, selftest};
use crate::cluster::Cluster;
use crate::error::{Error, Problem};
use crate::secrets::{Secrets, secrets_path};

fn size(s: sizes::Size) -> String {
    resources(s.0, s.1)
}

fn mib_of(quantity: &str) -> u32 {
    let (n, mult) = match quantity {
        q if q.ends_with("Ti") => (&q[..q.len() - 2], 1024 * 1024),
        q if q.ends_with("Gi") => (&q[..q.len() - 2], 1024),
        q if q.ends_with("Mi") => (&q[..q.len() - 2], 1),
        _ => ("0", 0),
    };
    n.parse::<u32>().unwrap_or(0).saturating_mul(mult)
}

struct Ctx<'a> {
    cluster: &'a Cluster,
    platform: &'a Platform,
    secrets: &'a BTreeMap<String, String>,
}

impl Ctx<'_> {
    fn secret(&self, key: &str) -> String {
        self.secrets.get(key).cloned().unwrap_or_default()
    }

    fn settings(&self, c: Component) -> &Settings {
        &self.platform.settings[&c]
    }

    /// Prefer the nodes the budget placed `id` on (a hint, not a pin: the
    /// scheduler still moves pods when a node is gone).
    fn node_affinity(&self, id: &str) -> Value {
        let mut hosts: Vec<&str> = self.platform.budget.nodes_of(id);
        hosts.dedup();
        if hosts.is_empty() {
            return json!({});
        }
        json!({
            "preferredDuringSchedulingIgnoredDuringExecution": [{
                "weight": 100,
                "preference": {"matchExpressions": [{
                    "key": "kubernetes.io/hostname", "operator": "In", "values": hosts
                }]}
            }]
        })
    }

    fn affinity(&self, id: &str) -> String {
        let na = self.node_affinity(id);
        if na == json!({}) {
            "{}".into()
        } else {
            json!({ "nodeAffinity": na }).to_string()
        }
    }

    fn chart(&self, vars: &mut BTreeMap<String, String>, prefix: &str, chart: Chart) {
        let p = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}_")
        };
        vars.insert(format!("{p}repo"), jstr(chart.repo));
        vars.insert(format!("{p}version"), jstr(chart.version));
    }

    fn base_vars(&self, c: Component) -> BTreeMap<String, String> {
        let s = self.settings(c);
        let mut v = BTreeMap::new();
        v.insert("sel".into(), json!(s.node_selector).to_string());
        v.insert("replicas".into(), s.replicas.to_string());
        v.insert("storage".into(), jstr(&s.storage));
        v.insert(
            "gomemlimit".into(),
            format!("{}MiB", s.memory_mib * 80 / 100),
        );
        for pod in super::budget::pods(&[c], &self.platform.settings) {
            v.insert(format!("aff.{}", pod.id), self.affinity(pod.id));
            v.insert(
                format!("nodeaff.{}", pod.id),
                self.node_affinity(pod.id).to_string(),
            );
        }
        v
    }

    fn s3_endpoint(&self) -> &'static str {
        "http://s3.s3.svc.cluster.local:9000"
    }

    /// The public manifest of a component.
    fn public(&self, c: Component) -> String {
        let s = self.settings(c);
        let mut v = self.base_vars(c);
        let main = resources(s.memory_mib, s.cpu_m);
        for &(prefix, chart) in c.charts() {
            self.chart(&mut v, prefix, chart);
        }
        let template = match c {
            Component::Postgresql => {
                v.insert("pg_major".into(), catalog::POSTGRESQL_MAJOR.into());
                v.insert("res.cnpg-operator".into(), size(sizes::CNPG_OPERATOR));
                v.insert("res.postgresql".into(), main);
                v.insert(
                    "pg_shared_buffers".into(),
                    format!("{}MB", s.memory_mib / 4),
                );
                v.insert("pg_cache".into(), format!("{}MB", s.memory_mib / 2));
                v.insert(
                    "monitoring".into(),
                    self.platform.has(Component::Monitoring).to_string(),
                );
                v.insert(
                    "pg_exclude_rules".into(),
                    json!(pg_excluded_alerts(s.replicas)).to_string(),
                );
                include_str!("../../../overlays/postgresql.yaml")
            }
            Component::Seaweedfs => {
                v.insert("image".into(), jstr(catalog::SEAWEEDFS_IMAGE));
                v.insert("check_image".into(), jstr(catalog::PLATFORM_CHECK_IMAGE));
                v.insert("check_script".into(), jstr(selftest::SCRIPT));
                v.insert("res.seaweedfs".into(), main);
                include_str!("../../../overlays/seaweedfs.yaml")
            }
            Component::Minio => {
                v.insert("image".into(), jstr(catalog::MINIO_IMAGE));
                v.insert("res.minio".into(), main);
                include_str!("../../../overlays/minio.yaml")
            }
            Component::Trino => {
                let (ch, chr, cpn) = trino_memory(sizes::TRINO_COORDINATOR.0);
                let (wh, whr, wpn) = trino_memory(s.memory_mib);
                v.insert("coord_heap".into(), format!("{ch}M"));
                v.insert("coord_headroom".into(), format!("{chr}MB"));
                v.insert("coord_per_node".into(), format!("{cpn}MB"));
                v.insert("worker_heap".into(), format!("{wh}M"));
                v.insert("worker_headroom".into(), format!("{whr}MB"));
                v.insert("worker_per_node".into(), format!("{wpn}MB"));
                v.insert("coord_region".into(), format!("{}M", g1_region_mib(ch)));
                v.insert("worker_region".into(), format!("{}M", g1_region_mib(wh)));
                v.insert("query_max_memory".into(), format!("{}MB", wpn * s.replicas));
                v.insert(
                    "res.trino-coordinator".into(),
                    size(sizes::TRINO_COORDINATOR),
                );
                v.insert("res.trino-worker".into(), main);
                include_str!("../../../overlays/trino.yaml")
            }
            Component::Nifi => {
                v.insert("image".into(), jstr(catalog::NIFI_IMAGE));
                v.insert("heap".into(), format!("{}m", nifi_heap_mib(s.memory_mib)));
                v.insert("nifi_code_cache".into(), NIFI_CODE_CACHE.into());
                v.insert("nifi_metaspace".into(), NIFI_METASPACE.into());
                v.insert("res.nifi".into(), main);
                include_str!("../../../overlays/nifi.yaml")
            }
            Component::Jupyter => {
                v.insert("image".into(), jstr(catalog::JUPYTER_IMAGE));
                v.insert("pip".into(), catalog::JUPYTER_PIP_PACKAGES.into());
                let trino = if self.platform.has(Component::Trino) {
                    "trino.trino.svc.cluster.local"
                } else {
                    ""
                };
                v.insert("trino_host".into(), trino.into());
                v.insert("res.jupyter".into(), main);
                include_str!("../../../overlays/jupyter.yaml")
            }
            Component::Monitoring => {
                let endpoints: Vec<String> =
                    self.cluster.servers().map(|n| n.ip.to_string()).collect();
                v.insert("etcd_endpoints".into(), json!(endpoints).to_string());
                v.insert(
                    "retention_size".into(),
                    format!("{}MB", mib_of(&s.storage) * 80 / 100),
                );
                v.insert("res.prometheus".into(), main);
                v.insert("res.config-reloader".into(), size(sizes::CONFIG_RELOADER));
                v.insert(
                    "res.prometheus-operator".into(),
                    size(sizes::PROMETHEUS_OPERATOR),
                );
                v.insert("res.alertmanager".into(), size(sizes::ALERTMANAGER));
                v.insert(
                    "res.kube-state-metrics".into(),
                    size(sizes::KUBE_STATE_METRICS),
                );
                v.insert("res.node-exporter".into(), size(sizes::NODE_EXPORTER));
                v.insert("res.grafana".into(), size(sizes::GRAFANA));
                v.insert("res.grafana-sidecar".into(), size(sizes::GRAFANA_SIDECAR));
                let datasources = if self.platform.has(Component::Logs) {
                    json!([{
                        "name": "Loki", "type": "loki", "access": "proxy",
                        "url": "http://loki.logging.svc.cluster.local:3100"
                    }])
                } else {
                    json!([])
                };
                v.insert("grafana_datasources".into(), datasources.to_string());
                // SeaweedFS's metrics (-metricsPort 9327) through the endpoints
                // of its headless Service; a scrape config rather than a
                // ServiceMonitor, so no custom resource races its CRD.
                let scrape = if self.platform.has(Component::Seaweedfs) {
                    json!([{
                        "job_name": "seaweedfs",
                        "kubernetes_sd_configs": [{"role": "endpoints", "namespaces": {"names": ["s3"]}}],
                        "relabel_configs": [
                            {"source_labels": ["__meta_kubernetes_service_name", "__meta_kubernetes_endpoint_port_name"],
                             "regex": "seaweedfs;metrics", "action": "keep"},
                            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"}
                        ]
                    }])
                } else {
                    json!([])
                };
                v.insert("extra_scrape_configs".into(), scrape.to_string());
                include_str!("../../../overlays/monitoring.yaml")
            }
            Component::Logs => {
                v.insert("res.loki".into(), main);
                v.insert("res.alloy".into(), size(sizes::ALLOY));
                v.insert("res.alloy-reloader".into(), size(sizes::ALLOY_RELOADER));
                include_str!("../../../overlays/logs.yaml")
            }
            Component::Metallb => {
                v.insert(
                    "res.metallb-controller".into(),
                    size(sizes::METALLB_CONTROLLER),
                );
                v.insert("res.metallb-speaker".into(), size(sizes::METALLB_SPEAKER));
                let mut pool_vars = BTreeMap::new();
                pool_vars.insert(
                    "addresses".to_string(),
                    json!(self.platform.metallb_addresses).to_string(),
                );
                let pool = fill(
                    include_str!("../../../overlays/metallb-pool.yaml"),
                    &pool_vars,
                );
                let tgz = chart_tgz(
                    "picluster-metallb-pool",
                    &[
                        (
                            "Chart.yaml",
                            "apiVersion: v2\nname: picluster-metallb-pool\ndescription: MetalLB address pool rendered by picluster\nversion: 1.0.0\n".to_string(),
                        ),
                        ("templates/pool.yaml", pool),
                    ],
                );
                v.insert(
                    "pool_chart".into(),
                    jstr(&base64::engine::general_purpose::STANDARD.encode(tgz)),
                );
                include_str!("../../../overlays/metallb.yaml")
            }
            Component::CertManager => {
                v.insert(
                    "res.cert-manager".into(),
                    size(sizes::CERT_MANAGER_CONTROLLER),
                );
                v.insert(
                    "res.cert-manager-webhook".into(),
                    size(sizes::CERT_MANAGER_WEBHOOK),
                );
                v.insert(
                    "res.cert-manager-cainjector".into(),
                    size(sizes::CERT_MANAGER_CAINJECTOR),
                );
                include_str!("../../../overlays/cert-manager.yaml")
            }
            Component::Longhorn => {
                let (m, c) = sizes::LONGHORN_MANAGER;
                v.insert(
                    "res.longhorn-manager".into(),
                    json!({"requests": {"memory": format!("{m}Mi"), "cpu": format!("{c}m")}})
                        .to_string(),
                );
                include_str!("../../../overlays/longhorn.yaml")
            }
        };
        fill(template, &v)
    }

    fn namespace(&self, name: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "picluster"}}
        })
    }

    fn secret_obj(&self, ns: &str, name: &str, kind: &str, data: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": kind,
            "metadata": {"name": name, "namespace": ns, "labels": {"app.kubernetes.io/part-of": "picluster"}},
            "stringData": data
        })
    }

    /// Connection variables for clients of PostgreSQL and S3 (Trino, NiFi).
    fn connections(&self, data: &mut serde_json::Map<String, Value>) {
        if self.platform.has(Component::Postgresql) {
            data.insert(
                "PG_HOST".into(),
                json!("postgresql-rw.postgresql.svc.cluster.local"),
            );
            data.insert("PG_DATABASE".into(), json!("lake"));
            data.insert("PG_USER".into(), json!("lake"));
            data.insert(
                "PG_PASSWORD".into(),
                json!(self.secret(keys::POSTGRESQL_PASSWORD)),
            );
        }
        if self.platform.object_store().is_some() {
            data.insert("S3_ENDPOINT".into(), json!(self.s3_endpoint()));
            data.insert(
                "S3_ACCESS_KEY".into(),
                json!(self.secret(keys::S3_ACCESS_KEY)),
            );
            data.insert(
                "S3_SECRET_KEY".into(),
                json!(self.secret(keys::S3_SECRET_KEY)),
            );
        }
    }

    /// The Secrets of a component (with their Namespace first), if it has any.
    fn secret_docs(&self, c: Component) -> Vec<Value> {
        let ns = c.namespace();
        let secret = match c {
            Component::Postgresql => self.secret_obj(
                ns,
                "postgresql-app",
                "kubernetes.io/basic-auth",
                json!({"username": "lake", "password": self.secret(keys::POSTGRESQL_PASSWORD)}),
            ),
            Component::Seaweedfs => {
                let config = json!({"identities": [{
                    "name": "picluster",
                    "credentials": [{
                        "accessKey": self.secret(keys::S3_ACCESS_KEY),
                        "secretKey": self.secret(keys::S3_SECRET_KEY)
                    }],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]
                }]});
                let client = self.secret_obj(
                    ns,
                    "s3-client",
                    "Opaque",
                    json!({
                        "S3_ACCESS_KEY": self.secret(keys::S3_ACCESS_KEY),
                        "S3_SECRET_KEY": self.secret(keys::S3_SECRET_KEY)
                    }),
                );
                return vec![
                    self.namespace(ns),
                    self.secret_obj(ns, "s3-config", "Opaque", json!({"s3.json": config.to_string()})),
                    client,
                ];
            }
            Component::Minio => self.secret_obj(
                ns,
                "s3-credentials",
                "Opaque",
                json!({
                    "MINIO_ROOT_USER": self.secret(keys::S3_ACCESS_KEY),
                    "MINIO_ROOT_PASSWORD": self.secret(keys::S3_SECRET_KEY)
                }),
            ),
            Component::Trino => {
                let mut data = serde_json::Map::new();
                self.connections(&mut data);
                self.secret_obj(ns, "trino-connections", "Opaque", Value::Object(data))
            }
            Component::Nifi => {
                let mut data = serde_json::Map::new();
                data.insert("SINGLE_USER_CREDENTIALS_USERNAME".into(), json!("admin"));
                data.insert(
                    "SINGLE_USER_CREDENTIALS_PASSWORD".into(),
                    json!(self.secret(keys::NIFI_PASSWORD)),
                );
                data.insert(
                    "NIFI_SENSITIVE_PROPS_KEY".into(),
                    json!(self.secret(keys::NIFI_SENSITIVE_KEY)),
                );
                self.connections(&mut data);
                self.secret_obj(ns, "nifi-env", "Opaque", Value::Object(data))
            }
            Component::Jupyter => self.secret_obj(
                ns,
                "jupyter-env",
                "Opaque",
                json!({
                    "JUPYTER_TOKEN": self.secret(keys::JUPYTER_TOKEN),
                    "AWS_ACCESS_KEY_ID": self.secret(keys::S3_ACCESS_KEY),
                    "AWS_SECRET_ACCESS_KEY": self.secret(keys::S3_SECRET_KEY)
                }),
            ),
            Component::Monitoring => self.secret_obj(
                ns,
                "grafana-admin",
                "Opaque",
                json!({"admin-user": "admin", "admin-password": self.secret(keys::GRAFANA_ADMIN_PASSWORD)}),
            ),
            Component::Logs
            | Component::Metallb
            | Component::CertManager
            | Component::Longhorn => return Vec::new(),
        };
        vec![self.namespace(ns), secret]
    }
}

/// Every manifest of the cluster's platform selection, public files and
/// secrets files, in component order. Fails when `secrets.toml` lacks a
/// platform secret (fill them first with [`Secrets::fill_platform`]).
pub fn manifests(cluster: &Cluster, secrets: &Secrets) -> Result<Vec<Manifest>, Error> {
    let platform = &cluster.platform;
    let missing: Vec<&str> = secret_specs(platform)
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| !secrets.platform.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return Err(Error::Invalid(vec![Problem {
            file: secrets_path(&cluster.path),
            line: None,
            field: "platform".into(),
            message: format!(
                "the data-platform secrets {} are missing",
                missing.join(", ")
            ),
            hint: Some(format!(
                "run `picluster secrets -c {}` to add them (existing values are kept)",
                cluster.path.display()
            )),
        }]));
    }
    let short: Vec<&str> = [keys::NIFI_PASSWORD, keys::NIFI_SENSITIVE_KEY]
        .into_iter()
        .filter(|k| secrets.platform.get(*k).is_some_and(|v| v.len() < 12))
        .collect();
    if !short.is_empty() {
        return Err(Error::Invalid(vec![Problem {
            file: secrets_path(&cluster.path),
            line: None,
            field: format!("platform.{}", short[0]),
            message: "NiFi refuses passwords and keys shorter than 12 characters".into(),
            hint: Some("delete the entry and run `picluster secrets` to generate a new one".into()),
        }]));
    }
    let ctx = Ctx {
        cluster,
        platform,
        secrets: &secrets.platform,
    };
    let mut out = Vec::new();
    for &c in &platform.components {
        let docs = ctx.secret_docs(c);
        if !docs.is_empty() {
            out.push(Manifest {
                component: Some(c),
                file_name: format!("picluster-{c}-secrets.yaml"),
                content: yaml_stream(
                    &format!(
                        "# picluster: namespace and credentials of {c} (cluster \"{}\"). Secret: keep on the node only.\n",
                        cluster.name
                    ),
                    &docs,
                ),
                secret: true,
            });
        }
        let body = ctx.public(c);
        out.push(Manifest {
            component: Some(c),
            file_name: format!("picluster-{c}.yaml"),
            content: format!(
                "# Rendered by picluster for cluster \"{}\"; rebuild the image to change it.\n{body}",
                cluster.name
            ),
            secret: false,
        });
    }
    if !platform.is_empty() {
        out.extend(selftest::manifests(cluster, &secrets.platform));
    }
    Ok(out)
}
