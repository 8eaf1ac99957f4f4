use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use clap::{Parser, Subcommand};
use picluster_node::host::{Environment, Host, Recorder, SimulatedEnvironment, SystemEnvironment};
use picluster_node::journal::Journal;
use picluster_node::log::Log;
use picluster_node::{stage1, stage2, status};
use picluster_profiles::bundle::{BOOT_MOUNT, boot_files};

/// picluster node agent: turns a freshly flashed Raspberry Pi into a K3s node.
#[derive(Parser)]
#[command(name = "picluster-node", version, about)]
struct Cli {
    /// Root directory of the node's filesystem.
    #[arg(long, global = true, default_value = "/", value_name = "DIR")]
    root: PathBuf,
    /// The boot partition [default: <root>/boot/firmware].
    #[arg(long, global = true, value_name = "DIR")]
    boot: Option<PathBuf>,
    /// Write commands (and network probes) to FILE as JSON lines instead of
    /// running them, with a simulated clock and network (CI dry runs).
    #[arg(long, global = true, hide = true, value_name = "FILE")]
    record_commands: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// First boot, run from the kernel command line: configure the node, then reboot.
    Stage1,
    /// The systemd service: install and start K3s, wait until the node is Ready.
    Stage2,
    /// Show the step journal.
    Status {
        /// Print the journal as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn host(cli: &Cli, log: Log) -> Result<Host> {
    let boot = cli
        .boot
        .clone()
        .unwrap_or_else(|| cli.root.join(BOOT_MOUNT.trim_start_matches('/')));
    let mut host = Host::system(&cli.root, &boot, log);
    if let Some(file) = &cli.record_commands {
        let recorder = Arc::new(Recorder::to_file(file)?);
        host.env = Arc::new(
            SimulatedEnvironment::starting_at(SystemEnvironment.now()).recording(recorder.clone()),
        );
        host.runner = recorder;
    }
    Ok(host)
}

/// Runs the command; `Err(true)` when the error was already logged.
fn run(cli: Cli) -> Result<(), (anyhow::Error, bool)> {
    let plain = |e: anyhow::Error| (e, false);
    match cli.command {
        Command::Stage1 => {
            let boot_log = cli
                .boot
                .clone()
                .unwrap_or_else(|| cli.root.join(BOOT_MOUNT.trim_start_matches('/')))
                .join(boot_files::LOG);
            let console = cli.root.join("dev/console");
            let host = host(&cli, Log::new(Some(boot_log), Some(console))).map_err(plain)?;
            stage1::run(&host, None).map_err(|e| (e, true))?;
        }
        Command::Stage2 => {
            let boot_log = cli
                .boot
                .clone()
                .unwrap_or_else(|| cli.root.join(BOOT_MOUNT.trim_start_matches('/')))
                .join(boot_files::LOG);
            let host = host(&cli, Log::new(Some(boot_log), None)).map_err(plain)?;
            stage2::run(&host, None).map_err(|e| (e, true))?;
        }
        Command::Status { json } => {
            let host = host(&cli, Log::new(None, None)).map_err(plain)?;
            let text = status::show(&Journal::path(&host), json).map_err(plain)?;
            print!("{text}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    // Keep the version marker in the binary for `picluster inspect`.
    std::hint::black_box(picluster_node::VERSION_MARKER);
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err((e, logged)) => {
            if !logged {
                eprintln!("picluster-node: error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}
