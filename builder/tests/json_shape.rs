//! The shapes of `plan --json` and `inspect --json`, pinned: every key path
//! with the JSON types seen at it. A change here is a change for every
//! script that reads the output: bump the command's `schema_version` when a
//! field changes meaning or goes away, and update README's description.

mod support;

use std::collections::BTreeMap;

use serde_json::Value;
use support::*;

use support::cluster::setup;

/// `path: types` lines, arrays as `[]`, types joined with `|` in sorted order.
fn shape(v: &Value) -> String {
    fn walk(v: &Value, path: String, out: &mut BTreeMap<String, Vec<&'static str>>) {
        let t = match v {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(n) if n.is_u64() || n.is_i64() => "int",
            Value::Number(_) => "float",
            Value::String(_) => "string",
            Value::Array(a) => {
                for x in a {
                    walk(x, format!("{path}[]"), out);
                }
                "array"
            }
            Value::Object(o) => {
                for (k, x) in o {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(x, p, out);
                }
                "object"
            }
        };
        let e = out.entry(path).or_default();
        if !e.contains(&t) {
            e.push(t);
            e.sort();
        }
    }
    let mut out = BTreeMap::new();
    walk(v, String::new(), &mut out);
    out.into_iter()
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, t)| format!("{k}: {}\n", t.join("|")))
        .collect()
}

fn json(cmd: &mut std::process::Command) -> Value {
    let out = run(cmd);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}:\n{out}"))
}

const PLAN_SHAPE: &str = "\
agent: object
agent.path: string
agent.problem: null
agent.sha256: string
agent.size: int
agent.state: string
agent.version: string
api_server: string
base: object
base.cached: bool
base.codename: string
base.first_boot: string
base.first_boot_known: bool
base.location: string
base.sha256: string
budget: object
budget.memory_capacity_mib: int
budget.memory_requested_mib: int
budget.node_memory_mib: int
budget.nodes: array
budget.nodes[]: object
budget.nodes[].cpu_capacity_millicores: int
budget.nodes[].cpu_requested_millicores: int
budget.nodes[].media: string
budget.nodes[].memory_capacity_mib: int
budget.nodes[].memory_requested_mib: int
budget.nodes[].node: string
budget.nodes[].pods: array
budget.nodes[].pods[]: object
budget.nodes[].pods[].cpu_millicores: int
budget.nodes[].pods[].id: string
budget.nodes[].pods[].memory_mib: int
budget.nodes[].role: string
cluster: string
k3s_source: string
k3s_version: string
nodes: array
nodes[]: object
nodes[].address: string
nodes[].boot_files: array
nodes[].boot_files[]: object
nodes[].boot_files[].content: null|string
nodes[].boot_files[].name: string
nodes[].boot_files[].secret: bool
nodes[].boot_files[].size: int|null
nodes[].boot_files[].what: string
nodes[].cmdline: string
nodes[].config_txt_added: string
nodes[].gateway: string
nodes[].init_server: bool
nodes[].kernel_args_added: array
nodes[].kernel_args_added[]: string
nodes[].labels: array
nodes[].labels[]: string
nodes[].media: string
nodes[].name: string
nodes[].role: string
nodes[].rootfs_files: array
nodes[].rootfs_files[]: object
nodes[].rootfs_files[].content: null|string
nodes[].rootfs_files[].mode: string
nodes[].rootfs_files[].owner: string
nodes[].rootfs_files[].path: string
nodes[].rootfs_files[].phase: string
nodes[].rootfs_files[].secret: bool
nodes[].rootfs_files[].size: int
nodes[].user: object
nodes[].user.keys_only: bool
nodes[].user.name: string
nodes[].user.ssh_keys: int
platform: array
platform[]: object
platform[].added_for: null
platform[].charts: array
platform[].charts[]: object
platform[].charts[].name: string
platform[].charts[].repo: string
platform[].charts[].version: string
platform[].images: array
platform[].images[]: string
platform[].name: string
platform[].namespace: string
platform[].summary: string
schema_version: int
";

const INSPECT_SHAPE: &str = "\
boot: object
boot.cloud_init_seed: array
boot.cmdline: string
boot.files: array
boot.files[]: object
boot.files[].is_dir: bool
boot.files[].name: string
boot.files[].size: int
boot.free: int
boot.label: string
first_boot: string
image: string
os: object
os.arch: string
os.cloud_init: bool
os.codename: string
os.id: string
os.pretty_name: string
os.version_id: string
picluster: object
picluster.address: string
picluster.agent_version: string
picluster.built_at: int
picluster.built_at_utc: string
picluster.cluster: string
picluster.init_server: bool
picluster.k3s_version: string
picluster.node: string
picluster.picluster_version: string
picluster.role: string
picluster.secrets_on_card: bool
picluster.server_url: string
picluster.user: string
problems: array
schema_version: int
size: int
table: object
table.disk_id: string
table.kind: string
table.partitions: array
table.partitions[]: object
table.partitions[].bootable: bool
table.partitions[].name: null
table.partitions[].number: int
table.partitions[].size: int
table.partitions[].start: int
table.partitions[].type: string
table.partitions[].type_id: int
";

