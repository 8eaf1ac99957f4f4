//! Data-platform rendering: selections, dependency resolution, conflicts,
//! budget, secrets placement, and the schema validation of every manifest.
//!
//! `schema_validation_of_every_selection` runs tests/platform/validate.py
//! with the `python3` on PATH (kubernetes-validate, PyYAML, jsonschema from
//! tests/platform/requirements.txt; tests/run.sh puts a venv holding them
//! first on PATH). Set PICLUSTER_NO_PYTHON=1 to skip it on a machine without them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use picluster_profiles::bundle::BootAsset;
use picluster_profiles::platform::Component;
use picluster_profiles::platform::manifests::manifests;
use picluster_profiles::render::{RenderInputs, render_node};
use picluster_profiles::{Cluster, Phase, SAMPLE_CLUSTER, Secrets};

fn parse(text: &str) -> Result<Cluster, String> {
    Cluster::parse(Path::new("cluster.toml"), text).map_err(|e| e.to_string())
}

const DEFAULT_LINE: &str = "components = [\"postgresql\", \"seaweedfs\", \"trino\", \"nifi\", \"jupyter\", \"monitoring\", \"logs\"]";

/// The sample with another `components` line and extra text after it.
fn with_components(list: &str, extra: &str) -> String {
    assert!(SAMPLE_CLUSTER.contains(DEFAULT_LINE));
    SAMPLE_CLUSTER.replacen(DEFAULT_LINE, &format!("components = [{list}]\n{extra}"), 1)
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .expect("needle")
        + 1
}

fn secrets_for(cluster: &Cluster) -> Secrets {
    let mut s = Secrets::generate().unwrap();
    s.fill_platform(&cluster.platform).unwrap();
    s
}

fn inputs() -> RenderInputs {
    RenderInputs {
        built_at: 1_700_000_000,
        picluster_version: "0.1.0".into(),
        k3s_binary: BootAsset {
            file: "k3s-arm64".into(),
            sha256: "0".repeat(64),
            size: 1,
        },
        k3s_airgap: None,
    }
}

#[test]
fn sample_selects_the_defaults_and_fits_four_nodes() {
    let c = parse(SAMPLE_CLUSTER).unwrap();
    let p = &c.platform;
    for comp in Component::DEFAULTS {
        assert!(p.has(comp), "{comp} missing");
    }
    assert!(p.added.is_empty(), "nothing needed adding: {:?}", p.added);
    let table = p.budget_table().expect("a table").to_string();
    for n in &c.nodes {
        assert!(table.contains(&n.name), "{table}");
    }
    assert!(
        table.contains("trino-worker") && table.contains("postgresql"),
        "{table}"
    );
    // The server is kept light: the big JVMs run on agents.
    let server = &p.budget.nodes[0];
    assert!(
        !server
            .pods
            .iter()
            .any(|(id, _, _)| id == "trino-worker" || id == "nifi"),
        "{table}"
    );
    for n in &p.budget.nodes {
        assert!(n.mem_used() <= n.mem_capacity_mib, "{table}");
        assert!(n.cpu_used() <= n.cpu_capacity_m, "{table}");
    }
    println!("{table}");
}

#[test]
fn dependencies_are_added_with_their_reason() {
    let c = parse(&with_components("\"trino\"", "")).unwrap();
    let p = &c.platform;
    assert!(p.has(Component::Postgresql) && p.has(Component::Seaweedfs));
    let reasons: Vec<(Component, Component)> =
        p.added.iter().map(|a| (a.component, a.needed_by)).collect();
    assert!(reasons.contains(&(Component::Postgresql, Component::Trino)));
    assert!(reasons.contains(&(Component::Seaweedfs, Component::Trino)));
    let described = p.describe();
    assert!(described.contains("(added: trino needs it)"), "{described}");

    // A chosen store is used, not the default one.
    let c = parse(&with_components("\"trino\", \"minio\"", "")).unwrap();
    assert!(c.platform.has(Component::Minio) && !c.platform.has(Component::Seaweedfs));

    // Logs bring Grafana (monitoring).
    let c = parse(&with_components("\"logs\"", "")).unwrap();
    assert!(c.platform.has(Component::Monitoring));
}

