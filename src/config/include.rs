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

/// The largest config or keys file read: a bigger one is refused on load and on reload without
/// being read whole (a config holds a few thousand keys at most; 16 MiB is far past that).
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Reads a config or keys file of at most [`MAX_FILE_BYTES`]: the size is checked before
/// reading, and no more than one byte past the bound is ever read (a file that grows, or a
/// pipe, stops there too). The error is the reason, for [`super::ConfigError::Read`].
pub fn read_bounded(path: &Path) -> Result<String, String> {
    let bytes = read_bytes_bounded(path).map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|_| "is not UTF-8 text".to_string())
}

/// The bytes of the file at `path`, refusing one larger than [`MAX_FILE_BYTES`].
pub(super) fn read_bytes_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let too_large = |size: u64| {
        std::io::Error::other(format!(
            "is {size} bytes or more, over the limit of {MAX_FILE_BYTES} bytes (16 MiB) for a config or keys file"
        ))
    };
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    if size > MAX_FILE_BYTES {
        return Err(too_large(size));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
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
/// swapped `..data` link counts as a change). A file over [`MAX_FILE_BYTES`] counts as
/// unreadable, never read whole: the reload it sets off is refused.
pub fn digest_on_disk(paths: &[PathBuf]) -> String {
    let contents: Vec<Option<Vec<u8>>> = paths.iter().map(|p| read_bytes_bounded(p).ok()).collect();
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

    #[test]
    fn a_file_over_the_bound_is_refused_without_being_read_whole() {
        let dir = std::env::temp_dir().join(format!("ep-bound-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big = dir.join("big.toml");
        let f = std::fs::File::create(&big).unwrap();
        // Sparse: 16 MiB + 1 on disk costs nothing, and reading it whole would be slow.
        f.set_len(MAX_FILE_BYTES + 1).unwrap();
        let e = read_bounded(&big).unwrap_err();
        assert!(
            e.contains("over the limit of 16777216 bytes (16 MiB)"),
            "{e}"
        );
        let ok = dir.join("ok.toml");
        std::fs::write(&ok, "a = 1\n").unwrap();
        assert_eq!(read_bounded(&ok).unwrap(), "a = 1\n");
        assert_ne!(
            digest_on_disk(std::slice::from_ref(&big)),
            digest([(big.as_path(), Some(&[0u8; 0][..]))])
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