#[test]
fn plan_and_inspect_json_keep_their_shape_and_numbers() {
    let s = setup(&[]);
    let plan =
        |s: &support::cluster::Setup| json(s.cmd().args(["plan", "--json", "-c"]).arg(s.config()));
    let before = plan(&s);
    assert_eq!(before["base"]["cached"], false, "{before}");
    assert!(
        before["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["cmdline"].is_null()),
        "no base in the cache, no cmdline: {before}"
    );
    let out = s.path("out");
    run(&mut s.build("out", &["--node", "pi-worker-1"]));
    let p = plan(&s);
    assert_eq!(shape(&p), PLAN_SHAPE, "plan --json:\n{p:#}");
    assert_eq!(p["schema_version"], 1);
    assert_eq!(p["base"]["cached"], true);

    // The agent: the file picluster would embed, by path and digest.
    let agent = agent_binary();
    assert_eq!(p["agent"]["state"], "ready", "{}", p["agent"]);
    assert_eq!(p["agent"]["path"], agent.display().to_string());
    assert_eq!(p["agent"]["sha256"], sha256_file(&agent));
    assert_eq!(p["agent"]["size"], std::fs::metadata(&agent).unwrap().len());

    // Components name their namespace and pinned charts (versions from
    // profiles/src/platform/catalog.rs).
    let comps = p["platform"].as_array().unwrap();
    let pg = comps.iter().find(|c| c["name"] == "postgresql").unwrap();
    assert_eq!(pg["namespace"], "postgresql");
    let charts: Vec<String> = pg["charts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c["name"].as_str().unwrap(),
                c["version"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(charts, ["cloudnative-pg 0.29.0", "cluster 0.8.1"]);
    let sw = comps.iter().find(|c| c["name"] == "seaweedfs").unwrap();
    assert_eq!(sw["namespace"], "s3");
    assert!(
        sw["images"][0]
            .as_str()
            .unwrap()
            .starts_with("chrislusf/seaweedfs:")
    );

    // Budget rows are numbers that add up, and agree with the text table.
    let b = &p["budget"];
    let rows = b["nodes"].as_array().unwrap();
    assert_eq!(rows.len(), p["nodes"].as_array().unwrap().len());
    let mut total = 0;
    for r in rows {
        let pods: u64 = r["pods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["memory_mib"].as_u64().unwrap())
            .sum();
        assert_eq!(r["memory_requested_mib"].as_u64().unwrap(), pods, "{r}");
        assert!(pods <= r["memory_capacity_mib"].as_u64().unwrap(), "{r}");
        assert!(
            r["memory_capacity_mib"].as_u64().unwrap() < b["node_memory_mib"].as_u64().unwrap()
        );
        total += pods;
    }
    assert_eq!(b["memory_requested_mib"].as_u64().unwrap(), total);
    let table = run(s.cmd().args(["plan", "-c"]).arg(s.config()));
    let row = rows.iter().find(|r| r["node"] == "pi-worker-1").unwrap();
    let pod = &row["pods"][0];
    assert!(
        table.contains(&format!(
            "{} {}Mi",
            pod["id"].as_str().unwrap(),
            pod["memory_mib"]
        )),
        "{table}"
    );

    let img = out.join("pi-worker-1.img");
    let r = json(s.cmd().args(["inspect", "--json"]).arg(&img));
    assert_eq!(shape(&r), INSPECT_SHAPE, "inspect --json:\n{r:#}");
    assert_eq!(r["schema_version"], 1);
    assert_eq!(r["table"]["kind"], "dos");
    assert_eq!(r["table"]["partitions"][0]["type"], "FAT32 (LBA)");
    assert_eq!(r["table"]["partitions"][1]["type"], "Linux");
    assert_eq!(r["os"]["codename"], "bookworm");
    assert_eq!(r["os"]["id"], "debian");
    assert_eq!(r["first_boot"], "sys_mods");
    assert_eq!(p["base"]["first_boot"], "sys_mods");
    assert_eq!(r["picluster"]["node"], "pi-worker-1");
    assert_eq!(r["size"], std::fs::metadata(&img).unwrap().len());
    // sfdisk agrees on where the root partition starts.
    let dump: Value = serde_json::from_str(&run(std::process::Command::new("sfdisk")
        .arg("-J")
        .arg(&img)))
    .unwrap();
    let start = dump["partitiontable"]["partitions"][1]["start"]
        .as_u64()
        .unwrap()
        * 512;
    assert_eq!(r["table"]["partitions"][1]["start"], start);
    let utc = r["picluster"]["built_at_utc"].as_str().unwrap();
    assert!(utc.ends_with("UTC") || utc.ends_with('Z'), "{utc}");
}
