//! The `bosun` binary: parse arguments, run, print the error chain, map to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = bosun::cli::Cli::parse();
    match bosun::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("bosun: error: {err:#}");
            ExitCode::from(1)
        }
    }
}
