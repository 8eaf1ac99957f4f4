//! `picluster status` against a stand-in API server on 127.0.0.120 that, like
//! kube-apiserver, accepts only client certificates of the cluster's client CA
//! and answers with Kubernetes API JSON written in the API's shape (nodes,
//! HelmCharts, Jobs) as K3s v1.33 serves it.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use support::*;

const HOST: &str = "127.0.0.120";

fn init_loopback_cluster(cache: &Path, dir: &Path) {
    init_with_key(cache, dir);
    // Every address on loopback: the test never sends a packet elsewhere.
    let cfg = dir.join("cluster.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("192.168.0.", "127.0.0.");
    std::fs::write(&cfg, text).unwrap();
}

/// A loopback cluster in `d/name`, with `d/cache` as picluster's cache.
fn new_cluster(d: &Path, name: &str) -> std::path::PathBuf {
    let dir = d.join(name);
    std::fs::create_dir(&dir).unwrap();
    init_loopback_cluster(&d.join("cache"), &dir);
    dir
}

struct ApiServer {
    child: Child,
    port: u16,
    root: std::path::PathBuf,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A serving certificate from the cluster's server CA naming `HOST`, and the
/// stand-in server requiring client certificates of the client CA.
fn start_api(dir: &Path) -> ApiServer {
    let pki = dir.join("pki");
    let key = dir.join("serving.key");
    let csr = dir.join("serving.csr");
    let crt = dir.join("serving.crt");
    let ext = dir.join("serving.ext");
    std::fs::write(
        &ext,
        format!("subjectAltName=IP:{HOST},DNS:kubernetes\nextendedKeyUsage=serverAuth\n"),
    )
    .unwrap();
    run(Command::new("openssl")
        .args([
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
        ])
        .arg(&key));
    run(Command::new("openssl")
        .args(["req", "-new", "-subj", "/CN=kube-apiserver", "-key"])
        .arg(&key)
        .arg("-out")
        .arg(&csr));
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(pki.join("server-ca.crt"))
        .arg("-CAkey")
        .arg(pki.join("server-ca.key"))
        .arg("-CAcreateserial")
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&crt));
    let root = dir.join("api");
    std::fs::create_dir_all(&root).unwrap();
    let mut child = Command::new("python3")
        .arg(repo_root().join("builder/tests/support/kube_api.py"))
        .arg(HOST)
        .arg(&crt)
        .arg(&key)
        .arg(pki.join("client-ca.crt"))
        .arg(&root)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().expect("the server prints its port");
    ApiServer { child, port, root }
}

fn answer(root: &Path, path: &str, json: serde_json::Value) {
    let file = root.join(format!("{}.json", path.trim_start_matches('/')));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(file, serde_json::to_vec(&json).unwrap()).unwrap();
}

fn node(name: &str, ready: bool, roles: &[&str], step: Option<&str>) -> serde_json::Value {
    let mut labels = serde_json::json!({"kubernetes.io/hostname": name});
    for r in roles {
        labels[format!("node-role.kubernetes.io/{r}")] = "true".into();
    }
    let mut annotations = serde_json::json!({"k3s.io/node-args": "[]"});
    if let Some(s) = step {
        annotations["picluster.io/step"] = s.into();
        annotations["picluster.io/agent-version"] = "0.1.0".into();
    }
    serde_json::json!({
        "metadata": {"name": name, "labels": labels, "annotations": annotations,
                     "uid": "0c7e2a1e-0000-4000-8000-000000000000"},
        "spec": {"podCIDR": "10.42.0.0/24"},
        "status": {
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": if ready { "True" } else { "False" },
                 "reason": if ready { "KubeletReady" } else { "KubeletNotReady" }}
            ],
            "nodeInfo": {"kubeletVersion": "v1.33.5+k3s1", "architecture": "arm64",
                         "containerRuntimeVersion": "containerd://2.1.4-k3s1"}
        }
    })
}

fn chart(name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "helm.cattle.io/v1", "kind": "HelmChart",
        "metadata": {"name": name, "namespace": "kube-system"},
        "spec": {"chart": name, "targetNamespace": name},
        "status": {"jobName": format!("helm-install-{name}")}
    })
}

fn job(complete: bool) -> serde_json::Value {
    if complete {
        serde_json::json!({"kind": "Job", "status": {"succeeded": 1,
            "conditions": [{"type": "Complete", "status": "True"}]}})
    } else {
        serde_json::json!({"kind": "Job", "status": {"active": 1}})
    }
}

