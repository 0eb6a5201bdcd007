//! Reload: turns a trigger — `SIGHUP`, or a change to the config file or a file it includes —
//! into a validated [`Snapshot`](crate::state::Snapshot) swapped in one step.
//!
//! The files are polled: every second each is read and the SHA-256 of their contents compared
//! with the last one loaded, which catches in-place writes, renames over the file and the
//! `..data` symlink swap Kubernetes uses for mounted ConfigMaps and Secrets alike. A new config
//! is parsed and validated whole, then installed with [`AppState::install`]; an invalid one
//! leaves the running config serving. Settings read once at start-up keep their running values
//! (see [`pin_restart_only`]).

use crate::config::{Config, ConfigError, IdentityConfig, KeyEntry};
use crate::state::{AppState, Origin};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How often the watched files are read and compared.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// After a change is seen, how long the files must stay unchanged before they are loaded (a
/// writer in the middle of rewriting a file in place).
const SETTLE: Duration = Duration::from_millis(50);

/// Why a reload was refused; the running config keeps serving.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Valid as text, but the snapshot could not be built from it.
    #[error("{source_name}: {reason}")]
    Build { source_name: String, reason: String },
}

/// What set a reload off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    Signal,
    FileChange,
}

/// A reload that was installed.
#[derive(Debug)]
pub(crate) struct Reloaded {
    /// The files the new config was read from, to watch from now on.
    pub files: Vec<PathBuf>,
    pub hash: String,
    pub changes: Changes,
    /// Keys that changed in the file but keep their running values until a restart.
    pub restart_needed: Vec<&'static str>,
}

/// What a reload changed, by name (never a key or its digest).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    pub keys_added: Vec<String>,
    pub keys_removed: Vec<String>,
    pub keys_changed: Vec<String>,
    pub identities_added: Vec<String>,
    pub identities_removed: Vec<String>,
    pub identities_changed: Vec<String>,
    pub backends_added: Vec<String>,
    pub backends_removed: Vec<String>,
    pub models_added: Vec<String>,
    pub models_removed: Vec<String>,
}

impl Changes {
    /// Compares two configs by key, backend and model names.
    pub(crate) fn between(old: &Config, new: &Config) -> Changes {
        let (keys_added, keys_removed, keys_changed) =
            diff(&old.keys, &new.keys, |k| &k.name, same_key);
        let (identities_added, identities_removed, identities_changed) = diff(
            &old.identities,
            &new.identities,
            |i| &i.name,
            same_caller_identity,
        );
        let (backends_added, backends_removed, _) =
            diff(&old.backends, &new.backends, |b| &b.name, |_, _| true);
        let (models_added, models_removed, _) =
            diff(&old.models, &new.models, |m| &m.name, |_, _| true);
        Changes {
            keys_added,
            keys_removed,
            keys_changed,
            identities_added,
            identities_removed,
            identities_changed,
            backends_added,
            backends_removed,
            models_added,
            models_removed,
        }
    }
}

impl std::fmt::Display for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts = [
            ("keys added", &self.keys_added),
            ("keys removed", &self.keys_removed),
            ("keys changed", &self.keys_changed),
            ("identities added", &self.identities_added),
            ("identities removed", &self.identities_removed),
            ("identities changed", &self.identities_changed),
            ("backends added", &self.backends_added),
            ("backends removed", &self.backends_removed),
            ("models added", &self.models_added),
            ("models removed", &self.models_removed),
        ];
        let said: Vec<String> = parts
            .iter()
            .filter(|(_, names)| !names.is_empty())
            .map(|(what, names)| format!("{what}: {}", names.join(", ")))
            .collect();
        if said.is_empty() {
            f.write_str("no key, identity, backend or model added or removed")
        } else {
            f.write_str(&said.join("; "))
        }
    }
}

/// Names added, removed, and present in both but not `same`, each in the new (or old) order.
fn diff<T>(
    old: &[T],
    new: &[T],
    name: impl Fn(&T) -> &String,
    same: impl Fn(&T, &T) -> bool,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let find = |list: &[T], n: &String| list.iter().find(|x| name(x) == n).map(|_| ());
    let added = new
        .iter()
        .filter(|x| find(old, name(x)).is_none())
        .map(|x| name(x).clone())
        .collect();
    let removed = old
        .iter()
        .filter(|x| find(new, name(x)).is_none())
        .map(|x| name(x).clone())
        .collect();
    let changed = new
        .iter()
        .filter_map(|x| {
            let before = old.iter().find(|o| name(o) == name(x))?;
            (!same(before, x)).then(|| name(x).clone())
        })
        .collect();
    (added, removed, changed)
}