#[test]
fn two_object_stores_conflict() {
    let text = with_components("\"seaweedfs\", \"minio\"", "");
    let msg = parse(&text).unwrap_err();
    assert!(msg.contains("both S3 object stores"), "{msg}");
    assert!(
        msg.contains(&format!("cluster.toml:{}:", line_of(&text, "\"minio\"]"))),
        "{msg}"
    );
}

#[test]
fn unknown_component_and_override_key_name_line_and_field() {
    let text = with_components("\"trino\", \"spark\"", "");
    let msg = parse(&text).unwrap_err();
    assert!(
        msg.contains("platform.components[1]") && msg.contains("\"spark\""),
        "{msg}"
    );

    let text = with_components("\"nifi\"", "[platform.nifi]\nreplicas = 3\n");
    let msg = parse(&text).unwrap_err();
    assert!(msg.contains("platform.nifi.replicas"), "{msg}");
    assert!(
        msg.contains(&format!("cluster.toml:{}:", line_of(&text, "replicas = 3"))),
        "{msg}"
    );

    let text = with_components("\"nifi\"", "[platform.nifi]\nmemroy = \"2Gi\"\n");
    let msg = parse(&text).unwrap_err();
    assert!(msg.contains("unknown field `memroy`"), "{msg}");

    let text = with_components("\"nifi\"", "[platform.trino]\nreplicas = 2\n");
    let msg = parse(&text).unwrap_err();
    assert!(
        msg.contains("platform.trino") && msg.contains("not selected"),
        "{msg}"
    );

    let text = with_components("\"trino\"", "[platform.trino]\nmemory = \"1Gi\"\n");
    let msg = parse(&text).unwrap_err();
    assert!(
        msg.contains("platform.trino.memory") && msg.contains("at least 2048Mi"),
        "{msg}"
    );
}

#[test]
fn a_selection_that_cannot_fit_is_refused_with_the_numbers() {
    let text = with_components(
        "\"trino\"",
        "[platform.trino]\nreplicas = 6\nmemory = \"6Gi\"\n",
    );
    let msg = parse(&text).unwrap_err();
    assert!(msg.contains("does not fit"), "{msg}");
    assert!(msg.contains("trino-worker"), "{msg}");
    assert!(msg.contains("6144 MiB"), "{msg}");
    assert!(msg.contains("fix:"), "{msg}");
    assert!(
        msg.contains(&format!(
            "cluster.toml:{}:",
            line_of(&text, "components = [")
        )),
        "{msg}"
    );

    // The same on 16 GB nodes fits.
    let text = with_components(
        "\"trino\"",
        "node_memory = \"16Gi\"\n[platform.trino]\nreplicas = 6\nmemory = \"6Gi\"\n",
    );
    parse(&text).unwrap();
}

#[test]
fn node_selector_restricts_placement() {
    let text = with_components(
        "\"nifi\"",
        "[platform.nifi]\nnode_selector = { \"picluster.io/workload\" = \"control\" }\n",
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.platform.budget.nodes_of("nifi"), vec!["pi-master"]);
    let s = secrets_for(&c);
    let m = manifests(&c, &s).unwrap();
    let nifi = m
        .iter()
        .find(|m| m.file_name == "picluster-nifi.yaml")
        .unwrap();
    assert!(
        nifi.content
            .contains("nodeSelector: {\"picluster.io/workload\":\"control\"}"),
        "{}",
        nifi.content
    );

    let text = with_components(
        "\"nifi\"",
        "[platform.nifi]\nnode_selector = { \"picluster.io/workload\" = \"gpu\" }\n",
    );
    let msg = parse(&text).unwrap_err();
    assert!(
        msg.contains("no node to run on") && msg.contains("picluster.io/workload=gpu"),
        "{msg}"
    );
}

#[test]
fn optional_components_check_their_prerequisites() {
    let msg = parse(&with_components("\"metallb\"", "")).unwrap_err();
    assert!(
        msg.contains("platform.metallb.addresses") && msg.contains("address pool"),
        "{msg}"
    );
    let msg = parse(&with_components(
        "\"metallb\"",
        "[platform.metallb]\naddresses = [\"10.0.0.1-10.0.0.5\"]\n",
    ))
    .unwrap_err();
    assert!(msg.contains("outside the cluster network"), "{msg}");

    // Only pi-master boots from NVMe in the sample.
    let msg = parse(&with_components("\"longhorn\"", "")).unwrap_err();
    assert!(
        msg.contains("platform.longhorn.replicas") && msg.contains("NVMe"),
        "{msg}"
    );
    let sd_only = with_components("\"longhorn\"", "").replace("media = \"nvme\"", "media = \"sd\"");
    let msg = parse(&sd_only).unwrap_err();
    assert!(msg.contains("Longhorn needs NVMe nodes"), "{msg}");
    parse(&with_components(
        "\"longhorn\"",
        "[platform.longhorn]\nreplicas = 1\n",
    ))
    .unwrap();
}

