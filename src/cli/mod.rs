//! Subcommands: `serve`, `demo` (feature `demo`), `keys` (editing a keys file: `keys_file`),
//! `identities` (`identities`), `config check`, `explain`, `doctor`, `usage`.

mod at_proxy;
mod identities;
mod keys_file;
mod usage;

use crate::config::{Config, KeyDigest, NoteLevel, render_normalized};
use crate::identity::IdentityEnv;
use crate::server;
use crate::state::AppState;
use clap::{Args, Parser, Subcommand};
use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// `EX_USAGE`: bad command line or configuration.
pub const EXIT_USAGE: u8 = 64;
/// `EX_SOFTWARE`: failed at run time.
pub const EXIT_RUNTIME: u8 = 70;

#[derive(Debug, Parser)]
#[command(
    name = "entra-proxy",
    version,
    about = "Swap API keys for Entra ID tokens in front of Azure OpenAI and Azure AI services"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Serve(ConfigArg),
    /// Start a local Azure emulator and the proxy, show a key being swapped for a token.
    Demo(DemoArgs),
    /// Manage client keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage identities (Entra callers with a policy), and see which a token would get.
    #[command(subcommand)]
    Identities(identities::IdentitiesCommand),
    /// Work with the config file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Decode a token without trusting it and say whether Azure would accept it.
    Explain(ExplainArgs),
    /// Check a config end to end: DNS, reachability, identity, token claims, each deployment.
    Doctor(DoctorArgs),
    /// Print each key's and identity's usage in the current minute and quota period (with
    /// `--by user`, each user's of identities with per-user budgets).
    Usage(UsageArgs),
}

pub use usage::UsageArgs;

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The TOML config file.
    #[arg(long, short, env = "ENTRA_PROXY_CONFIG")]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// A JWT, `Bearer …`, `Authorization: Bearer …`, or a token-endpoint JSON answer;
    /// `-` or nothing reads standard input.
    pub token: Option<String>,
    /// What the token is meant for.
    #[arg(long = "for", value_enum, default_value_t = ExplainFor::Cognitiveservices)]
    pub target: ExplainFor,
    /// The cloud the token is meant for.
    #[arg(long, value_enum, default_value_t = CloudArg::Public)]
    pub cloud: CloudArg,
    /// The tenant the token must come from.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also say what this proxy would do with the token: whether [inbound.entra] takes it,
    /// the identity it gets, and what reaches Azure (the token, the proxy's, or the user's own
    /// on their behalf, with which credential).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ExplainFor {
    /// Azure OpenAI and the other Cognitive Services (audience cognitiveservices.azure.com).
    Cognitiveservices,
    /// Azure AI Foundry's *.services.ai.azure.com (audience ai.azure.com).
    Foundry,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CloudArg {
    /// Azure's public cloud.
    Public,
    /// Azure US Government.
    Usgov,
    /// Azure operated by 21Vianet (China).
    China,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The TOML config file.
    #[arg(long, short, env = "ENTRA_PROXY_CONFIG")]
    pub config: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also log what the proxy and its libraries do, on stderr (RUST_LOG filters).
    #[arg(long, short)]
    pub verbose: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the proxy listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Exit after the demo request instead of serving until Ctrl-C.
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print a fresh random key and the config entry (keys table) to paste; with
    /// `--keys-file`, append the entry to that file instead (a running proxy picks it up).
    New {
        /// The key's name: how logs, metrics and /status call its caller (key:NAME).
        #[arg(long)]
        name: String,
        /// A keys file (`[server] keys_file`) to add the key to, atomically.
        #[arg(long)]
        keys_file: Option<PathBuf>,
    },
    /// Remove a key from a keys file, atomically (a running proxy refuses it from then on).
    Revoke {
        /// The name of the key to remove.
        #[arg(long)]
        name: String,
        /// The keys file (`[server] keys_file`) to remove it from.
        #[arg(long)]
        keys_file: PathBuf,
    },
    /// Read a key (e.g. an old Azure resource key) on stdin and print its config entry.
    Hash {
        /// The key's name: how logs, metrics and /status call its caller.
        #[arg(long)]
        name: String,
        /// Mark it as a legacy Azure resource key.
        #[arg(long)]
        legacy: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate without starting: print the config as it will be used, and every warning.
    Check(ConfigArg),
}

/// Sets up logging on stderr: `RUST_LOG` filters (the access lines under the target
/// `entra_proxy::access`), `ENTRA_PROXY_LOG_FORMAT=json` for JSON. Lines are buffered per
/// thread and written by a background thread; keep the returned guard alive until exit so the
/// last lines are written.
pub fn init_logging() -> Option<crate::logging::FlushGuard> {
    crate::logging::init()
}

/// Parses the command line, sets up logging, and runs the subcommand. `doctor` logs nothing
/// unless `--verbose`: its report is the output, and library lines would land inside it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let _flush_logs_on_exit = match &cli.command {
        Command::Doctor(DoctorArgs { verbose: false, .. }) => None,
        _ => init_logging(),
    };
    match cli.command {
        // Requests are served by the server's own worker threads; this runtime only runs
        // start-up, signals and the token keeper.
        Command::Serve(args) => run_on(tokio::runtime::Builder::new_current_thread(), serve(args)),
        Command::Demo(args) => demo(&args),
        Command::Keys(cmd) => keys(cmd),
        Command::Identities(cmd) => identities::run(cmd),
        Command::Config(ConfigCommand::Check(args)) => config_check(&args),
        Command::Explain(args) => explain(&args),
        Command::Doctor(args) => run_async(doctor(args)),
        Command::Usage(args) => run_async(usage::usage(args)),
    }
}

