//! `picluster build`: one ready-to-flash image per node.
//!
//! The base is decompressed once into the cache; each node image is a reflink
//! or sparse copy of it with only the FAT boot partition patched. Every output
//! is staged under a temporary name and renamed only when all nodes are built,
//! so a failure or Ctrl-C leaves the output directory as it was.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use picluster_profiles::bundle::BootAsset;
use picluster_profiles::render::{self, RenderInputs};
use picluster_profiles::{Cluster, Node, Secrets};
use serde::Serialize;

use crate::agent::{self, AgentBinary};
use crate::atomic::{self, Staged};
use crate::base::{self, BaseImage};
use crate::bootfiles::{self, Content, Payload};
use crate::cache::Cache;
use crate::compress::{self, Compress};
use crate::copy::{self, CopyMethod};
use crate::digest;
use crate::fetch::Fetcher;
use crate::k3s::{self, K3sAssets};
use crate::obtain::{self, BaseRequest, ObtainedBase};
use crate::progress;

pub const DEFAULT_OUT: &str = "images/build";

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The cluster file.
    #[arg(short, long, default_value = "cluster.toml")]
    pub config: PathBuf,
    /// Base image to use instead of the cluster file's (path, file:// or http(s):// URL).
    #[arg(long, value_name = "PATH|URL")]
    pub base: Option<String>,
    /// Output directory.
    #[arg(long, default_value = DEFAULT_OUT)]
    pub out: PathBuf,
    /// Build only these nodes (repeatable; default: all).
    #[arg(long = "node", value_name = "NAME")]
    pub nodes: Vec<String>,
    /// Compress the images (for CI artefacts).
    #[arg(long, value_enum, default_value_t = Compress::None)]
    pub compress: Compress,
    /// The node agent binary (default: found next to picluster or in the workspace build).
    #[arg(long, value_name = "PATH")]
    pub agent: Option<PathBuf>,
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
    let mut secrets = Secrets::load_for(config)?;
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
            bail!(
                "{}: there is no node named \"{n}\"; the nodes are: {}",
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

#[derive(Debug, Serialize)]
pub struct Output {
    pub node: String,
    pub role: &'static str,
    pub file: String,
    pub compression: Compress,
    pub size: u64,
    pub sha256: String,
    /// Size of the raw disk image (what a card must hold).
    pub image_size: u64,
}

#[derive(Debug, Serialize)]
struct BuildRecord<'a> {
    picluster_version: &'a str,
    source_date_epoch: i64,
    inputs: RecordInputs<'a>,
    outputs: &'a [Output],
}

#[derive(Debug, Serialize)]
struct RecordInputs<'a> {
    cluster_file: Named<'a>,
    cluster: &'a str,
    base: Named<'a>,
    k3s_version: &'a str,
    k3s_binary_sha256: &'a str,
    k3s_airgap_sha256: Option<&'a str>,
    agent_version: &'a str,
    agent_sha256: &'a str,
}

#[derive(Debug, Serialize)]
struct Named<'a> {
    name: String,
    sha256: &'a str,
}

