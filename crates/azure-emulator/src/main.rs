//! The `azure-emulator` binary: one emulator on a loopback address until Ctrl-C or SIGTERM,
//! driven from outside through its `/emulator/` control API (benchmarks, manual testing).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use azure_emulator::{Emulator, EmulatorConfig, ResourceKind, ServiceOptions};
use clap::Parser;

/// `EX_USAGE`: bad command line, or the address cannot be bound.
const EXIT_USAGE: u8 = 64;
/// `EX_SOFTWARE`: failed at run time.
const EXIT_RUNTIME: u8 = 70;

/// A local stand-in for Azure (Entra ID, managed identity, the Azure OpenAI data plane) on
/// loopback only.
#[derive(Debug, Parser)]
#[command(name = "azure-emulator", version)]
struct Args {
    /// Where to listen; loopback addresses only.
    #[arg(long, default_value = "127.0.0.1:9999")]
    listen: SocketAddr,
    /// Delay before each data-plane answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// SSE events per streamed completion.
    #[arg(long, default_value_t = 5)]
    stream_events: usize,
    /// Milliseconds between SSE events.
    #[arg(long, default_value_t = 20)]
    stream_interval_ms: u64,
    /// Accept this resource key in `api-key` (default: keys refused, as with disableLocalAuth).
    #[arg(long, env = "AZURE_EMULATOR_RESOURCE_KEY", hide_env_values = true)]
    resource_key: Option<String>,
    /// Also serve a resource of this kind on its own port (repeatable): `ai-services`,
    /// `speech-regional`, `translator-global`, `search`, `open-ai`, `foundry`, `regional`. It
    /// takes the resource key above; more options through `POST /emulator/services`.
    #[arg(long = "service", value_parser = parse_kind)]
    services: Vec<ResourceKind>,
    /// Items per page for the resources of `--service` (Search results, Document
    /// Intelligence model lists).
    #[arg(long, default_value_t = azure_emulator::DEFAULT_PAGE_SIZE)]
    page_size: usize,
}

fn parse_kind(s: &str) -> Result<ResourceKind, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| format!("unknown resource kind '{s}'"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    if !args.listen.ip().is_loopback() {
        eprintln!(
            "azure-emulator: listens on loopback only; got {}",
            args.listen
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("azure-emulator: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let config = EmulatorConfig {
        latency: Duration::from_millis(args.latency_ms),
        stream_events: args.stream_events,
        stream_interval: Duration::from_millis(args.stream_interval_ms),
        resource_key: args.resource_key.clone(),
        ..EmulatorConfig::default()
    };
    match Emulator::start_on(args.listen, config).await {
        Ok(emulator) => {
            println!("emulator listening on {}", emulator.url());
            for kind in &args.services {
                let options = ServiceOptions {
                    key: args.resource_key.clone(),
                    page_size: args.page_size,
                    ..ServiceOptions::default()
                };
                match emulator.add_service(*kind, options).await {
                    Ok(url) => {
                        let name = serde_json::to_value(kind)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default();
                        println!("service {name} listening on {url}");
                    }
                    Err(e) => {
                        eprintln!("azure-emulator: cannot open a listener: {e}");
                        return ExitCode::from(EXIT_RUNTIME);
                    }
                }
            }
            shutdown_signal().await;
            // Dropping it stops the listeners and ends open streams at once.
            drop(emulator);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("azure-emulator: cannot listen on {}: {e}", args.listen);
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Ctrl-C, or SIGTERM on Unix. If a signal cannot be watched, only the other one stops it.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
