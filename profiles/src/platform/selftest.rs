//! The platform self-test: a `picluster-platform-check` Job in namespace
//! `picluster` running overlays/platform-check/check.py against every selected
//! component, and its Secret. Rendered whenever the selection is not empty.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::Platform;
use super::budget::sizes;
use super::catalog::{self, Component};
use super::credentials::keys;
use super::template::{Manifest, fill, jstr, resources, yaml_stream};
use crate::cluster::Cluster;

/// The check script, embedded in the manifests as a ConfigMap.
pub const SCRIPT: &str = include_str!("../../../overlays/platform-check/check.py");
pub const NAMESPACE: &str = "picluster";

/// The checks a selection runs, in the order the script runs them, with the
/// (non-secret) settings each needs. Addresses are the Services the overlays
/// and charts create (see overlays/README.md, "Inside the cluster").
fn checks(platform: &Platform) -> (Vec<&'static str>, Vec<(&'static str, String)>) {
    let mut names = Vec::new();
    let mut env: Vec<(&'static str, String)> = Vec::new();
    if platform.object_store().is_some() {
        names.push("s3");
        env.push(("S3_ENDPOINT", "http://s3.s3.svc.cluster.local:9000".into()));
        env.push(("S3_BUCKET", "lake".into()));
        env.push(("S3_REGION", "us-east-1".into()));
    }
    if platform.has(Component::Postgresql) {
        names.push("postgresql");
        env.push((
            "PG_HOST",
            "postgresql-rw.postgresql.svc.cluster.local".into(),
        ));
        env.push(("PG_PORT", "5432".into()));
        env.push(("PG_DATABASE", "lake".into()));
        env.push(("PG_USER", "lake".into()));
    }
    if platform.has(Component::Trino) {
        names.push("trino");
        env.push((
            "TRINO_URL",
            "http://trino.trino.svc.cluster.local:8080".into(),
        ));
    }
    if platform.has(Component::Nifi) {
        names.push("nifi");
        env.push((
            "NIFI_URL",
            "https://nifi.nifi.svc.cluster.local:8443/nifi/".into(),
        ));
    }
    if platform.has(Component::Jupyter) {
        names.push("jupyter");
        env.push((
            "JUPYTER_URL",
            "http://jupyter.jupyter.svc.cluster.local:8888".into(),
        ));
    }
    if platform.has(Component::Monitoring) {
        names.push("grafana");
        names.push("prometheus");
        env.push((
            "GRAFANA_URL",
            "http://monitoring-grafana.monitoring.svc.cluster.local".into(),
        ));
        env.push((
            "PROMETHEUS_URL",
            "http://kps-prometheus.monitoring.svc.cluster.local:9090".into(),
        ));
    }
    if platform.has(Component::Logs) {
        names.push("loki");
        env.push((
            "LOKI_URL",
            "http://loki.logging.svc.cluster.local:3100".into(),
        ));
    }
    (names, env)
}

/// The public manifest (Job, script, RBAC) and the secrets file (Namespace,
/// credentials) of the self-test.
pub fn manifests(cluster: &Cluster, secrets: &BTreeMap<String, String>) -> Vec<Manifest> {
    let platform = &cluster.platform;
    let (names, settings) = checks(platform);
    let mut env: Vec<Value> = vec![
        json!({"name": "CHECKS", "value": names.join(",")}),
        json!({"name": "WAIT_SECONDS", "value": "2700"}),
        json!({"name": "RESULT_CONFIGMAP", "value": format!("{NAMESPACE}/picluster-platform-check")}),
        json!({"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}),
    ];
    env.extend(settings.iter().map(|(k, v)| json!({"name": k, "value": v})));
    let mut vars = BTreeMap::new();
    vars.insert(
        "check_image".to_string(),
        jstr(catalog::PLATFORM_CHECK_IMAGE),
    );
    vars.insert("check_script".to_string(), jstr(SCRIPT));
    vars.insert("check_env".to_string(), Value::Array(env).to_string());
    let (m, c) = sizes::PLATFORM_CHECK;
    vars.insert("res.platform-check".to_string(), resources(m, c));
    let body = fill(include_str!("../../../overlays/platform-check.yaml"), &vars);

    let secret = |key: &str| json!(secrets.get(key).cloned().unwrap_or_default());
    let mut data = serde_json::Map::new();
    if platform.object_store().is_some() {
        data.insert("S3_ACCESS_KEY".into(), secret(keys::S3_ACCESS_KEY));
        data.insert("S3_SECRET_KEY".into(), secret(keys::S3_SECRET_KEY));
    }
    if platform.has(Component::Postgresql) {
        data.insert("PG_PASSWORD".into(), secret(keys::POSTGRESQL_PASSWORD));
    }
    let labels = json!({"app.kubernetes.io/part-of": "picluster"});
    let docs = [
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": NAMESPACE, "labels": labels}}),
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
               "metadata": {"name": "platform-check-env", "namespace": NAMESPACE, "labels": labels},
               "stringData": Value::Object(data)}),
    ];
    vec![
        Manifest {
            component: None,
            file_name: "picluster-platform-check-secrets.yaml".into(),
            content: yaml_stream(
                &format!(
                    "# picluster: namespace and credentials of the platform self-test (cluster \"{}\"). Secret: keep on the node only.\n",
                    cluster.name
                ),
                &docs,
            ),
            secret: true,
        },
        Manifest {
            component: None,
            file_name: "picluster-platform-check.yaml".into(),
            content: format!(
                "# Rendered by picluster for cluster \"{}\"; rebuild the image to change it.\n{body}",
                cluster.name
            ),
            secret: false,
        },
    ]
}