#[cfg(feature = "demo")]
fn demo(args: &DemoArgs) -> ExitCode {
    use crate::demo::DemoError;
    run_async(async {
        let Err(e) = crate::demo::run(args.listen, args.once).await else {
            return ExitCode::SUCCESS;
        };
        eprintln!("entra-proxy: {e}");
        let code = match e {
            DemoError::NotLoopback(_) | DemoError::Listen { .. } => EXIT_USAGE,
            DemoError::Emulator(_)
            | DemoError::Random
            | DemoError::Setup(_)
            | DemoError::Request(_)
            | DemoError::Server(_) => EXIT_RUNTIME,
        };
        ExitCode::from(code)
    })
}

#[cfg(not(feature = "demo"))]
fn demo(_: &DemoArgs) -> ExitCode {
    eprintln!(
        "entra-proxy: this binary was built without the demo (cargo feature `demo`, on by default; \
         the container image leaves it out); from a source checkout run `cargo run --release -- demo`"
    );
    ExitCode::from(EXIT_USAGE)
}

fn run_async<F: std::future::Future<Output = ExitCode>>(f: F) -> ExitCode {
    run_on(tokio::runtime::Builder::new_multi_thread(), f)
}

fn run_on<F: std::future::Future<Output = ExitCode>>(
    mut builder: tokio::runtime::Builder,
    f: F,
) -> ExitCode {
    match builder.enable_all().build() {
        Ok(rt) => rt.block_on(f),
        Err(e) => {
            eprintln!("entra-proxy: cannot start the async runtime: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Loads the config, printing one line and returning the exit code on failure.
fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("entra-proxy: {e}");
        ExitCode::from(EXIT_USAGE)
    })
}

fn log_notes(config: &Config) {
    for note in &config.notes {
        match note.level {
            NoteLevel::Normalized => tracing::info!("config: {}", note.message),
            NoteLevel::Warning => tracing::warn!("config: {}", note.message),
        }
    }
}

async fn serve(args: ConfigArg) -> ExitCode {
    // First: a SIGTERM during start-up is then a graceful stop.
    let shutdown = server::shutdown_signal();
    let loaded = match Config::load_files(&args.config) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("entra-proxy: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let config = loaded.config;
    log_notes(&config);
    let listen = config.server.listen;
    let origin = crate::state::Origin {
        hash: loaded.hash,
        loaded_at: std::time::SystemTime::now(),
    };
    let otel = crate::telemetry::trace::TelemetryEnv::from_process();
    let state = match AppState::build_with(config, &IdentityEnv::from_process(), &otel, origin) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("entra-proxy: {}: {e}", args.config.display());
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // From here on SIGHUP reloads instead of ending the process.
    let watcher = crate::reload::spawn(state.clone(), args.config.clone(), loaded.files);
    let _stop_watcher = AbortOnDrop(watcher);
    let listener = match server::bind(listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("entra-proxy: cannot listen on {listen}: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let addr = listener.local_addr().map_or(listen, |a| a);
    if let Err(e) = state.limits.probe().await {
        tracing::warn!("{e}; starting anyway: limits.on_redis_error applies until it answers");
    }
    tracing::info!(
        listen = %addr,
        identity = %state.tokens.describe(),
        backends = state.snapshot().config.backends.len(),
        keys = state.snapshot().config.keys.len(),
        "entra-proxy listening"
    );
    match server::serve(listener, state, shutdown).await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("entra-proxy: server error: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A token given on the command line, in a file named there, or on standard input (`-` or
/// nothing): the JWT itself, without a `Bearer ` or `Authorization: ` in front.
fn read_token_arg(arg: Option<&str>) -> Result<String, ExitCode> {
    let text = match arg {
        Some(t) if t != "-" && std::path::Path::new(t).is_file() => std::fs::read_to_string(t)
            .map_err(|e| {
                eprintln!("entra-proxy: cannot read the token from {t}: {e}");
                ExitCode::from(EXIT_USAGE)
            })?,
        Some(t) if t != "-" => t.to_string(),
        _ => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map_err(|e| {
                eprintln!("entra-proxy: cannot read the token from stdin: {e}");
                ExitCode::from(EXIT_USAGE)
            })?;
            s
        }
    };
    let t = text.trim();
    let t = t.strip_prefix("Authorization:").map_or(t, str::trim);
    let t = t
        .strip_prefix("Bearer ")
        .or_else(|| t.strip_prefix("bearer "))
        .unwrap_or(t);
    Ok(t.trim().to_string())
}

fn explain(args: &ExplainArgs) -> ExitCode {
    use crate::cloud::Cloud;
    use crate::diagnose::{Target, TargetKind};
    let input = match args.token.as_deref() {
        Some(t) if t != "-" => t.to_string(),
        _ => {
            let mut s = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut s) {
                eprintln!("entra-proxy: cannot read the token from stdin: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
            s
        }
    };
    let target = Target {
        kind: match args.target {
            ExplainFor::Cognitiveservices => TargetKind::CognitiveServices,
            ExplainFor::Foundry => TargetKind::Foundry,
        },
        cloud: match args.cloud {
            CloudArg::Public => Cloud::Public,
            CloudArg::Usgov => Cloud::Usgov,
            CloudArg::China => Cloud::China,
        },
        tenant: args.tenant.clone(),
    };
    let config = match args.config.as_deref().map(Config::load).transpose() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let explanation = match crate::diagnose::explain(&input, &target, now) {
        Ok(e) => e,
        Err(e) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "accepted": false,
                        "error": e.to_string(),
                        "credential": e.credential().map(crate::diagnose::Credential::name),
                    })
                );
            } else {
                eprintln!("entra-proxy: {e}");
            }
            return ExitCode::from(1);
        }
    };
    let at_proxy = config
        .as_ref()
        .map(|c| at_proxy::report(c, &explanation.claims));
    if args.json {
        let mut value = serde_json::to_value(&explanation).unwrap_or_default();
        if let (Some(at), Some(map)) = (&at_proxy, value.as_object_mut()) {
            map.insert(
                "at_proxy".into(),
                serde_json::to_value(at).unwrap_or_default(),
            );
        }
        match serde_json::to_string_pretty(&value) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("entra-proxy: {e}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        }
    } else {
        let offset = time::UtcOffset::current_local_offset().unwrap_or(time::UtcOffset::UTC);
        print!(
            "{}",
            crate::diagnose::render_text(&explanation, &target, now, offset)
        );
        if let Some(at) = &at_proxy {
            print!("{}", at.text());
        }
    }
    // With a config, the verdict is the proxy's: a token for the proxy is not for Azure.
    if at_proxy.map_or(explanation.accepted, |a| a.accepted) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

async fn doctor(args: DoctorArgs) -> ExitCode {
    let report = crate::diagnose::doctor::run(&args.config, &IdentityEnv::from_process()).await;
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("entra-proxy: {e}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        }
    } else {
        print!("{}", report.render());
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn keys(cmd: KeysCommand) -> ExitCode {
    let (name, key, legacy) = match cmd {
        KeysCommand::New {
            name,
            keys_file: Some(file),
        } => return keys_add(&name, &file),
        KeysCommand::Revoke { name, keys_file } => return keys_revoke(&name, &keys_file),
        KeysCommand::New {
            name,
            keys_file: None,
        } => match crate::inbound::generate_key() {
            Ok(k) => (name, k, false),
            Err(_) => {
                eprintln!("entra-proxy: the system random number generator failed");
                return ExitCode::from(EXIT_RUNTIME);
            }
        },
        KeysCommand::Hash { name, legacy } => {
            let mut input = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut input) {
                eprintln!("entra-proxy: cannot read the key from stdin: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
            let key = input.trim().to_string();
            if key.is_empty() {
                eprintln!("entra-proxy: no key on stdin");
                return ExitCode::from(EXIT_USAGE);
            }
            (name, key, legacy)
        }
    };
    let digest = KeyDigest::of(&key).to_hex();
    let quoted = toml_string(&name);
    if legacy {
        println!("[[keys]]\nname = {quoted}\nsha256 = \"{digest}\"\nlegacy = true");
    } else if key.starts_with("ep-") {
        println!("# the key (give it to the client; it is not stored anywhere):\n{key}\n");
        println!("[[keys]]\nname = {quoted}\nsha256 = \"{digest}\"");
    } else {
        println!("[[keys]]\nname = {quoted}\nsha256 = \"{digest}\"");
    }
    ExitCode::SUCCESS
}

/// `keys new --keys-file`: a fresh key, its block appended to the file; the key printed once.
fn keys_add(name: &str, file: &std::path::Path) -> ExitCode {
    let Ok(key) = crate::inbound::generate_key() else {
        eprintln!("entra-proxy: the system random number generator failed");
        return ExitCode::from(EXIT_RUNTIME);
    };
    let block = format!(
        "[[keys]]\nname = {}\nsha256 = \"{}\"",
        toml_string(name),
        KeyDigest::of(&key).to_hex()
    );
    let shown = file.display().to_string();
    let edited = keys_file::read(file)
        .and_then(|text| keys_file::with_key_added(&shown, &text, &block, name))
        .and_then(|out| keys_file::write_atomically(file, &out));
    if let Err(e) = edited {
        return keys_file_failed(&e);
    }
    eprintln!("entra-proxy: added key {name:?} to {shown}");
    println!("# the key (give it to the client; it is not stored anywhere):\n{key}");
    ExitCode::SUCCESS
}

/// `keys revoke`: the key's block removed from the file.
fn keys_revoke(name: &str, file: &std::path::Path) -> ExitCode {
    let shown = file.display().to_string();
    let edited = crate::config::read_bounded(file)
        .map_err(|reason| keys_file::KeysFileError::Read {
            path: shown.clone(),
            reason,
        })
        .and_then(|text| keys_file::with_key_removed(&shown, &text, name))
        .and_then(|out| keys_file::write_atomically(file, &out));
    if let Err(e) = edited {
        return keys_file_failed(&e);
    }
    eprintln!("entra-proxy: revoked key {name:?} in {shown}");
    ExitCode::SUCCESS
}

fn keys_file_failed(e: &keys_file::KeysFileError) -> ExitCode {
    use keys_file::KeysFileError as E;
    eprintln!("entra-proxy: {e}");
    let code = match e {
        E::Read { .. } | E::Malformed { .. } | E::Duplicate { .. } | E::NotFound { .. } => {
            EXIT_USAGE
        }
        E::Write { .. } => EXIT_RUNTIME,
    };
    ExitCode::from(code)
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn config_check(args: &ConfigArg) -> ExitCode {
    let config = match load(&args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    println!("{}: valid\n", args.config.display());
    print!("{}", render_normalized(&config));
    if !config.notes.is_empty() {
        println!();
    }
    for note in &config.notes {
        let tag = match note.level {
            NoteLevel::Normalized => "normalized",
            NoteLevel::Warning => "warning",
        };
        println!("{tag}: {}", note.message);
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    /// Every subcommand says what it does, and every argument and value what it means: a new
    /// one without a doc comment fails here.
    #[test]
    fn every_command_argument_and_value_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name());
            if cmd.get_about().is_none() && path.contains(' ') && cmd.get_name() != "help" {
                missing.push(format!("{path}: no about"));
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() {
                    missing.push(format!("{path} --{id}"));
                }
                let values = if arg.get_action().takes_values() {
                    arg.get_possible_values()
                } else {
                    Vec::new()
                };
                for value in values {
                    if value.get_help().is_none() {
                        missing.push(format!("{path} --{id} {}", value.get_name()));
                    }
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "", &mut missing);
        // The value enums are walked (`--for`, `--cloud`).
        assert!(
            Cli::command()
                .find_subcommand("explain")
                .unwrap()
                .get_arguments()
                .any(|a| a.get_possible_values().len() == 2),
            "the walk sees value enums"
        );
        assert!(missing.is_empty(), "without help: {missing:?}");
    }
}