#[test]
fn secrets_only_in_secret_objects_and_node_secrets() {
    let c = parse(SAMPLE_CLUSTER).unwrap();
    let s = secrets_for(&c);
    let values: Vec<&String> = s.platform.values().collect();
    assert!(values.len() >= 7, "{:?}", s.platform.keys());
    let ms = manifests(&c, &s).unwrap();
    for m in &ms {
        let leaks: Vec<&&String> = values
            .iter()
            .filter(|v| m.content.contains(v.as_str()))
            .collect();
        if m.secret {
            for doc in m.content.split("\n---\n").skip(1) {
                assert!(
                    doc.contains("\"kind\": \"Secret\"") || doc.contains("\"kind\": \"Namespace\""),
                    "{}: only Namespaces and Secrets: {doc}",
                    m.file_name
                );
            }
        } else {
            assert!(leaks.is_empty(), "{} holds a secret value", m.file_name);
        }
    }
    // Every secret value reaches the cluster somewhere.
    for v in &values {
        assert!(
            ms.iter()
                .any(|m| m.secret && m.content.contains(v.as_str()))
        );
    }

    let rendered: Vec<_> = c
        .nodes
        .iter()
        .map(|n| render_node(&c, &s, n, &inputs()).unwrap())
        .collect();
    for (i, (bundle, node_secrets)) in rendered.iter().enumerate() {
        let public = serde_json::to_string(bundle).unwrap();
        for v in &values {
            assert!(
                !public.contains(v.as_str()),
                "bundle of {} leaks a secret",
                bundle.node.name
            );
        }
        let manifests_here: Vec<&str> = bundle
            .files
            .iter()
            .chain(node_secrets.files.iter())
            .filter(|f| f.path.starts_with("/var/lib/rancher/k3s/server/manifests/"))
            .map(|f| f.path.as_str())
            .collect();
        if i == 0 {
            assert!(c.nodes[0].init);
            assert_eq!(manifests_here.len(), ms.len());
            for f in bundle.files.iter().chain(node_secrets.files.iter()) {
                if f.path.contains("/manifests/picluster-") {
                    assert_eq!(f.phase, Phase::AfterReady);
                    assert_eq!(
                        f.mode.0,
                        if f.path.ends_with("-secrets.yaml") {
                            0o600
                        } else {
                            0o644
                        }
                    );
                }
            }
            assert!(
                bundle
                    .files
                    .iter()
                    .all(|f| !f.path.ends_with("-secrets.yaml"))
            );
            assert!(
                node_secrets
                    .files
                    .iter()
                    .any(|f| f.path.ends_with("picluster-nifi-secrets.yaml"))
            );
        } else {
            assert!(
                manifests_here.is_empty(),
                "{} got manifests",
                bundle.node.name
            );
        }
    }
    // Plan output (the budget table) carries no secret either.
    let table = c.platform.budget_table().unwrap().to_string();
    assert!(values.iter().all(|v| !table.contains(v.as_str())));
}

#[test]
fn missing_platform_secrets_are_an_error_naming_the_fix() {
    let c = parse(SAMPLE_CLUSTER).unwrap();
    let s = Secrets::generate().unwrap();
    let msg = manifests(&c, &s).unwrap_err().to_string();
    assert!(
        msg.contains("secrets.toml") && msg.contains("nifi_password"),
        "{msg}"
    );
    assert!(msg.contains("picluster secrets -c"), "{msg}");
    assert!(render_node(&c, &s, &c.nodes[0], &inputs()).is_err());
}

