//! `picluster status [-c FILE] [--watch] [--json]`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use picluster_profiles::Cluster;

use crate::kubeconfig;
use crate::status::{self, api::Api};

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The cluster file.
    #[arg(short, long, default_value = "cluster.toml")]
    pub config: PathBuf,
    /// The kubeconfig to ask the API with (default: `kubeconfig` beside the
    /// cluster file; without one, a short-lived admin certificate is made in
    /// memory from the cluster's CAs).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Refresh every 5 s until everything is Ready (or Ctrl-C).
    #[arg(long)]
    pub watch: bool,
    /// Print JSON (a stable schema; see README).
    #[arg(long)]
    pub json: bool,
}

/// Credentials: the kubeconfig file, else one made in memory from `pki/`.
fn credentials(cluster: &Cluster, args: &StatusArgs) -> Result<kubeconfig::Credentials> {
    let path = args
        .kubeconfig
        .clone()
        .unwrap_or_else(|| kubeconfig::default_path(&cluster.path));
    if args.kubeconfig.is_some() || path.exists() {
        return kubeconfig::read(&path);
    }
    let pki = kubeconfig::cluster_pki(cluster)?;
    let admin = crate::pki::issue_admin(&pki, crate::pki::unix_now()?)?;
    Ok(kubeconfig::Credentials {
        server: kubeconfig::server_url(cluster),
        ca: pki
            .get(picluster_profiles::pki::SERVER_CA_CERT)
            .unwrap_or_default()
            .to_string(),
        cert: admin.cert,
        key: admin.key,
    })
}

pub fn run(args: &StatusArgs) -> Result<()> {
    let cluster = Cluster::load(&args.config)?;
    let colour = !args.json && std::io::stdout().is_terminal();
    loop {
        let api = credentials(&cluster, args)
            .and_then(|c| Api::new(&c))
            .map_err(|e| format!("{e:#}"));
        let report = status::collect(&cluster, api, Duration::from_secs(2));
        let text = if args.json {
            status::json(&report) + "\n"
        } else {
            status::table(&report, colour)
        };
        let mut out = std::io::stdout().lock();
        if args.watch && colour {
            // Clear the screen between refreshes, on a terminal only.
            let _ = write!(out, "\x1b[2J\x1b[H");
        }
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
        drop(out);
        if report.ready {
            return Ok(());
        }
        if !args.watch {
            let waiting = report
                .nodes
                .iter()
                .filter(|n| n.ready != Some(true))
                .count();
            bail!(
                "not Ready yet: {waiting} node(s){}; `picluster status --watch` follows it",
                match report
                    .components
                    .iter()
                    .filter(|c| c.state != "succeeded")
                    .count()
                {
                    0 => String::new(),
                    n => format!(", {n} component(s) not installed"),
                }
            );
        }
        for _ in 0..50 {
            crate::interrupt::check()?;
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
