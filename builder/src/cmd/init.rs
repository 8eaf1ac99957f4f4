//! `picluster init` and `picluster secrets`: start a cluster directory, and
//! create the secrets file beside an existing cluster file. Neither ever
//! overwrites a file.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use picluster_profiles::pki::{ClusterPki, pki_path};
use picluster_profiles::secrets::secrets_path;
use picluster_profiles::{Cluster, SAMPLE_CLUSTER, SAMPLE_SSH_KEY, Secrets, checks};

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Directory for cluster.toml and secrets.toml (created if missing).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Public key to put in the cluster file (default: ~/.ssh/id_ed25519.pub, id_ecdsa.pub or id_rsa.pub).
    #[arg(long, value_name = "FILE")]
    pub ssh_key: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct SecretsArgs {
    /// The cluster file; secrets.toml is created beside it.
    #[arg(short, long, default_value = "cluster.toml")]
    pub config: PathBuf,
    /// Store the token of the cluster `[cluster] join` names, read from FILE
    /// (or `-`: standard input), never from the command line: a
    /// `K10…::server:…` server token, or an agent (`::node:`) or plain token.
    #[arg(long, value_name = "FILE|-")]
    pub join_token: Option<PathBuf>,
}

/// The join token from a file or standard input, trimmed.
fn read_join_token(from: &Path) -> Result<String> {
    let text = if from == Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .context("cannot read the join token from standard input")?;
        s
    } else {
        fs::read_to_string(from).with_context(|| format!("cannot read {}", from.display()))?
    };
    Ok(text.trim().to_string())
}

fn find_key(explicit: Option<&Path>) -> Result<Option<(PathBuf, String)>> {
    let candidates: Vec<PathBuf> = match explicit {
        Some(p) => vec![p.to_path_buf()],
        None => {
            let Some(home) = std::env::var_os("HOME") else {
                return Ok(None);
            };
            ["id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"]
                .iter()
                .map(|n| Path::new(&home).join(".ssh").join(n))
                .collect()
        }
    };
    for p in candidates {
        match fs::read_to_string(&p) {
            Ok(text) => {
                let key = text.trim().to_string();
                checks::ssh_public_key(&key)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
                return Ok(Some((p, key)));
            }
            Err(e) if explicit.is_some() => {
                return Err(e).with_context(|| format!("cannot read {}", p.display()));
            }
            Err(_) => {}
        }
    }
    Ok(None)
}

pub fn init(args: &InitArgs) -> Result<()> {
    let cluster = args.dir.join("cluster.toml");
    let secrets = args.dir.join("secrets.toml");
    let existing: Vec<String> = [&cluster, &secrets]
        .iter()
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if !existing.is_empty() {
        bail!(
            "{} already exist(s); picluster init never overwrites files (to create only the secrets file, run `picluster secrets -c {}`)",
            existing.join(" and "),
            cluster.display()
        );
    }
    let key = find_key(args.ssh_key.as_deref())?;
    fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let text = match &key {
        Some((_, k)) => SAMPLE_CLUSTER.replace(SAMPLE_SSH_KEY, k),
        None => SAMPLE_CLUSTER.to_string(),
    };
    // The sample must stay valid with the user's key in it.
    let parsed = Cluster::parse(&cluster, &text)
        .context("internal error: the sample cluster file does not validate")?;
    let mut generated = Secrets::generate()?;
    generated.fill_platform(&parsed.platform)?;
    write_new(&cluster, text.as_bytes())?;
    if let Err(e) = generated.write_new(&secrets, "homelab") {
        let _ = fs::remove_file(&cluster);
        return Err(e.into());
    }
    let pki_dir = pki_path(&cluster);
    if let Err(e) = new_pki().and_then(|p| Ok(p.write_new(&pki_dir)?)) {
        let _ = fs::remove_file(&cluster);
        let _ = fs::remove_file(&secrets);
        return Err(e);
    }
    let gitignore = args.dir.join(".gitignore");
    if !gitignore.exists() {
        write_new(&gitignore, GITIGNORE)?;
    } else {
        let have = fs::read_to_string(&gitignore).unwrap_or_default();
        let missing: Vec<&str> = ["secrets.toml", "pki/", "images/"]
            .into_iter()
            .filter(|p| !have.lines().any(|l| l.trim() == *p))
            .collect();
        if !missing.is_empty() {
            eprintln!(
                "warning: {} does not ignore {}; add them so secrets (node images carry tokens) stay out of git",
                gitignore.display(),
                missing.join(" and ")
            );
        }
    }
    println!(
        "wrote {}, {} (mode 0600) and the cluster's CAs in {} (mode 0700)",
        cluster.display(),
        secrets.display(),
        pki_dir.display()
    );
    match key {
        Some((p, _)) => println!("SSH access: your key {}", p.display()),
        None => eprintln!(
            "warning: no SSH public key found (~/.ssh/id_ed25519.pub …); the cluster file holds an example key.\n\
             Replace it in [access] ssh_authorized_keys, or run `ssh-keygen -t ed25519` and init again."
        ),
    }
    println!(
        "next: edit {} (IPs, gateway), then `picluster plan -c {}`",
        cluster.display(),
        cluster.display()
    );
    Ok(())
}