#[test]
fn k3s_config_and_packages_follow_the_selection() {
    let text = with_components(
        "\"metallb\", \"longhorn\", \"monitoring\"",
        "[platform.metallb]\naddresses = [\"192.168.0.200-192.168.0.220\"]\n[platform.longhorn]\nreplicas = 1\n",
    );
    let c = parse(&text).unwrap();
    let s = secrets_for(&c);
    for n in &c.nodes {
        let (bundle, secrets) = render_node(&c, &s, n, &inputs()).unwrap();
        assert_eq!(bundle.apt_packages, vec!["open-iscsi".to_string()]);
        let config = &secrets
            .files
            .iter()
            .find(|f| f.path == "/etc/rancher/k3s/config.yaml")
            .unwrap()
            .content;
        if n.role == picluster_profiles::Role::Server {
            assert!(config.contains("disable:\n  - \"servicelb\""), "{config}");
            assert!(config.contains("etcd-expose-metrics: true"), "{config}");
        }
        assert_eq!(
            config.contains("node.longhorn.io/create-default-disk=true"),
            n.media == picluster_profiles::Media::Nvme,
            "{config}"
        );
    }
    // Without them, nothing changes.
    let c = parse(&with_components("\"nifi\"", "")).unwrap();
    let (bundle, secrets) = render_node(&c, &secrets_for(&c), &c.nodes[0], &inputs()).unwrap();
    assert!(bundle.apt_packages.is_empty());
    let config = &secrets
        .files
        .iter()
        .find(|f| f.path.ends_with("config.yaml"))
        .unwrap()
        .content;
    assert!(!config.contains("servicelb") && !config.contains("etcd-expose-metrics"));
}

#[test]
fn trino_sizing_follows_the_worker_memory() {
    let text = with_components(
        "\"trino\"",
        "[platform.trino]\nreplicas = 2\nmemory = \"4Gi\"\n",
    );
    let c = parse(&text).unwrap();
    let ms = manifests(&c, &secrets_for(&c)).unwrap();
    let t = ms
        .iter()
        .find(|m| m.file_name == "picluster-trino.yaml")
        .unwrap();
    let (heap, headroom, per_node) = picluster_profiles::platform::manifests::trino_memory(4096);
    assert!(
        t.content.contains(&format!("maxHeapSize: \"{heap}M\"")),
        "{}",
        t.content
    );
    assert!(
        t.content
            .contains(&format!("heapHeadroomPerNode: \"{headroom}MB\""))
    );
    assert!(
        t.content
            .contains(&format!("maxMemoryPerNode: \"{per_node}MB\""))
    );
    assert!(
        t.content
            .contains(&format!("maxMemory: \"{}MB\"", per_node * 2))
    );
    assert!(t.content.contains("workers: 2"));
}

