//! The `bosun` binary: set libgit2's globals, parse arguments, run, print the error chain
//! (each cause once, see [`bosun::error_chain`]), map to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // SAFETY: the first statement of `main`: no other thread exists yet (the tokio runtime is
    // built later, inside `run`), which is `init_git_globals`'s precondition.
    #[allow(unsafe_code)]
    unsafe {
        bosun::source::init_git_globals()
    };
    let cli = bosun::cli::Cli::parse();
    match bosun::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            let text = bosun::error_chain::error_chain(err.as_ref());
            eprintln!("bosun: error: {text}");
            ExitCode::from(1)
        }
    }
}