fn same_caller_identity(
    a: &crate::config::IdentityEntry,
    b: &crate::config::IdentityEntry,
) -> bool {
    a.matcher == b.matcher
        && a.models == b.models
        && a.budget == b.budget
        && a.per_user == b.per_user
}

fn same_key(a: &KeyEntry, b: &KeyEntry) -> bool {
    a.digest == b.digest
        && a.legacy == b.legacy
        && a.models == b.models
        && a.expires == b.expires
        && a.requests_per_minute == b.requests_per_minute
}

fn same_identity(a: &IdentityConfig, b: &IdentityConfig) -> bool {
    use IdentityConfig as I;
    use secrecy::ExposeSecret as _;
    match (a, b) {
        (I::Auto { client_id: x }, I::Auto { client_id: y })
        | (I::ManagedIdentity { client_id: x }, I::ManagedIdentity { client_id: y }) => x == y,
        (
            I::WorkloadIdentity {
                client_id: c1,
                tenant_id: t1,
                token_file: f1,
            },
            I::WorkloadIdentity {
                client_id: c2,
                tenant_id: t2,
                token_file: f2,
            },
        ) => c1 == c2 && t1 == t2 && f1 == f2,
        (
            I::ClientSecret {
                tenant_id: t1,
                client_id: c1,
                secret: s1,
            },
            I::ClientSecret {
                tenant_id: t2,
                client_id: c2,
                secret: s2,
            },
        ) => t1 == t2 && c1 == c2 && s1.expose_secret() == s2.expose_secret(),
        (I::AzureCli { tenant_id: x }, I::AzureCli { tenant_id: y }) => x == y,
        _ => false,
    }
}

/// Gives `new` the running values of every setting read only at start-up, and names those
/// whose value in the file differs: they take effect on the next restart, never half-applied.
pub(crate) fn pin_restart_only(running: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut differ = Vec::new();
    macro_rules! pin {
        ($name:literal, $($field:tt)+) => {
            if running.$($field)+ != new.$($field)+ {
                differ.push($name);
                new.$($field)+ = running.$($field)+.clone();
            }
        };
    }
    pin!("server.listen", server.listen);
    pin!("server.workers", server.workers);
    pin!("server.max_header_bytes", server.max_header_bytes);
    pin!(
        "server.header_read_timeout_secs",
        server.header_read_timeout
    );
    pin!("upstream.connect_timeout_secs", upstream.connect_timeout);
    pin!("upstream.identity_timeout_secs", upstream.identity_timeout);
    pin!("azure.cloud", cloud);
    pin!("azure.emulator", emulator);
    if !same_identity(&running.identity, &new.identity) {
        differ.push("identity");
        new.identity = running.identity.clone();
    }
    let max_apps = |c: &Config| c.inbound.client_credentials.as_ref().map(|cc| cc.max_apps);
    if let (Some(before), Some(after)) = (max_apps(running), max_apps(new))
        && before != after
    {
        differ.push("inbound.client_credentials.max_apps");
        if let Some(cc) = new.inbound.client_credentials.as_mut() {
            cc.max_apps = before;
        }
    }
    differ
}

/// Loads `path` (and what it includes), validates it whole and installs it; on any error the
/// running config stays.
pub(crate) fn reload(state: &AppState, path: &Path) -> Result<Reloaded, ReloadError> {
    let loaded = Config::load_files(path)?;
    let running = state.snapshot();
    let mut config = loaded.config;
    let restart_needed = pin_restart_only(&running.config, &mut config);
    let changes = Changes::between(&running.config, &config);
    let origin = Origin {
        hash: loaded.hash.clone(),
        loaded_at: SystemTime::now(),
    };
    let snapshot = state
        .prepare(config, origin)
        .map_err(|reason| ReloadError::Build {
            source_name: path.display().to_string(),
            reason,
        })?;
    let loaded_at = snapshot.origin.loaded_at;
    let previous = state.install(snapshot);
    record_installed(Some(&previous.origin.hash), &loaded.hash, loaded_at);
    Ok(Reloaded {
        files: loaded.files,
        hash: loaded.hash,
        changes,
        restart_needed,
    })
}

