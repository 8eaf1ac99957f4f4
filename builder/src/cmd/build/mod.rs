//! `picluster build`: one ready-to-flash image per node.
//!
//! The base is decompressed once into the cache; each node image is a reflink
//! or sparse copy of it with only the FAT boot partition patched. Every output
//! is staged under a temporary name and renamed only when all nodes are built,
//! so a failure or Ctrl-C leaves the output directory as it was.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use picluster_profiles::bundle::BootAsset;
use picluster_profiles::render::RenderInputs;
use picluster_profiles::{Cluster, Node, Secrets};
use serde::Serialize;

mod write;

pub use write::NodeHead;

use crate::agent::{self, AgentBinary};
use crate::base::{self, BaseImage};
use crate::bootfiles::{Content, Payload};
use crate::cache::Cache;
use crate::compress::Compress;
use crate::digest;
use crate::fetch::Fetcher;
use crate::k3s::{self, K3sAssets};
use crate::nodemap::{self, RootRanges};
use crate::obtain::{self, BaseRequest, ObtainedBase};
use crate::progress;

/// Where images go unless `--out` says otherwise: `images/` beside the
/// cluster file, like `secrets.toml` and `pki/` (and ignored by git there).
pub const DEFAULT_OUT: &str = "images";

/// `--out`, else [`DEFAULT_OUT`] beside the cluster file.
pub fn out_dir(out: Option<&Path>, config: &Path) -> PathBuf {
    match out {
        Some(o) => o.to_path_buf(),
        None => picluster_profiles::paths::beside(config, DEFAULT_OUT),
    }
}

/// Node images carry `picluster-secrets.json` (tokens, the node password and
/// its hash, platform credentials): only their owner may read them, staged or
/// published. `build.json`, `SHA256SUMS` and the `.bmap` files hold no secret
/// and stay readable (0644).
pub const IMAGE_MODE: u32 = 0o600;

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The cluster file.
    #[arg(short, long, default_value = "cluster.toml")]
    pub config: PathBuf,
    /// Base image to use instead of the cluster file's (path, file:// or http(s):// URL).
    #[arg(long, value_name = "PATH|URL")]
    pub base: Option<String>,
    /// Output directory [default: images/ beside the cluster file].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Build only these nodes (repeatable; default: all).
    #[arg(long = "node", value_name = "NAME")]
    pub nodes: Vec<String>,
    /// Compress the images (for CI artefacts).
    #[arg(long, value_enum, default_value_t = Compress::None)]
    pub compress: Compress,
    /// The node agent binary (default: found next to picluster or in the workspace build).
    #[arg(long, value_name = "PATH")]
    pub agent: Option<PathBuf>,
    /// Do not write an admin kubeconfig beside the images.
    #[arg(long)]
    pub no_kubeconfig: bool,
}

/// Loaded and checked inputs shared by `plan` and `build`.
pub struct Inputs {
    pub cluster: Cluster,
    pub secrets: Secrets,
}

/// Load and validate the cluster file and its secrets. Data-platform secrets
/// the selection needs and `secrets.toml` lacks are generated; with `persist`
/// they are saved (existing values never change), else they live in memory only.
pub fn load_inputs(config: &Path, persist: bool) -> Result<Inputs> {
    let cluster = Cluster::load(config)?;
    cluster.refuse_sample_key()?;
    let mut secrets = Secrets::load_for(config)?;
    if cluster.join.is_none() && secrets.pki.is_none() {
        bail!(
            "{}: this cluster has no CAs yet (made before picluster kept them)\n  fix: run `picluster secrets -c {}` to create them, then rebuild and re-flash every node, the first server first",
            picluster_profiles::pki::pki_path(config).display(),
            config.display()
        );
    }
    let added = secrets.fill_platform(&cluster.platform)?;
    if persist && !added.is_empty() {
        let path = picluster_profiles::secrets::secrets_path(config);
        secrets.rewrite(&path, &cluster.name)?;
        progress::step(format!(
            "{}: added data-platform secrets {}",
            path.display(),
            added.join(", ")
        ));
    }
    Ok(Inputs { cluster, secrets })
}

