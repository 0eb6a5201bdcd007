//! The `entra-proxy` binary: logging, then the CLI.

use std::process::ExitCode;

fn main() -> ExitCode {
    let _flush_logs_on_exit = entra_proxy::cli::init_logging();
    entra_proxy::cli::main()
}
