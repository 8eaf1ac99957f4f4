//! `picluster kubeconfig`: an admin kubeconfig for the cluster, made on the
//! workstation from its CAs, usable as soon as the first server is up.

use std::path::PathBuf;

use anyhow::Result;
use picluster_profiles::Cluster;

use crate::kubeconfig;

#[derive(Debug, clap::Args)]
pub struct KubeconfigArgs {
    /// The cluster file.
    #[arg(short, long, default_value = "cluster.toml")]
    pub config: PathBuf,
    /// Where to write it (default: `kubeconfig` beside the cluster file).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub fn run(args: &KubeconfigArgs) -> Result<()> {
    let cluster = Cluster::load(&args.config)?;
    let pki = kubeconfig::cluster_pki(&cluster)?;
    let path = args
        .output
        .clone()
        .unwrap_or_else(|| kubeconfig::default_path(&args.config));
    let text = kubeconfig::render(&cluster, &pki, crate::pki::unix_now()?)?;
    kubeconfig::write(&path, &text)?;
    println!(
        "wrote {} (mode 0600): kubectl --kubeconfig {} get nodes  (API {})",
        path.display(),
        path.display(),
        kubeconfig::server_url(&cluster)
    );
    Ok(())
}