pub fn run(args: &BuildArgs) -> Result<()> {
    let started = Instant::now();
    let Inputs { cluster, secrets } = load_inputs(&args.config, true)?;
    let nodes = select_nodes(&cluster, &args.nodes)?;
    let epoch = build_epoch()?;
    let agent = agent::locate(args.agent.as_deref())?;
    progress::step(format!(
        "agent: picluster-node {} ({})",
        agent.version,
        agent.path.display()
    ));

    let fetcher = Fetcher::new(Cache::from_env().context("cannot open the download cache")?)?;
    let obtained = obtain::obtain(&fetcher, &BaseRequest::new(&cluster, args.base.as_deref()))
        .context("cannot obtain the base image")?;
    let base = base::inspect(&obtained.raw)?;
    base.validate()?;
    progress::step(format!(
        "base: {} ({}, {} cache)",
        obtained.source_name,
        base.rootfs.pretty_name(),
        if obtained.warm { "warm" } else { "cold" }
    ));
    let assets = k3s::fetch_assets(&fetcher, &cluster).context("cannot obtain the K3s release")?;

    fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let lock_path = args.out.join(".picluster-build.lock");
    let lock = File::create(&lock_path)
        .with_context(|| format!("cannot write in {}", args.out.display()))?;
    if lock.try_lock().is_err() {
        bail!(
            "another picluster build is writing to {}; wait for it to finish",
            args.out.display()
        );
    }
    check_space(&args.out, &obtained.raw, nodes.len())?;

    let inputs = render_inputs(epoch, &assets);
    let payload = payload(&agent, &assets);
    let mut staged = Vec::new();
    let mut outputs = Vec::new();
    // Raw images are hashed on a second thread while the next node is copied
    // and patched: hashing is CPU-bound, copying mostly I/O.
    std::thread::scope(|scope| -> Result<()> {
        let (to_hash, queue) = std::sync::mpsc::channel::<(usize, PathBuf)>();
        let hasher = scope.spawn(move || {
            queue
                .iter()
                .map(|(i, path)| (i, digest::file_sha256(&path)))
                .collect::<Vec<_>>()
        });
        for (i, node) in nodes.iter().enumerate() {
            let t = Instant::now();
            let (file, output, method) = build_node(
                &args.out,
                &cluster,
                &secrets,
                node,
                &base,
                &obtained,
                &inputs,
                &payload,
                args.compress,
                epoch,
            )
            .with_context(|| format!("cannot build the image of {}", node.name))?;
            progress::step(format!(
                "{}: {} ({}, {:.1}s)",
                node.name,
                output.file,
                match method {
                    CopyMethod::Reflink => "reflink",
                    CopyMethod::Sparse => "sparse copy",
                },
                t.elapsed().as_secs_f64()
            ));
            if output.sha256.is_empty() {
                let _ = to_hash.send((i, file.path().to_path_buf()));
            }
            staged.push(file);
            outputs.push(output);
        }
        drop(to_hash);
        for (i, result) in hasher.join().expect("hashing thread does not panic") {
            let (sha256, size) =
                result.with_context(|| format!("cannot hash the image of {}", outputs[i].node))?;
            outputs[i].sha256 = sha256;
            outputs[i].size = size;
        }
        Ok(())
    })?;

    // All nodes built: publish together.
    for s in staged {
        let dest = s.dest().to_path_buf();
        s.commit()
            .with_context(|| format!("cannot write {}", dest.display()))?;
    }
    write_sums(&args.out, &outputs)?;
    let record = BuildRecord {
        picluster_version: env!("CARGO_PKG_VERSION"),
        source_date_epoch: epoch,
        inputs: RecordInputs {
            cluster_file: Named {
                name: file_name(&cluster.path),
                sha256: &cluster.sha256,
            },
            cluster: &cluster.name,
            base: Named {
                name: obtained.source_name.clone(),
                sha256: &obtained.source_sha256,
            },
            k3s_version: &cluster.k3s.version,
            k3s_binary_sha256: &assets.binary.sha256,
            k3s_airgap_sha256: assets.airgap.as_ref().map(|a| a.sha256.as_str()),
            agent_version: &agent.version,
            agent_sha256: &agent.sha256,
        },
        outputs: &outputs,
    };
    let mut json = serde_json::to_vec_pretty(&record)?;
    json.push(b'\n');
    atomic::write(&args.out.join("build.json"), &json, 0o644).context("cannot write build.json")?;
    drop(lock);
    let _ = fs::remove_file(&lock_path);
    progress::step(format!(
        "built {} image(s) in {} in {:.1}s; check them with: (cd {} && sha256sum -c SHA256SUMS)",
        outputs.len(),
        args.out.display(),
        started.elapsed().as_secs_f64(),
        args.out.display()
    ));
    for o in &outputs {
        println!("{}", args.out.join(&o.file).display());
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn build_node(
    out: &Path,
    cluster: &Cluster,
    secrets: &Secrets,
    node: &Node,
    base: &BaseImage,
    obtained: &ObtainedBase,
    inputs: &RenderInputs,
    payload: &Payload,
    how: Compress,
    epoch: i64,
) -> Result<(Staged, Output, CopyMethod)> {
    let (bundle, node_secrets) = render::render_node(cluster, secrets, node, inputs)?;
    let files = bootfiles::boot_files(
        &base.cmdline,
        &base.config_txt,
        cluster,
        node,
        &bundle,
        &node_secrets,
        payload,
    );
    let name = format!("{}{}", node.name, how.suffix());
    let dest = out.join(&name);
    let src = File::open(&obtained.raw)
        .with_context(|| format!("cannot open {}", obtained.raw.display()))?;

    // The raw image: the final file itself, or a temporary one to compress.
    let raw_staged = Staged::new(&out.join(format!("{}.img", node.name)))?;
    raw_staged.set_mode(0o644)?;
    let method = copy::copy_image(&src, raw_staged.file()).context("cannot copy the base image")?;
    bootfiles::write(raw_staged.file(), base.boot, &files, epoch)
        .context("cannot patch the boot partition")?;
    let image_size = raw_staged.file().metadata()?.len();

    // Raw images are hashed by the caller (on another thread): empty digest.
    let (staged, sha256, size) = if how == Compress::None {
        (raw_staged, String::new(), image_size)
    } else {
        let staged = Staged::new(&dest)?;
        staged.set_mode(0o644)?;
        let bar = progress::bytes(image_size, format!("compress {}", node.name));
        let mut reader = File::open(raw_staged.path())?;
        let (sha, size) = compress::compress(&mut reader, staged.file(), how, &bar)
            .with_context(|| format!("cannot compress {name}"))?;
        bar.finish_and_clear();
        drop(raw_staged); // removes the temporary raw image
        (staged, sha, size)
    };
    Ok((
        staged,
        Output {
            node: node.name.clone(),
            role: node.role.as_str(),
            file: name,
            compression: how,
            size,
            sha256,
            image_size,
        },
        method,
    ))
}

/// Write SHA256SUMS: this build's outputs, plus entries of earlier builds whose
/// files are still there and were not rebuilt now.
fn write_sums(out: &Path, outputs: &[Output]) -> Result<()> {
    let path = out.join("SHA256SUMS");
    let mut sums: BTreeMap<String, String> = BTreeMap::new();
    if let Ok(old) = fs::read_to_string(&path) {
        for line in old.lines() {
            if let Some((d, f)) = line.split_once("  ")
                && out.join(f).is_file()
            {
                sums.insert(f.to_string(), d.to_string());
            }
        }
    }
    for o in outputs {
        sums.insert(o.file.clone(), o.sha256.clone());
    }
    let text: String = sums.iter().map(|(f, d)| format!("{d}  {f}\n")).collect();
    atomic::write(&path, text.as_bytes(), 0o644).context("cannot write SHA256SUMS")
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Fail early, before writing gigabytes, when the output filesystem is too small.
fn check_space(out: &Path, raw: &Path, nodes: usize) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let used = fs::metadata(raw)?.blocks() * 512;
    let need = used.saturating_mul(nodes as u64 + 1);
    let st = rustix::fs::statvfs(out)
        .with_context(|| format!("cannot check free space in {}", out.display()))?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    if free < need {
        bail!(
            "{} has {} free but {} node image(s) need about {}; free some space or use --out on a larger disk",
            out.display(),
            progress::size(free),
            nodes,
            progress::size(need)
        );
    }
    Ok(())
}
