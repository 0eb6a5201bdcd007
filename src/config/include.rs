//! Files a config includes (`[server] keys_file`): where they resolve, how they are read and
//! parsed, and the digest over every file a config was built from.

use super::env;
use super::errors::Errors;
use super::raw::RawKeysFile;
use std::path::{Path, PathBuf};

/// Where included files come from: the disk for [`super::Config::load`], a map or nothing for
/// tests and [`super::Config::parse`].
pub struct Sources<'a> {
    /// Resolves `${VAR}` in the config and in every included file.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Where a relative include path resolves: the config file's directory.
    pub base_dir: &'a Path,
    /// Reads an included file by its resolved path; the error is the reason it could not be.
    pub read: &'a dyn Fn(&Path) -> Result<String, String>,
}

/// One file a config was built from, with the text read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

/// Why an included file was refused: its path (as displayed) and the problems in it.
pub(super) struct IncludeError {
    pub(super) file: String,
    pub(super) problems: Vec<String>,
}

/// `path` as written, resolved against `base_dir` when relative.
pub(super) fn resolve(base_dir: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

/// Reads and parses the keys file at `path`: its keys and identities, each marked with the
/// file, and the text read.
pub(super) fn read_keys_file(
    path: &Path,
    sources: &Sources<'_>,
) -> Result<(RawKeysFile, SourceFile), IncludeError> {
    let file = path.display().to_string();
    let fail = |problems: Vec<String>| IncludeError {
        file: file.clone(),
        problems,
    };
    let text =
        (sources.read)(path).map_err(|reason| fail(vec![format!("cannot read: {reason}")]))?;
    let mut table: toml::Table =
        toml::from_str(&text).map_err(|e| fail(vec![super::toml_error(&text, &e)]))?;
    let mut errors = Errors::default();
    env::expand_table(&mut table, "", sources.env, &mut errors);
    errors.finish(Some(())).map_err(fail)?;
    let raw: RawKeysFile = serde_path_to_error::deserialize(toml::Value::Table(table))
        .map_err(|e| fail(vec![super::serde_problem(e)]))?;
    let keys = raw
        .keys
        .into_iter()
        .map(|mut k| {
            k.file = Some(file.clone());
            k
        })
        .collect();
    let identities = raw
        .identities
        .into_iter()
        .map(|mut i| {
            i.file = Some(file.clone());
            i
        })
        .collect();
    Ok((
        RawKeysFile { keys, identities },
        SourceFile {
            path: path.to_path_buf(),
            text,
        },
    ))
}

/// Reads the files `[on_behalf_of]` names (a client secret, a certificate, a private key),
/// relative to the config file, into the raw section for validation; returns those read, to
/// be watched with the config.
pub(super) fn read_obo_files(
    obo: &mut super::raw::RawOnBehalfOf,
    sources: &Sources<'_>,
) -> Vec<SourceFile> {
    let named: Vec<String> = [
        &obo.client_secret_file,
        &obo.certificate_file,
        &obo.private_key_file,
    ]
    .into_iter()
    .flatten()
    .cloned()
    .collect();
    let mut read = Vec::new();
    for written in named {
        let path = resolve(sources.base_dir, &written);
        let text = (sources.read)(&path);
        if let Ok(t) = &text {
            read.push(SourceFile {
                path: path.clone(),
                text: t.clone(),
            });
        }
        obo.read.push((written, text));
    }
    read
}

/// The key names in keys-file text, checked against the keys-file schema (unknown fields and
/// tables refused) but with `${VAR}` left as written and values unchecked: what the `keys`
/// command needs to edit a file without breaking it.
pub fn keys_file_names(text: &str) -> Result<Vec<String>, String> {
    Ok(keys_file_raw(text)?
        .keys
        .into_iter()
        .map(|k| k.name)
        .collect())
}

/// The identity names in keys-file text, checked like [`keys_file_names`].
pub fn keys_file_identity_names(text: &str) -> Result<Vec<String>, String> {
    Ok(keys_file_raw(text)?
        .identities
        .into_iter()
        .map(|i| i.name)
        .collect())
}

fn keys_file_raw(text: &str) -> Result<RawKeysFile, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| super::toml_error(text, &e))?;
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(super::serde_problem)
}

/// Hex SHA-256 over the files a config was built from, in order: each file's path and
/// contents, or that it could not be read. [`super::Loaded::hash`] and a watcher that reads the
/// same files again agree exactly when nothing changed.
pub fn digest<'a>(files: impl IntoIterator<Item = (&'a Path, Option<&'a [u8]>)>) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for (path, contents) in files {
        let path = path.as_os_str().as_encoded_bytes();
        h.update((path.len() as u64).to_le_bytes());
        h.update(path);
        match contents {
            Some(c) => {
                h.update([1]);
                h.update((c.len() as u64).to_le_bytes());
                h.update(c);
            }
            None => h.update([0]),
        }
    }
    hex::encode(h.finalize())
}

/// [`digest`] of the files at `paths` as they are on disk now (following symlinks, so a
/// swapped `..data` link counts as a change).
pub fn digest_on_disk(paths: &[PathBuf]) -> String {
    let contents: Vec<Option<Vec<u8>>> = paths.iter().map(|p| std::fs::read(p).ok()).collect();
    digest(
        paths
            .iter()
            .zip(&contents)
            .map(|(p, c)| (p.as_path(), c.as_deref())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        assert_eq!(
            resolve(Path::new("/etc/ep"), "keys/keys.toml"),
            PathBuf::from("/etc/ep/keys/keys.toml")
        );
        assert_eq!(
            resolve(Path::new("/etc/ep"), "/run/keys.toml"),
            PathBuf::from("/run/keys.toml")
        );
    }

    #[test]
    fn the_digest_changes_with_contents_paths_and_readability() {
        let a = Path::new("/a");
        let b = Path::new("/b");
        let base = digest([(a, Some(&b"x"[..]))]);
        assert_eq!(base, digest([(a, Some(&b"x"[..]))]));
        assert_ne!(base, digest([(a, Some(&b"y"[..]))]));
        assert_ne!(base, digest([(b, Some(&b"x"[..]))]));
        assert_ne!(base, digest([(a, None)]));
        // Moving bytes between files is a change too.
        assert_ne!(
            digest([(a, Some(&b"xy"[..])), (b, Some(&b""[..]))]),
            digest([(a, Some(&b"x"[..])), (b, Some(&b"y"[..]))])
        );
        assert_eq!(base.len(), 64);
    }
}
