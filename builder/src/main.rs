use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = picluster::cli::Cli::parse();
    match picluster::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
