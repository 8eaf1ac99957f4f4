//! Seeds for the `bundle` target: the real bundle and secrets JSON that
//! `picluster build` would write for each node of a cluster file, rendered by
//! picluster_profiles itself (with freshly generated secrets).
//!
//!   bundle-seeds CLUSTER.toml OUT_DIR

use picluster_profiles::bundle::BootAsset;
use picluster_profiles::render::{RenderInputs, render_node};
use picluster_profiles::{Cluster, Secrets};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, cluster, out] = args.as_slice() else {
        eprintln!("usage: bundle-seeds CLUSTER.toml OUT_DIR");
        std::process::exit(2);
    };
    let cluster = Cluster::load(cluster.as_ref()).expect("a valid cluster file");
    let mut secrets = Secrets::generate().expect("secrets");
    secrets
        .fill_platform(&cluster.platform)
        .expect("platform secrets");
    let asset = |file: &str| BootAsset {
        file: file.into(),
        sha256: "0".repeat(64),
        size: 1,
    };
    let inputs = RenderInputs {
        built_at: 1_700_000_000,
        picluster_version: "0.1.0".into(),
        k3s_binary: asset("k3s-arm64"),
        k3s_airgap: Some(asset("k3s-airgap-images-arm64.tar.zst")),
    };
    std::fs::create_dir_all(out).unwrap();
    for node in &cluster.nodes {
        let (bundle, node_secrets) = render_node(&cluster, &secrets, node, &inputs).unwrap();
        let dir = std::path::Path::new(out);
        std::fs::write(
            dir.join(format!("{}-bundle.json", node.name)),
            serde_json::to_vec_pretty(&bundle).unwrap(),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{}-secrets.json", node.name)),
            serde_json::to_vec_pretty(&node_secrets).unwrap(),
        )
        .unwrap();
    }
}
