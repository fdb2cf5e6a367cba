//! The `bosun` binary: parse arguments, run, print the error chain, map to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // libgit2's globals must be set before any thread (the tokio runtime) starts.
    bosun::source::init_git_globals();
    let cli = bosun::cli::Cli::parse();
    // libgit2's global options (and openssl-probe's setenv) must run before any thread exists,
    // i.e. before a tokio runtime is built.
    bosun::source::init_git_globals();
    match bosun::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("bosun: error: {err:#}");
            ExitCode::from(1)
        }
    }
}