fn kubeconfig_for(cache: &Path, dir: &Path, port: u16) -> std::path::PathBuf {
    run(picluster(cache)
        .arg("kubeconfig")
        .arg("-c")
        .arg(dir.join("cluster.toml")));
    let path = dir.join("kubeconfig");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        &format!("\"https://{HOST}:6443\""),
        &format!("\"https://{HOST}:{port}\""),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn status(cache: &Path, dir: &Path, extra: &[&str]) -> (bool, String, String) {
    let out = picluster(cache)
        .arg("status")
        .arg("-c")
        .arg(dir.join("cluster.toml"))
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn status_shows_each_node_and_component_from_the_api_and_exits_zero_only_when_ready() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    let dir = new_cluster(d.path(), "c");
    let api = start_api(&dir);
    kubeconfig_for(&cache, &dir, api.port);
    // pi-worker-3 has not registered: it is missing from the answer.
    answer(
        &api.root,
        "/api/v1/nodes",
        serde_json::json!({"kind": "NodeList", "apiVersion": "v1", "items": [
            node("pi-master", true, &["control-plane", "etcd", "master"], Some("done")),
            node("pi-worker-1", false, &[], Some("ready")),
            node("pi-worker-2", true, &[], None),
        ]}),
    );
    answer(
        &api.root,
        "/apis/helm.cattle.io/v1/helmcharts",
        serde_json::json!({"kind": "HelmChartList", "items": [chart("postgresql"), chart("trino")]}),
    );
    answer(
        &api.root,
        "/apis/batch/v1/namespaces/kube-system/jobs/helm-install-postgresql",
        job(true),
    );
    answer(
        &api.root,
        "/apis/batch/v1/namespaces/kube-system/jobs/helm-install-trino",
        job(false),
    );
    // SSH on pi-worker-1 answers; nobody else listens on 22 here.
    let ssh = std::net::TcpListener::bind("127.0.0.121:22").ok();
    let ssh_up = |ip: &str| std::net::TcpStream::connect((ip, 22)).is_ok();

    let (ok, table, err) = status(&cache, &dir, &[]);
    assert!(!ok, "not everything is Ready: {table}");
    assert!(err.contains("not Ready yet"), "{err}");
    let line = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{table}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(
        table.lines().nth(1).unwrap().starts_with("NODE "),
        "{table}"
    );
    assert!(
        line("pi-master").contains("server 127.0.0.120")
            && line("pi-master")
                .contains(" yes yes control-plane,etcd,master v1.33.5+k3s1 done (agent 0.1.0)"),
        "{table}"
    );
    assert!(
        line("pi-worker-1").contains(" yes no - v1.33.5+k3s1 ready (agent 0.1.0)"),
        "{table}"
    );
    assert!(
        line("pi-worker-2").ends_with(" yes yes - v1.33.5+k3s1 -"),
        "{table}"
    );
    assert!(
        line("pi-worker-3").ends_with(" not registered - - - -"),
        "{table}"
    );
    if ssh.is_some() {
        assert!(line("pi-worker-1").contains("127.0.0.121 up"), "{table}");
    }
    let master_ssh = if ssh_up("127.0.0.120") { "up" } else { "down" };
    assert!(
        line("pi-master").contains(&format!("127.0.0.120 {master_ssh} down")),
        "{table}"
    );
    // Columns are aligned: every node row starts its IP at the same offset.
    let col = |l: &str| l.find("127.0.0.").unwrap();
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("pi-")).collect();
    assert!(rows.iter().all(|l| col(l) == col(rows[0])), "{table}");
    assert!(!table.contains('\x1b'), "no colour off a terminal");
    assert!(
        table.contains("postgresql") && table.contains("helm-install-trino"),
        "{table}"
    );
    let comp = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap()
            .split_whitespace()
            .last()
            .unwrap()
            .to_string()
    };
    assert_eq!(comp("postgresql"), "succeeded");
    assert_eq!(comp("trino"), "running");

    // The stand-in saw the kubeconfig's admin certificate.
    let log = std::fs::read_to_string(api.root.join("requests.log")).unwrap();
    assert!(
        log.lines()
            .all(|l| l.starts_with("organizationName=system:masters,commonName=picluster-admin ")),
        "{log}"
    );

    let (ok, out, _) = status(&cache, &dir, &["--json"]);
    assert!(!ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["schema"], 1);
    assert_eq!(v["cluster"], "homelab");
    assert_eq!(v["ready"], false);
    assert_eq!(v["api"], format!("https://{HOST}:{}", api.port));
    assert!(v["api_error"].is_null());
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 4);
    assert_eq!(nodes[0]["name"], "pi-master");
    assert_eq!(nodes[0]["role"], "server");
    assert_eq!(nodes[0]["ready"], true);
    assert_eq!(nodes[0]["step"], "done");
    assert_eq!(nodes[0]["agent_version"], "0.1.0");
    assert_eq!(nodes[0]["k3s_version"], "v1.33.5+k3s1");
    assert_eq!(
        nodes[0]["roles"],
        serde_json::json!(["control-plane", "etcd", "master"])
    );
    assert_eq!(nodes[0]["api_port"], false);
    assert_eq!(nodes[1]["ready"], false);
    assert!(nodes[1]["api_port"].is_null(), "agents have no API port");
    assert_eq!(nodes[3]["name"], "pi-worker-3");
    assert_eq!(nodes[3]["registered"], false);
    assert!(nodes[3]["ready"].is_null() && nodes[3]["step"].is_null());
    assert_eq!(
        v["components"],
        serde_json::json!([
            {"name": "postgresql", "namespace": "kube-system", "job": "helm-install-postgresql", "state": "succeeded"},
            {"name": "trino", "namespace": "kube-system", "job": "helm-install-trino", "state": "running"},
        ])
    );

    // Everything Ready, the charts and the self-test done: exit 0.
    answer(
        &api.root,
        "/api/v1/nodes",
        serde_json::json!({"kind": "NodeList", "items": [
            node("pi-master", true, &["control-plane", "etcd", "master"], Some("done")),
            node("pi-worker-1", true, &[], Some("done")),
            node("pi-worker-2", true, &[], Some("done")),
            node("pi-worker-3", true, &[], Some("done")),
        ]}),
    );
    answer(
        &api.root,
        "/apis/batch/v1/namespaces/kube-system/jobs/helm-install-trino",
        job(true),
    );
    answer(
        &api.root,
        "/apis/batch/v1/namespaces/picluster/jobs/picluster-platform-check",
        job(true),
    );
    let (ok, table, err) = status(&cache, &dir, &["--watch"]);
    assert!(ok, "{table}\n{err}");
    assert!(
        table.contains("all 4 nodes Ready") && table.contains("self-test"),
        "{table}"
    );
}

