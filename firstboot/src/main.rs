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

impl Cli {
    fn boot_dir(&self) -> PathBuf {
        self.boot
            .clone()
            .unwrap_or_else(|| self.root.join(BOOT_MOUNT.trim_start_matches('/')))
    }

    fn host(&self, log: Log) -> Result<Host> {
        let mut host = Host::system(&self.root, &self.boot_dir(), log);
        if let Some(file) = &self.record_commands {
            let recorder = Arc::new(Recorder::to_file(file)?);
            let clock = SimulatedEnvironment::starting_at(SystemEnvironment.now());
            host.env = Arc::new(clock.recording(recorder.clone()));
            host.runner = recorder;
        }
        Ok(host)
    }
}

/// Runs the command. The flag tells whether the error was already logged
/// (the stages log their own failure, with what to do about it).
fn run(cli: Cli) -> Result<(), (anyhow::Error, bool)> {
    let plain = |e: anyhow::Error| (e, false);
    let logged = |e: anyhow::Error| (e, true);
    let boot_log = Some(cli.boot_dir().join(boot_files::LOG));
    match cli.command {
        Command::Stage1 => {
            // Stage 1 has no login yet: its errors also go to the console.
            let console = Some(cli.root.join("dev/console"));
            let host = cli.host(Log::new(boot_log, console)).map_err(plain)?;
            if let Err(e) = stage1::run(&host, None) {
                // Handled: exit 0 so systemd.run_success_action=reboot reboots,
                // into stage 1 again or, after the last try, a normal boot.
                stage1::recover(&host, &e);
            }
        }
        Command::Stage2 => {
            let host = cli.host(Log::new(boot_log, None)).map_err(plain)?;
            stage2::run(&host, None).map_err(logged)?;
        }
        Command::Status { json } => {
            let host = cli.host(Log::new(None, None)).map_err(plain)?;
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