/// The sample `.gitignore`: the secrets file, and the image output folder
/// (`images/`, where `build` and `quickstart.sh` write): every node image
/// carries the node's tokens and password.
const GITIGNORE: &[u8] = b"# Cluster secrets never go into git; node images carry them too.\nsecrets.toml\npki/\nkubeconfig\nimages/\n";

/// The cluster's CAs, made now.
fn new_pki() -> Result<ClusterPki> {
    crate::pki::generate(crate::pki::unix_now()?)
}

/// `pki/` for a cluster that creates its own control plane and has none yet
/// (made before picluster kept one). Clusters with `join` get none: they keep
/// the joined cluster's CA. Returns what it did, for the user.
fn ensure_pki(cluster: &Cluster) -> Result<Option<String>> {
    let dir = pki_path(&cluster.path);
    if cluster.join.is_some() || dir.exists() {
        return Ok(None);
    }
    new_pki()?.write_new(&dir)?;
    Ok(Some(format!(
        "created the cluster's CAs in {} (mode 0700, keys 0600); images built from now on pin them in every join token, \
         and nodes flashed before keep working until they are re-flashed (rebuild and re-flash every node together, \
         starting with the first server, so the cluster is made with these CAs)",
        dir.display()
    )))
}

fn write_new(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(data)
        .with_context(|| format!("cannot write {}", path.display()))
}

pub fn secrets(args: &SecretsArgs) -> Result<()> {
    let cluster = Cluster::load(&args.config)?;
    let path = secrets_path(&args.config);
    let join_token = args
        .join_token
        .as_deref()
        .map(read_join_token)
        .transpose()?;
    let store_join = |s: &mut Secrets| -> Result<Option<&'static str>> {
        let Some(t) = &join_token else {
            return Ok(None);
        };
        let what = args
            .join_token
            .as_deref()
            .expect("given")
            .display()
            .to_string();
        let field = s
            .set_join_token(t)
            .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
        if cluster.join.is_none() {
            eprintln!(
                "warning: {} has no [cluster] join; the token is stored but unused until it names the cluster to join",
                cluster.path.display()
            );
        }
        Ok(Some(field))
    };
    if path.exists() {
        // A secrets file with problems stops here, before anything is made;
        // missing core keys are what this command repairs.
        let (mut secrets, missing) = Secrets::load_repairable(&path, &args.config)?;
        let made_pki = ensure_pki(&cluster)?;
        secrets.fill_core(&missing)?;
        for field in &missing {
            eprintln!(
                "warning: {} had no {field}; a new one was made. Nodes built before carry the old value: rebuild and re-flash every node, the first server first",
                path.display()
            );
        }
        let mut added: Vec<String> = missing.iter().map(|f| f.to_string()).collect();
        added.extend(secrets.fill_platform(&cluster.platform)?);
        if let Some(field) = store_join(&mut secrets)? {
            added.push(field.to_string());
        }
        if let Some(msg) = &made_pki {
            println!("{msg}");
        }
        if added.is_empty() && made_pki.is_none() {
            println!(
                "{} already holds every secret the cluster needs; nothing changed",
                path.display()
            );
        } else if !added.is_empty() {
            secrets.rewrite(&path, &cluster.name)?;
            println!(
                "{}: added {} (existing values kept)",
                path.display(),
                added.join(", ")
            );
        }
        return Ok(());
    }
    let mut secrets = Secrets::generate()?;
    secrets.fill_platform(&cluster.platform)?;
    store_join(&mut secrets)?;
    secrets.write_new(&path, &cluster.name)?;
    println!(
        "wrote {} (mode 0600); keep it out of git and back it up",
        path.display()
    );
    if let Some(msg) = ensure_pki(&cluster)? {
        println!("{msg}");
    }
    Ok(())
}
