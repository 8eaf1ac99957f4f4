use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = picluster::cli::Cli::parse();
    let json = picluster::cli::wants_json(&cli.command);
    match picluster::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            if json {
                eprintln!("{}", picluster::cli::error_json(&e));
            } else {
                eprintln!("error: {e:#}");
            }
            // Flash refusals, declined confirmations and failed verification
            // have their own documented exit codes.
            std::process::ExitCode::from(picluster::flash::exit_code(&e) as u8)
        }
    }
}