/// Selections rendered for the schema validation, by directory name.
fn selections() -> BTreeMap<&'static str, String> {
    let mut m = BTreeMap::new();
    m.insert("sample", SAMPLE_CLUSTER.to_string());
    m.insert(
        "everything-minio",
        with_components(
            "\"postgresql\", \"minio\", \"trino\", \"nifi\", \"jupyter\", \"monitoring\", \"logs\", \"metallb\", \"cert-manager\", \"longhorn\"",
            "node_memory = \"16Gi\"\n[platform.metallb]\naddresses = [\"192.168.0.200-192.168.0.220\", \"192.168.0.240/28\"]\n[platform.longhorn]\nreplicas = 1\n[platform.postgresql]\nreplicas = 2\n[platform.trino]\nreplicas = 2\nnode_selector = { \"picluster.io/workload\" = \"control\" }\nmemory = \"2Gi\"\n",
        ),
    );
    m.insert("jupyter-alone", with_components("\"jupyter\"", ""));
    m
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn schema_validation_of_every_selection() {
    if std::env::var_os("PICLUSTER_NO_PYTHON").is_some() {
        eprintln!("PICLUSTER_NO_PYTHON is set: schema validation skipped");
        return;
    }
    // PICLUSTER_PLATFORM_OUT=DIR keeps the rendered files (for
    // tests/platform/check_upstream.py); they hold throwaway secrets.
    let tmp = tempfile::tempdir().unwrap();
    let dir = match std::env::var_os("PICLUSTER_PLATFORM_OUT") {
        Some(d) => PathBuf::from(d),
        None => tmp.path().to_path_buf(),
    };
    for (name, text) in selections() {
        let c = parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let out = dir.join(name);
        std::fs::create_dir_all(&out).unwrap();
        for m in manifests(&c, &secrets_for(&c)).unwrap() {
            assert!(
                !m.content.contains("@@"),
                "{}: unfilled placeholder",
                m.file_name
            );
            std::fs::write(out.join(&m.file_name), &m.content).unwrap();
        }
    }
    let script = repo_root().join("tests/platform/validate.py");
    let output = Command::new("python3")
        .arg(&script)
        .arg(&dir)
        .output()
        .expect("python3 runs (or set PICLUSTER_NO_PYTHON=1)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{}\n(install the validator's dependencies with `pip install -r tests/platform/requirements.txt`)",
        text
    );
    assert!(text.contains("validated"), "{text}");

    // The validator is not vacuous: a misspelt field, a Secret in a public
    // file and an unverified chart value are each refused.
    let bad = tempfile::tempdir().unwrap();
    let c = parse(SAMPLE_CLUSTER).unwrap();
    let ms = manifests(&c, &secrets_for(&c)).unwrap();
    let get = |name: &str| {
        ms.iter()
            .find(|m| m.file_name == name)
            .unwrap()
            .content
            .clone()
    };
    std::fs::write(
        bad.path().join("picluster-nifi.yaml"),
        get("picluster-nifi.yaml").replacen("serviceName: nifi", "serviceNme: nifi", 1),
    )
    .unwrap();
    std::fs::write(
        bad.path().join("picluster-leak.yaml"),
        get("picluster-nifi-secrets.yaml"),
    )
    .unwrap();
    std::fs::write(
        bad.path().join("picluster-trino.yaml"),
        get("picluster-trino.yaml").replacen("    server:\n", "    sever:\n", 1),
    )
    .unwrap();
    // The platform rules (tests/platform/rules.py): a Job without a deadline
    // and a data-owning release that would reinstall are refused.
    std::fs::write(
        bad.path().join("picluster-seaweedfs.yaml"),
        get("picluster-seaweedfs.yaml").replacen("  activeDeadlineSeconds: 1800\n", "", 1),
    )
    .unwrap();
    std::fs::write(
        bad.path().join("picluster-postgresql.yaml"),
        get("picluster-postgresql.yaml").replacen("  failurePolicy: abort\n", "", 1),
    )
    .unwrap();
    let output = Command::new("python3")
        .arg(&script)
        .arg(bad.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("serviceNme"), "{text}");
    assert!(
        text.contains("a Secret outside a *-secrets.yaml file"),
        "{text}"
    );
    assert!(text.contains("`sever."), "{text}");
    assert!(
        text.contains("Job/seaweedfs-buckets: Job without activeDeadlineSeconds"),
        "{text}"
    );
    assert!(
        text.contains("HelmChart/postgresql: failurePolicy is not `abort`"),
        "{text}"
    );
}

/// tests/platform/test_platform_check.py: the self-test script against a
/// real PostgreSQL (Debian's `postgresql` package, started by the test) and
/// local fakes of the HTTP services (needs botocore from requirements.txt).
#[test]
fn platform_check_script_against_real_and_fake_services() {
    if std::env::var_os("PICLUSTER_NO_PYTHON").is_some() {
        eprintln!("PICLUSTER_NO_PYTHON is set: platform check script tests skipped");
        return;
    }
    let output = Command::new("python3")
        .args([
            "-m",
            "unittest",
            "-v",
            "tests/platform/test_platform_check.py",
        ])
        .current_dir(repo_root())
        .output()
        .expect("python3 runs (or set PICLUSTER_NO_PYTHON=1)");
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{text}\n(needs `apt-get install postgresql` and `pip install -r tests/platform/requirements.txt`)"
    );
    assert!(
        text.contains("test_failures_are_loud_and_name_the_reason")
            && text.trim_end().ends_with("OK"),
        "{text}"
    );
}

#[test]
fn every_selection_carries_the_self_test() {
    let c = parse(&with_components("\"nifi\"", "")).unwrap();
    let ms = manifests(&c, &secrets_for(&c)).unwrap();
    let job = ms
        .iter()
        .find(|m| m.file_name == "picluster-platform-check.yaml")
        .unwrap();
    assert!(!job.secret && job.component.is_none());
    assert!(
        job.content.contains("\"value\":\"nifi\""),
        "{}",
        job.content
    );
    // Pinned by tag and digest, like every image picluster writes itself.
    assert!(job.content.contains("python:3.13-alpine3.23@sha256:"));
    assert!(
        ms.iter()
            .any(|m| m.secret && m.file_name == "picluster-platform-check-secrets.yaml")
    );
}