/// The nodes named on the command line, in cluster order (all when none named).
pub fn select_nodes<'c>(cluster: &'c Cluster, names: &[String]) -> Result<Vec<&'c Node>> {
    for n in names {
        if cluster.node(n).is_none() {
            let known: Vec<&str> = cluster.nodes.iter().map(|n| n.name.as_str()).collect();
            let guess = known
                .iter()
                .map(|k| (edit_distance(n, k), *k))
                .min()
                .filter(|(d, k)| *d <= 2.max(k.len() / 4))
                .map(|(_, k)| format!("did you mean \"{k}\"? "))
                .unwrap_or_default();
            bail!(
                "{}: there is no node named \"{n}\"; {guess}the nodes are: {}",
                cluster.path.display(),
                known.join(", ")
            );
        }
    }
    Ok(cluster
        .nodes
        .iter()
        .filter(|n| names.is_empty() || names.contains(&n.name))
        .collect())
}

/// Levenshtein distance, for "did you mean" on node names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = (up + 1).min(row[j] + 1).min(diag + usize::from(ca != *cb));
            diag = up;
        }
    }
    row[b.len()]
}

/// SOURCE_DATE_EPOCH when set (reproducible builds), else now.
pub fn build_epoch() -> Result<i64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|t| *t >= 0)
            .with_context(|| {
                format!("SOURCE_DATE_EPOCH=\"{v}\" is not a number of seconds since 1970-01-01")
            }),
        Err(_) => Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)),
    }
}

pub fn render_inputs(epoch: i64, assets: &K3sAssets) -> RenderInputs {
    let asset = |name: &str, a: &k3s::Asset| BootAsset {
        file: name.to_string(),
        sha256: a.sha256.clone(),
        size: a.size,
    };
    RenderInputs {
        built_at: epoch,
        picluster_version: env!("CARGO_PKG_VERSION").to_string(),
        k3s_binary: asset(
            picluster_profiles::bundle::boot_files::K3S_BINARY,
            &assets.binary,
        ),
        k3s_airgap: assets
            .airgap
            .as_ref()
            .map(|a| asset(picluster_profiles::bundle::boot_files::K3S_AIRGAP, a)),
    }
}

pub fn payload(agent: &AgentBinary, assets: &K3sAssets) -> Payload {
    let file = |path: &Path, size: u64, sha256: &str| Content::File {
        path: path.to_path_buf(),
        size,
        sha256: sha256.to_string(),
    };
    Payload {
        agent: file(&agent.path, agent.size, &agent.sha256),
        k3s: file(
            &assets.binary.path,
            assets.binary.size,
            &assets.binary.sha256,
        ),
        airgap: assets
            .airgap
            .as_ref()
            .map(|a| file(&a.path, a.size, &a.sha256)),
    }
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Output {
    pub node: String,
    pub role: String,
    pub file: String,
    pub compression: Compress,
    pub size: u64,
    pub sha256: String,
    /// Size of the raw disk image (what a card must hold).
    pub image_size: u64,
    /// The block map of the raw image, for `picluster flash` and `bmaptool copy`.
    pub bmap: String,
    /// Digest of everything this image was made from (except the build time):
    /// `picluster flash --node` reuses the image while it is unchanged.
    pub inputs_sha256: String,
}

#[derive(Debug, Serialize)]
struct BuildRecord<'a> {
    picluster_version: &'a str,
    source_date_epoch: i64,
    inputs: &'a RecordInputs,
    outputs: &'a [Output],
}

#[derive(Debug, Serialize)]
pub struct RecordInputs {
    picluster_version: &'static str,
    cluster_file: Named,
    cluster: String,
    base: Named,
    k3s_version: String,
    k3s_binary_sha256: String,
    k3s_airgap_sha256: Option<String>,
    agent_version: String,
    agent_sha256: String,
}

#[derive(Debug, Serialize)]
struct Named {
    name: String,
    sha256: String,
}

/// Everything a build needs before it writes images: checked inputs, the base
/// (fetched, decompressed, validated) and the verified payload.
pub struct Prepared {
    pub cluster: Cluster,
    secrets: Secrets,
    secrets_sha256: String,
    pub epoch: i64,
    cache: Cache,
    obtained: ObtainedBase,
    base: BaseImage,
    render: RenderInputs,
    payload: Payload,
    root_ranges: RootRanges,
    pub record: RecordInputs,
}

