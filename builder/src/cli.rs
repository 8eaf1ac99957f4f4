//! Command-line interface: clap definitions and dispatch.

use clap::{Parser, Subcommand};

use crate::cmd;

/// Build ready-to-flash Raspberry Pi OS images for a K3s cluster from one cluster file.
#[derive(Debug, Parser)]
#[command(
    name = "picluster",
    version = crate::agent::EXPECTED_AGENT,
    about,
    propagate_version = true,
    after_help = "Exit status: 0 done, 1 failed (the message says why), 2 usage error, \
                  130 stopped by Ctrl-C (what was kept for the next run is said); \
                  `picluster flash --help` lists flash's own codes."
)]
pub struct Cli {
    /// Print only results and errors (no progress).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented sample cluster file and fresh secrets into DIR.
    Init(cmd::init::InitArgs),
    /// Create secrets.toml (random K3s tokens and node secret) beside a cluster file.
    Secrets(cmd::init::SecretsArgs),
    /// Validate the cluster file and show what every node's image will contain.
    Plan(cmd::plan::PlanArgs),
    /// List the pinned base images; with --refresh, the newer ones Raspberry Pi offers.
    Images(cmd::images::ImagesArgs),
    /// Download and verify the base image and K3s release into the cache.
    Fetch(cmd::fetch::FetchArgs),
    /// Write one bootable image per node.
    Build(cmd::build::BuildArgs),
    /// Show what an image contains (partitions, OS, boot files, picluster node).
    Inspect(cmd::inspect::InspectArgs),
    /// Write an admin kubeconfig for the cluster (client certificate from its CAs).
    Kubeconfig(cmd::kubeconfig::KubeconfigArgs),
    /// Show every node's first-boot progress and the data platform's state, from the workstation.
    Status(cmd::status::StatusArgs),
    /// Write an image to an SD card or NVMe drive: only the blocks in use, verified.
    Flash(cmd::flash::FlashCmd),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    crate::progress::set_quiet(cli.quiet);
    crate::interrupt::install();
    let result = dispatch(&cli.command);
    // After Ctrl-C, say what stayed as it was (a flash says it itself).
    match (&cli.command, result) {
        (Command::Build(_) | Command::Fetch(_), Err(e)) if crate::interrupt::caused(&e) => Err(e
            .context(
                "stopped: no output was left half-written (the output folder is as it was); \
                 verified downloads stay in the cache, so the same command carries on",
            )),
        (_, result) => result,
    }
}

/// Whether the command was asked for JSON: its errors then go to stderr as
/// one JSON object too, for scripts.
pub fn wants_json(command: &Command) -> bool {
    match command {
        Command::Plan(a) => a.json,
        Command::Inspect(a) => a.json,
        Command::Images(a) => a.json,
        Command::Status(a) => a.json,
        _ => false,
    }
}

/// An error as JSON: `{"error": {"message", "causes", "problems": [{file,
/// line, column, field, message, fix}]}}`; `problems` lists each thing wrong
/// with a cluster or secrets file (empty for other errors).
pub fn error_json(err: &anyhow::Error) -> String {
    let problems: Vec<serde_json::Value> = err
        .chain()
        .find_map(|e| e.downcast_ref::<picluster_profiles::Error>())
        .map(|e| e.problems())
        .unwrap_or_default()
        .iter()
        .map(|p| {
            serde_json::json!({
                "file": p.file.display().to_string(),
                "line": p.line.map(|(l, _)| l),
                "column": p.line.map(|(_, c)| c),
                "field": p.field,
                "message": p.message,
                "fix": p.hint,
            })
        })
        .collect();
    let causes: Vec<String> = err.chain().skip(1).map(|c| c.to_string()).collect();
    serde_json::json!({
        "error": {
            "message": err.to_string(),
            "causes": causes,
            "problems": problems,
        }
    })
    .to_string()
}

fn dispatch(command: &Command) -> anyhow::Result<()> {
    match command {
        Command::Init(a) => cmd::init::init(a),
        Command::Secrets(a) => cmd::init::secrets(a),
        Command::Plan(a) => cmd::plan::run(a),
        Command::Images(a) => cmd::images::run(a),
        Command::Fetch(a) => cmd::fetch::run(a),
        Command::Build(a) => cmd::build::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Kubeconfig(a) => cmd::kubeconfig::run(a),
        Command::Status(a) => cmd::status::run(a),
        Command::Flash(a) => cmd::flash::run(a),
    }
}
