//! nhsmail-ctl: the command-line client of nhsmail-agent. It parses the command line, runs one command against one
//! agent over gRPC, or against every agent of an inventory file, and exits with a code documented in `--help`.
//!
//! Module map:
//! - [`cli`]: flags, validation and help text.
//! - [`token`]: the bearer token and where it comes from.
//! - [`connect`]: the channel to the agent and the per-call deadline.
//! - [`inventory`]: the fleet inventory file and each agent's TLS settings.
//! - [`tls`]: TLS for https:// URLs, with optional client certificates.
//! - [`commands`]: one module per command group.
//! - [`convert`]: every conversion between proto types, flags and JSON.
//! - [`output`]: tables, JSON and warnings.
//! - [`error`]: failures, their messages and exit codes.

mod cli;
mod commands;
mod connect;
mod convert;
mod error;
mod inventory;
mod output;
mod tls;
mod token;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::parse();

    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(error::exit::AGENT_ERROR);
        }
    };

    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", error::render(&err));
            ExitCode::from(error::exit_code(&err))
        }
    }
}