/// Load, fetch and check everything; print what was found. The node names
/// asked for are checked before anything is downloaded.
pub fn prepare(
    config: &Path,
    base_override: Option<&str>,
    agent_path: Option<&Path>,
    nodes: &[String],
) -> Result<Prepared> {
    let Inputs { cluster, secrets } = load_inputs(config, true)?;
    select_nodes(&cluster, nodes)?;
    let secrets_sha256 = digest::file_sha256(&picluster_profiles::secrets::secrets_path(config))?.0;
    let epoch = build_epoch()?;
    let agent = agent::locate(agent_path)?;
    progress::step(format!(
        "agent: picluster-node {} ({})",
        agent.version,
        agent.path.display()
    ));
    let cache = Cache::from_env().context("cannot open the download cache")?;
    let fetcher = Fetcher::new(cache.clone())?;
    let obtained = obtain::obtain(&fetcher, &BaseRequest::new(&cluster, base_override))
        .context("cannot obtain the base image")?;
    let base = base::inspect(&obtained.raw)?;
    base.validate()?;
    cluster.refuse_base_account(&base.rootfs.system_names, base.rootfs.pretty_name())?;
    progress::step(format!(
        "base: {} ({}, {} cache)",
        obtained.source_name,
        base.rootfs.pretty_name(),
        if obtained.warm { "warm" } else { "cold" }
    ));
    let assets = k3s::fetch_assets(&fetcher, &cluster).context("cannot obtain the K3s release")?;
    let root_ranges = RootRanges::load_or_compute(
        &nodemap::cache_file(&cache, &obtained.source_sha256),
        &obtained.raw,
        base.root,
    )
    .context("cannot map the base image's root filesystem")?;
    let record = RecordInputs {
        picluster_version: env!("CARGO_PKG_VERSION"),
        cluster_file: Named {
            name: file_name(&cluster.path),
            sha256: cluster.sha256.clone(),
        },
        cluster: cluster.name.clone(),
        base: Named {
            name: obtained.source_name.clone(),
            sha256: obtained.source_sha256.clone(),
        },
        k3s_version: cluster.k3s.version.clone(),
        k3s_binary_sha256: assets.binary.sha256.clone(),
        k3s_airgap_sha256: assets.airgap.as_ref().map(|a| a.sha256.clone()),
        agent_version: agent.version.clone(),
        agent_sha256: agent.sha256.clone(),
    };
    Ok(Prepared {
        render: render_inputs(epoch, &assets),
        payload: payload(&agent, &assets),
        cluster,
        secrets,
        secrets_sha256,
        epoch,
        cache,
        obtained,
        base,
        root_ranges,
        record,
    })
}

impl Prepared {
    /// Digest of what `node`'s image is made from, except the build time.
    pub fn inputs_sha256(&self, node: &Node, how: Compress) -> String {
        let text = serde_json::json!({
            "inputs": &self.record,
            "secrets_sha256": &self.secrets_sha256,
            "node": &node.name,
            "compression": how,
        });
        digest::hex(&<sha2::Sha256 as sha2::Digest>::digest(
            text.to_string().as_bytes(),
        ))
    }
}

pub fn run(args: &BuildArgs) -> Result<()> {
    let started = Instant::now();
    let prepared = prepare(
        &args.config,
        args.base.as_deref(),
        args.agent.as_deref(),
        &args.nodes,
    )?;
    let nodes = select_nodes(&prepared.cluster, &args.nodes)?;
    let out = out_dir(args.out.as_deref(), &args.config);
    let outputs = prepared.build(&out, &nodes, args.compress)?;
    progress::step(format!(
        "built {} image(s) in {} in {:.1}s; check them with: (cd {} && sha256sum -c SHA256SUMS)",
        outputs.len(),
        out.display(),
        started.elapsed().as_secs_f64(),
        out.display()
    ));
    for o in &outputs {
        println!("{}", out.join(&o.file).display());
    }
    let cluster = &prepared.cluster;
    if args.no_kubeconfig {
        return Ok(());
    }
    if let Some(url) = &cluster.join {
        progress::step(format!(
            "no kubeconfig: the nodes join {url}, whose CAs picluster does not hold; use that cluster's own"
        ));
        return Ok(());
    }
    let path = out.join(crate::kubeconfig::FILE_NAME);
    let pki = crate::kubeconfig::cluster_pki(cluster)?;
    let text = crate::kubeconfig::render(cluster, &pki, crate::pki::unix_now()?)?;
    crate::kubeconfig::write(&path, &text)?;
    println!("{}", path.display());
    progress::step(format!(
        "once the first server is up: kubectl --kubeconfig {} get nodes",
        path.display()
    ));
    Ok(())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
