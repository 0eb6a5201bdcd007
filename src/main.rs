//! The `entra-proxy` binary: logging, then the CLI.

use std::process::ExitCode;

fn main() -> ExitCode {
    entra_proxy::cli::init_logging();
    entra_proxy::cli::main()
}