/// The first 12 hex digits of a config hash, as shown in metrics and logs.
fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// Metrics for the config now serving.
fn record_installed(previous: Option<&str>, hash: &str, loaded_at: SystemTime) {
    if let Some(p) = previous
        && p != hash
    {
        metrics::gauge!("entra_proxy_config_info", "hash" => short(p).to_string()).set(0.0);
    }
    metrics::gauge!("entra_proxy_config_info", "hash" => short(hash).to_string()).set(1.0);
    let secs = loaded_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    metrics::gauge!("entra_proxy_config_loaded_timestamp_seconds").set(secs);
}

/// Watches `files` (those the running config was loaded from, `path` first) and reloads on a
/// change or `SIGHUP`, until the returned task is aborted. Call from within a Tokio runtime:
/// `SIGHUP` is handled from the moment this returns.
pub(crate) fn spawn(
    state: Arc<AppState>,
    path: PathBuf,
    files: Vec<PathBuf>,
) -> tokio::task::JoinHandle<()> {
    let current = state.snapshot();
    record_installed(None, &current.origin.hash, current.origin.loaded_at);
    metrics::counter!("entra_proxy_config_reloads_total").absolute(0);
    metrics::counter!("entra_proxy_config_reload_failures_total").absolute(0);
    let hangup = hangup_signal();
    let watcher = Watcher {
        seen: current.origin.hash.clone(),
        state,
        path,
        files,
        warned: Vec::new(),
    };
    tokio::spawn(watcher.run(hangup))
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot handle SIGHUP; config changes are still picked up by polling");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup_signal() -> Hangup {
    None
}

async fn next_hangup(hangup: &mut Hangup) {
    #[cfg(unix)]
    if let Some(s) = hangup.as_mut()
        && s.recv().await.is_some()
    {
        return;
    }
    let _ = hangup;
    std::future::pending::<()>().await
}

/// The polling loop's memory.
struct Watcher {
    state: Arc<AppState>,
    path: PathBuf,
    files: Vec<PathBuf>,
    /// The digest of the files last loaded or tried, so a broken file is reported once.
    seen: String,
    /// The restart-only keys last warned about, so the warning is not repeated every reload.
    warned: Vec<&'static str>,
}

impl Watcher {
    async fn run(mut self, mut hangup: Hangup) {
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let trigger = tokio::select! {
                _ = tick.tick() => Trigger::FileChange,
                () = next_hangup(&mut hangup) => Trigger::Signal,
            };
            if trigger == Trigger::FileChange {
                let Some(now) = self.settled_change().await else {
                    continue;
                };
                self.seen = now;
            }
            self.reload(trigger).await;
        }
    }

    /// The files' digest if it differs from the last seen and held still for [`SETTLE`].
    async fn settled_change(&self) -> Option<String> {
        let mut now = digest(self.files.clone()).await;
        if now == self.seen {
            return None;
        }
        for _ in 0..10 {
            tokio::time::sleep(SETTLE).await;
            let again = digest(self.files.clone()).await;
            if again == now {
                return Some(now);
            }
            now = again;
        }
        Some(now)
    }

    async fn reload(&mut self, trigger: Trigger) {
        let state = self.state.clone();
        let path = self.path.clone();
        let result = tokio::task::spawn_blocking(move || reload(&state, &path))
            .await
            .unwrap_or_else(|e| {
                Err(ReloadError::Build {
                    source_name: self.path.display().to_string(),
                    reason: format!("the reload task failed: {e}"),
                })
            });
        let trigger_name = match trigger {
            Trigger::Signal => "SIGHUP",
            Trigger::FileChange => "file change",
        };
        match result {
            Ok(done) => {
                metrics::counter!("entra_proxy_config_reloads_total").increment(1);
                tracing::info!(
                    trigger = trigger_name,
                    config_hash = short(&done.hash),
                    "config reloaded: {}",
                    done.changes
                );
                if !done.restart_needed.is_empty() && done.restart_needed != self.warned {
                    tracing::warn!(
                        "config reload: {} changed but needs a restart; the running values stay until then",
                        done.restart_needed.join(", ")
                    );
                }
                self.warned = done.restart_needed;
                self.seen = done.hash;
                self.files = done.files;
            }
            Err(e) => {
                metrics::counter!("entra_proxy_config_reload_failures_total").increment(1);
                tracing::error!(
                    trigger = trigger_name,
                    "config reload failed, the previous config keeps serving: {}",
                    e.to_string().replace("\n  ", "; ")
                );
                // From now on, watch what the refused config names: a keys file named before it
                // exists is loaded once it appears. The digest is of the files as that look read
                // them, so a change made since is still seen.
                let path = self.path.clone();
                if let Ok((files, seen)) =
                    tokio::task::spawn_blocking(move || Config::files_named(&path)).await
                {
                    self.files = files;
                    self.seen = seen;
                }
            }
        }
    }
}