#[test]
fn a_certificate_from_other_cas_is_refused_and_status_shows_reachability_only() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    let dir = new_cluster(d.path(), "c");
    let other = new_cluster(d.path(), "other");
    let api = start_api(&dir);
    answer(
        &api.root,
        "/api/v1/nodes",
        serde_json::json!({"items": [node("pi-master", true, &[], None)]}),
    );
    // Another cluster's kubeconfig: its client CA is not this server's.
    let kc = kubeconfig_for(&cache, &other, api.port);
    let (ok, out, _) = status(
        &cache,
        &dir,
        &["--json", "--kubeconfig", kc.to_str().unwrap()],
    );
    assert!(!ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let e = v["api_error"].as_str().unwrap();
    assert!(e.contains(&format!("https://{HOST}:{}", api.port)), "{e}");
    assert!(
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["registered"] == false),
        "{v}"
    );
    assert!(
        !api.root.join("requests.log").exists(),
        "no request got through"
    );

    // No kubeconfig file: an admin certificate is made in memory from pki/,
    // for https://<api_endpoint>:6443, where nothing answers here.
    let (ok, table, _) = status(&cache, &dir, &[]);
    assert!(!ok);
    assert!(
        table.contains("API: no answer") && table.contains(&format!("https://{HOST}:6443")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .filter(|l| l.starts_with("pi-"))
            .all(|l| l.contains(" ? ")),
        "{table}"
    );
}

#[test]
fn kubectl_itself_uses_the_kubeconfig() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    let dir = new_cluster(d.path(), "c");
    let api = start_api(&dir);
    let kc = kubeconfig_for(&cache, &dir, api.port);
    // What kubectl's discovery asks before listing nodes.
    answer(
        &api.root,
        "/api",
        serde_json::json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": format!("{HOST}:6443")}]}),
    );
    answer(
        &api.root,
        "/apis",
        serde_json::json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}),
    );
    answer(
        &api.root,
        "/api/v1",
        serde_json::json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1",
            "resources": [{"name": "nodes", "singularName": "node", "namespaced": false,
                           "kind": "Node", "verbs": ["get", "list"], "shortNames": ["no"]}]}),
    );
    answer(
        &api.root,
        "/api/v1/nodes",
        serde_json::json!({"kind": "NodeList", "apiVersion": "v1", "metadata": {},
            "items": [node("pi-master", true, &["control-plane"], Some("done"))]}),
    );
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["get", "nodes", "-o", "name"])
        .output()
        .expect("kubectl is installed (Debian: kubernetes-client; tests/run.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.trim(), "node/pi-master");
    let log = std::fs::read_to_string(api.root.join("requests.log")).unwrap();
    assert!(
        log.contains("commonName=picluster-admin /api/v1/nodes"),
        "{log}"
    );
}
