//! `entra-proxy identities`: add or remove an `[[identities]]` block in a keys file (a running
//! proxy picks the change up), and say which identity a token would get and why.

use super::keys_file::{self, Table};
use super::{EXIT_USAGE, read_token_arg, toml_string};
use crate::claims::decode_unverified;
use crate::config::Config;
use crate::inbound::{Identities, Principal};
use crate::limits::Limits;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum IdentitiesCommand {
    /// Append an [[identities]] block to a keys file, atomically (a running proxy picks it
    /// up). Every match field given must hold for a token to be this identity.
    Add(AddArgs),
    /// Remove an [[identities]] block from a keys file, atomically.
    Remove {
        /// The identity's name.
        #[arg(long)]
        name: String,
        /// The keys file (`[server] keys_file`) to edit.
        #[arg(long)]
        keys_file: PathBuf,
    },
    /// Say which identity a token would get under a config, and why: the claims read, each
    /// identity's fields that held or not. The signature is not checked.
    Match {
        /// A JWT, `Bearer …`, or a file holding one; `-` or nothing reads standard input.
        token: Option<String>,
        /// The TOML config file.
        #[arg(long, short, env = "ENTRA_PROXY_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The identity's name (its label is identity:<name>).
    #[arg(long)]
    pub name: String,
    /// The app's client id (`azp` / `appid`; a client-credentials caller's client id).
    #[arg(long)]
    pub app_id: Option<String>,
    /// One user's or service principal's object id (`oid`).
    #[arg(long)]
    pub object_id: Option<String>,
    /// A group's object id (in `groups`).
    #[arg(long)]
    pub group: Option<String>,
    /// An app role's value (in `roles`).
    #[arg(long)]
    pub role: Option<String>,
    /// A tenant id (`tid`): every caller of the tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// A model or deployment the identity may use (repeat for more; none means all).
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// The keys file (`[server] keys_file`) to add the identity to.
    #[arg(long)]
    pub keys_file: PathBuf,
}

pub(super) fn run(command: IdentitiesCommand) -> ExitCode {
    match command {
        IdentitiesCommand::Add(args) => add(&args),
        IdentitiesCommand::Remove { name, keys_file } => remove(&name, &keys_file),
        IdentitiesCommand::Match { token, config } => explain_match(token.as_deref(), &config),
    }
}

/// The `[[identities]]` block of `args`.
fn block(args: &AddArgs) -> String {
    let mut block = format!("[[identities]]\nname = {}\n", toml_string(&args.name));
    for (key, value) in [
        ("app_id", &args.app_id),
        ("object_id", &args.object_id),
        ("group", &args.group),
        ("role", &args.role),
        ("tenant", &args.tenant),
    ] {
        if let Some(v) = value {
            block.push_str(&format!("{key} = {}\n", toml_string(v)));
        }
    }
    if !args.models.is_empty() {
        let models: Vec<String> = args.models.iter().map(|m| toml_string(m)).collect();
        block.push_str(&format!("models = [{}]\n", models.join(", ")));
    }
    block
}

fn add(args: &AddArgs) -> ExitCode {
    let block = block(args);
    // The block alone must be a valid identity before it goes into the file.
    if let Err(e) = check_block(&block) {
        eprintln!("entra-proxy: not added: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let shown = args.keys_file.display().to_string();
    let edited = keys_file::read(&args.keys_file)
        .and_then(|text| {
            keys_file::with_block_added(&shown, &text, Table::Identities, &block, &args.name)
        })
        .and_then(|out| keys_file::write_atomically(&args.keys_file, &out));
    if let Err(e) = edited {
        return super::keys_file_failed(&e);
    }
    eprintln!("entra-proxy: added identity {:?} to {shown}", args.name);
    print!("{block}");
    ExitCode::SUCCESS
}

/// An identity block checked on its own, against a config that has nothing else: its match
/// fields' shapes, that it matches something. Its models are checked when the proxy loads it.
fn check_block(block: &str) -> Result<(), String> {
    let text = format!(
        "[[backends]]\nname = \"b\"\nendpoint = \"http://127.0.0.1:1\"\n[[keys]]\nname = \"k\"\nsha256 = \"{}\"\n{}",
        "0".repeat(64),
        block.replace("models = ", "# models = ")
    );
    Config::parse(&text, "the new block", &|_| None)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn remove(name: &str, file: &std::path::Path) -> ExitCode {
    let shown = file.display().to_string();
    let edited = crate::config::read_bounded(file)
        .map_err(|reason| keys_file::KeysFileError::Read {
            path: shown.clone(),
            reason,
        })
        .and_then(|text| keys_file::with_block_removed(&shown, &text, Table::Identities, name))
        .and_then(|out| keys_file::write_atomically(file, &out));
    if let Err(e) = edited {
        return super::keys_file_failed(&e);
    }
    eprintln!("entra-proxy: removed identity {name:?} from {shown}");
    ExitCode::SUCCESS
}

/// `identities match`: the token's claims, the identity it gets, and every identity's fields.
fn explain_match(token: Option<&str>, config: &std::path::Path) -> ExitCode {
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let token = match read_token_arg(token) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let claims = match decode_unverified(&token) {
        Ok(u) => u.claims,
        Err(e) => {
            eprintln!("entra-proxy: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let identities = Identities::new(
        &config.identities,
        config.inbound.unmatched,
        config.inbound.upstream,
        &Limits::in_memory(),
    );
    let principal = Principal::of_claims(&claims);
    print!("{}", report(&identities, &principal));
    ExitCode::SUCCESS
}

/// What `identities match` prints.
fn report(identities: &Identities, p: &Principal<'_>) -> String {
    let shown = |v: Option<&str>| v.unwrap_or("(none)").to_string();
    let mut out =
        String::from("The token's signature was NOT checked: this reads its claims only.\n\n");
    out.push_str(&format!(
        "claims:   tid {}, oid {}, azp/appid {}\n          roles {:?}, groups {}{}\n\n",
        shown(p.tenant),
        shown(p.object_id),
        shown(p.app_id),
        p.roles.strings(),
        p.groups.strings().len(),
        if p.groups_overage {
            " (groups overage: none in the token)"
        } else {
            ""
        }
    ));
    match identities.find(p) {
        Ok(Some(found)) => out.push_str(&format!(
            "identity: {} (the most specific identity whose every field holds)\n\n",
            found.label
        )),
        Ok(None) if identities.is_empty() => {
            out.push_str("identity: none configured; the caller passes as `entra`\n\n")
        }
        Ok(None) => out.push_str(
            "identity: none matches; [inbound.entra] unmatched = \"allow\" lets it pass as `entra`\n\n",
        ),
        Err(e) => out.push_str(&format!("identity: none matches: refused with 403: {e}\n\n")),
    }
    for (identity, fields) in identities.explain(p) {
        let said: Vec<String> = fields
            .iter()
            .map(|(field, held)| {
                format!("{field} {}", if *held { "holds" } else { "does not hold" })
            })
            .collect();
        out.push_str(&format!("  {}: {}\n", identity.label, said.join(", ")));
    }
    out
}
