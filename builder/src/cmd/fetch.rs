//! `picluster fetch`: download and verify the base image (and the pinned K3s
//! release) into the cache, so a later build needs no network.

use std::path::PathBuf;

use anyhow::{Context, Result};
use picluster_profiles::Cluster;

use crate::base;
use crate::cache::Cache;
use crate::fetch::{Expect, Fetcher, Location};
use crate::k3s;
use crate::obtain::{self, BaseRequest};
use crate::progress;

#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// The cluster file (not needed with --base).
    #[arg(short, long, default_value = "cluster.toml")]
    pub config: PathBuf,
    /// Fetch this base image instead of the cluster file's (path, file:// or http(s):// URL).
    #[arg(long, value_name = "PATH|URL")]
    pub base: Option<String>,
}

pub fn run(args: &FetchArgs) -> Result<()> {
    let fetcher = Fetcher::new(Cache::from_env().context("cannot open the download cache")?)?;
    // With --base and no cluster file, fetch just the base.
    let cluster = if args.base.is_some() && !args.config.exists() {
        None
    } else {
        Some(Cluster::load(&args.config)?)
    };
    let request = match (&cluster, &args.base) {
        (Some(c), b) => BaseRequest::new(c, b.as_deref()),
        (None, Some(b)) => BaseRequest {
            location: Location::parse(b),
            expect: Expect::Sibling,
        },
        (None, None) => unreachable!("a cluster file is loaded unless --base is given"),
    };
    let obtained = obtain::obtain(&fetcher, &request).context("cannot obtain the base image")?;
    let image = base::inspect(&obtained.raw)?;
    image.validate()?;
    println!(
        "base {} sha256 {}: {}, {} userland; cached at {}",
        obtained.source_name,
        obtained.source_sha256,
        image.rootfs.pretty_name(),
        image.rootfs.arch,
        obtained.raw.display()
    );
    if let Some(c) = &cluster {
        let assets = k3s::fetch_assets(&fetcher, c).context("cannot obtain the K3s release")?;
        println!(
            "k3s {} sha256 {} ({}){}",
            assets.version,
            assets.binary.sha256,
            progress::size(assets.binary.size),
            if assets.airgap.is_some() {
                ", with air-gap images"
            } else {
                ""
            }
        );
    }
    Ok(())
}