/// [`crate::config::digest_on_disk`] off the event loop.
async fn digest(files: Vec<PathBuf>) -> String {
    tokio::task::spawn_blocking(move || crate::config::digest_on_disk(&files))
        .await
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'\ndeployments=['d']\n{extra}"
        );
        Config::parse(&text, "t", &|_| None).unwrap()
    }

    const K1: &str = "[[keys]]\nname='k1'\nsha256='5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8'\n";

    #[test]
    fn changes_name_keys_backends_and_models_never_digests() {
        let old = config(&format!(
            "{K1}[[keys]]\nname='k2'\nsha256='{}'\n",
            "ab".repeat(32)
        ));
        let new = config(&format!(
            "[[backends]]\nname='b'\nendpoint='http://127.0.0.1:2'\n[[models]]\nname='m'\nbackend='b'\ndeployment='x'\n{}[[keys]]\nname='k3'\nsha256='{}'\n",
            K1.replace("sha256='5e", "models=['m']\nsha256='5e"),
            "cd".repeat(32)
        ));
        let c = Changes::between(&old, &new);
        assert_eq!(c.keys_added, ["k3"]);
        assert_eq!(c.keys_removed, ["k2"]);
        assert_eq!(c.keys_changed, ["k1"]);
        assert_eq!(c.backends_added, ["b"]);
        assert_eq!(c.models_added, ["m"]);
        let shown = c.to_string();
        assert_eq!(
            shown,
            "keys added: k3; keys removed: k2; keys changed: k1; backends added: b; models added: m"
        );
        assert_eq!(
            Changes::between(&old, &old).to_string(),
            "no key, identity, backend or model added or removed"
        );
    }

    #[test]
    fn restart_only_settings_keep_their_running_values_and_are_named() {
        let running = config("[server]\nlisten='127.0.0.1:8080'\nworkers=2\n");
        let mut new = config(
            "[server]\nlisten='127.0.0.1:9090'\nworkers=3\nmax_body_bytes=10\n[upstream]\nconnect_timeout_secs=3\nfirst_byte_timeout_secs=7\n[identity]\nkind='azure-cli'\n",
        );
        let named = pin_restart_only(&running, &mut new);
        assert_eq!(
            named,
            [
                "server.listen",
                "server.workers",
                "upstream.connect_timeout_secs",
                "identity"
            ]
        );
        assert_eq!(new.server.listen, running.server.listen);
        assert_eq!(new.server.workers, running.server.workers);
        assert_eq!(
            new.upstream.connect_timeout,
            running.upstream.connect_timeout
        );
        assert_eq!(new.identity.kind_name(), running.identity.kind_name());
        // What reloads, reloads.
        assert_eq!(new.server.max_body_bytes, 10);
        assert_eq!(new.upstream.first_byte_timeout, Duration::from_secs(7));
        let mut same = running.clone();
        assert!(pin_restart_only(&running, &mut same).is_empty());
    }

    #[test]
    fn a_changed_client_secret_counts_as_an_identity_change() {
        let a = config(
            "[identity]\nkind='client-secret'\ntenant_id='t'\nclient_id='c'\nclient_secret='one'\n",
        );
        let mut b = config(
            "[identity]\nkind='client-secret'\ntenant_id='t'\nclient_id='c'\nclient_secret='two'\n",
        );
        assert_eq!(pin_restart_only(&a, &mut b), ["identity"]);
    }
}
