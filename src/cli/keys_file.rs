//! Editing a keys file (`[[keys]]` and `[[identities]]` blocks) for `keys new`, `keys revoke`,
//! `identities add` and `identities remove`: checked before and after against the keys-file
//! schema, comments and layout kept, written to a temporary file (same directory, same mode)
//! and renamed over the old one.

use std::path::Path;

/// Why a keys file was not changed.
#[derive(Debug, thiserror::Error)]
pub(super) enum KeysFileError {
    #[error("{path}: cannot read: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: not a keys file, left unchanged: {reason}")]
    Malformed { path: String, reason: String },
    #[error("{path}: {} named {name:?} already exists; {} it first or pick another name", .table.one(), .table.undo())]
    Duplicate {
        path: String,
        table: Table,
        name: String,
    },
    #[error("{path}: no {} named {name:?}; {} in the file: {known}", .table.noun(), .table.plural())]
    NotFound {
        path: String,
        table: Table,
        name: String,
        known: String,
    },
    #[error("{path}: cannot write: {reason}")]
    Write { path: String, reason: String },
}

/// Which blocks of a keys file an edit is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Table {
    Keys,
    Identities,
}

impl Table {
    /// The table's name in TOML: `keys`, `identities`.
    fn name(self) -> &'static str {
        match self {
            Table::Keys => "keys",
            Table::Identities => "identities",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Table::Keys => "key",
            Table::Identities => "identity",
        }
    }

    fn one(self) -> &'static str {
        match self {
            Table::Keys => "a key",
            Table::Identities => "an identity",
        }
    }

    /// The command word that takes a block out: `revoke` a key, `remove` an identity.
    fn undo(self) -> &'static str {
        match self {
            Table::Keys => "revoke",
            Table::Identities => "remove",
        }
    }

    fn plural(self) -> &'static str {
        self.name()
    }
}

/// The names of a keys file's blocks of `table`, in order; refuses anything the proxy would
/// not load as a keys file (other tables, unknown fields, a key without a name or digest).
fn names(text: &str, table: Table) -> Result<Vec<String>, String> {
    match table {
        Table::Keys => crate::config::keys_file_names(text),
        Table::Identities => crate::config::keys_file_identity_names(text),
    }
}

/// The key names of a keys file.
#[cfg(test)]
fn key_names(text: &str) -> Result<Vec<String>, String> {
    names(text, Table::Keys)
}

/// The entries of `table` as parsed, to check that an edit changed only what it meant to.
fn entries_of(text: &str, table: Table) -> Result<Vec<toml::Value>, String> {
    let doc: toml::Table = toml::from_str(text).map_err(|e| e.message().to_string())?;
    match doc.get(table.name()) {
        None => Ok(Vec::new()),
        Some(toml::Value::Array(a)) => Ok(a.clone()),
        Some(_) => Err(format!("{0}: must be [[{0}]] blocks", table.name())),
    }
}

#[cfg(test)]
fn entries(text: &str) -> Result<Vec<toml::Value>, String> {
    entries_of(text, Table::Keys)
}

/// `text` with a new `[[keys]]` block appended.
pub(super) fn with_key_added(
    path: &str,
    text: &str,
    block: &str,
    name: &str,
) -> Result<String, KeysFileError> {
    with_block_added(path, text, Table::Keys, block, name)
}

/// `text` without the `[[keys]]` block named `name`.
pub(super) fn with_key_removed(
    path: &str,
    text: &str,
    name: &str,
) -> Result<String, KeysFileError> {
    with_block_removed(path, text, Table::Keys, name)
}

/// `text` with a new block of `table` appended.
pub(super) fn with_block_added(
    path: &str,
    text: &str,
    table: Table,
    block: &str,
    name: &str,
) -> Result<String, KeysFileError> {
    let names_before = names(text, table).map_err(|reason| KeysFileError::Malformed {
        path: path.into(),
        reason,
    })?;
    if names_before.iter().any(|n| n == name) {
        return Err(KeysFileError::Duplicate {
            path: path.into(),
            table,
            name: name.into(),
        });
    }
    let names = names_before;
    let mut out = text.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(block.trim_end());
    out.push('\n');
    let after = self::names(&out, table).map_err(|reason| KeysFileError::Malformed {
        path: path.into(),
        reason: format!("the edited file would not parse ({reason})"),
    })?;
    if after.len() != names.len() + 1 {
        return Err(KeysFileError::Malformed {
            path: path.into(),
            reason: format!(
                "the edited file would not hold exactly one more {}",
                table.noun()
            ),
        });
    }
    Ok(out)
}

/// `text` without the block of `table` named `name` (its header line up to the next table
/// header); every other line, comments included, stays as it was.
pub(super) fn with_block_removed(
    path: &str,
    text: &str,
    table: Table,
    name: &str,
) -> Result<String, KeysFileError> {
    let names = self::names(text, table).map_err(|reason| KeysFileError::Malformed {
        path: path.into(),
        reason,
    })?;
    let Some(index) = names.iter().position(|n| n == name) else {
        return Err(KeysFileError::NotFound {
            path: path.into(),
            table,
            name: name.into(),
            known: if names.is_empty() {
                "(none)".into()
            } else {
                names.join(", ")
            },
        });
    };
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let is_header = |l: &str| l.trim_start().starts_with('[');
    let blocks: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with(&format!("[[{}]]", table.name())))
        .map(|(i, _)| i)
        .collect();
    let malformed = |reason: &str| KeysFileError::Malformed {
        path: path.into(),
        reason: reason.into(),
    };
    let start = *blocks
        .get(index)
        .ok_or_else(|| malformed("the block headers do not match the parsed blocks"))?;
    let mut end = (start + 1..lines.len())
        .find(|&i| is_header(lines[i]))
        .unwrap_or(lines.len());
    // Blank and comment lines just above the next block belong to it.
    while end > start + 1 && {
        let l = lines[end - 1].trim();
        l.is_empty() || l.starts_with('#')
    } {
        end -= 1;
    }
    let out: String = lines[..start]
        .iter()
        .chain(lines[end..].iter())
        .copied()
        .collect();
    let unparsable = |reason: String| KeysFileError::Malformed {
        path: path.into(),
        reason: format!("the edited file would not parse ({reason})"),
    };
    let mut expected = entries_of(text, table).map_err(unparsable)?;
    if index < expected.len() {
        expected.remove(index);
    }
    let after = entries_of(&out, table).map_err(unparsable)?;
    self::names(&out, table).map_err(unparsable)?;
    let other = match table {
        Table::Keys => Table::Identities,
        Table::Identities => Table::Keys,
    };
    if after != expected
        || entries_of(&out, other).map_err(unparsable)?
            != entries_of(text, other).map_err(unparsable)?
    {
        return Err(malformed(
            "removing the block would change other blocks; edit the file by hand",
        ));
    }
    Ok(out)
}

/// Reads a keys file; a missing file reads as empty (the first `keys new` creates it).
pub(super) fn read(path: &Path) -> Result<String, KeysFileError> {
    if std::fs::metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
        return Ok(String::new());
    }
    crate::config::read_bounded(path).map_err(|reason| KeysFileError::Read {
        path: path.display().to_string(),
        reason,
    })
}

/// Writes `contents` next to `path` and renames it over `path`: readers see the old file or
/// the new one, never half of either.
pub(super) fn write_atomically(path: &Path, contents: &str) -> Result<(), KeysFileError> {
    use std::io::Write as _;
    let fail = |e: std::io::Error| KeysFileError::Write {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "keys.toml".into());
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(path).map_or(0o600, |m| m.permissions().mode() & 0o777);
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself survives a crash once the directory is synced.
        #[cfg(unix)]
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# team keys\n[[keys]]\nname = \"a\"\nsha256 = \"00\"\n\n# b is the batch job\n[[keys]]\nname = \"b\"\nsha256 = \"11\"\nmodels = [\"gpt-4o\"]\n";

    #[test]
    fn adding_appends_a_block_and_keeps_the_rest() {
        let out =
            with_key_added("f", FILE, "[[keys]]\nname = \"c\"\nsha256 = \"22\"", "c").unwrap();
        assert!(out.starts_with(FILE));
        assert_eq!(key_names(&out).unwrap(), ["a", "b", "c"]);
        let empty =
            with_key_added("f", "", "[[keys]]\nname = \"c\"\nsha256 = \"22\"", "c").unwrap();
        assert_eq!(empty, "[[keys]]\nname = \"c\"\nsha256 = \"22\"\n");
    }

    #[test]
    fn adding_a_name_twice_is_refused() {
        let e =
            with_key_added("f", FILE, "[[keys]]\nname = \"a\"\nsha256 = \"22\"", "a").unwrap_err();
        assert!(matches!(e, KeysFileError::Duplicate { .. }), "{e}");
    }

    #[test]
    fn removing_takes_out_only_that_block() {
        let out = with_key_removed("f", FILE, "a").unwrap();
        assert_eq!(key_names(&out).unwrap(), ["b"]);
        assert!(out.contains("# b is the batch job"));
        assert!(out.contains("models = [\"gpt-4o\"]"));
        let out = with_key_removed("f", FILE, "b").unwrap();
        assert_eq!(key_names(&out).unwrap(), ["a"]);
        assert!(out.contains("# team keys"));
    }

    #[test]
    fn removing_keeps_the_comment_above_the_next_block() {
        let out = with_key_removed("f", FILE, "a").unwrap();
        assert_eq!(
            out,
            "# team keys\n\n# b is the batch job\n[[keys]]\nname = \"b\"\nsha256 = \"11\"\nmodels = [\"gpt-4o\"]\n"
        );
    }

    #[test]
    fn a_removal_that_would_touch_another_key_is_refused() {
        // A `[` line inside a multi-line array looks like a header to the line scan.
        let tricky = "[[keys]]\nname = \"a\"\nsha256 = \"00\"\nmodels = [\n[\"x\"][0],\n]\n";
        let tricky2 = "[[keys]]\nname = \"a\"\nsha256 = \"00\"\n[[keys]]\nname = \"b\"\nsha256 = \"11\"\nmodels = [\n  \"m\",\n[\"y\"]]\n";
        for (text, name) in [(tricky, "a"), (tricky2, "a")] {
            if let Ok(out) = with_key_removed("f", text, name) {
                assert_eq!(
                    key_names(&out).unwrap().len() + 1,
                    key_names(text).unwrap().len()
                );
                assert_eq!(
                    entries(&out).unwrap().len() + 1,
                    entries(text).unwrap().len()
                );
            }
        }
        let unknown_field = "[[keys]]\nname = \"a\"\nsha256 = \"00\"\nmodel = [\"x\"]\n";
        let e = with_key_removed("f", unknown_field, "a").unwrap_err();
        assert!(e.to_string().contains("unknown field `model`"), "{e}");
    }

    #[test]
    fn removing_an_unknown_name_lists_the_known_ones() {
        let e = with_key_removed("f", FILE, "zz").unwrap_err();
        assert_eq!(
            e.to_string(),
            "f: no key named \"zz\"; keys in the file: a, b"
        );
    }

    #[test]
    fn malformed_files_are_refused_not_overwritten() {
        for bad in [
            "[[keys]\nname = 1",
            "[server]\nlisten = \"x\"",
            "[[keys]]\nsha256 = \"00\"",
        ] {
            let e = with_key_removed("f", bad, "a").unwrap_err();
            assert!(matches!(e, KeysFileError::Malformed { .. }), "{bad}: {e}");
            let e = with_key_added("f", bad, "[[keys]]\nname = \"c\"", "c").unwrap_err();
            assert!(matches!(e, KeysFileError::Malformed { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn writes_replace_the_file_whole() {
        let dir = std::env::temp_dir().join(format!("ep-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.toml");
        write_atomically(&path, FILE).unwrap();
        assert_eq!(read(&path).unwrap(), FILE);
        write_atomically(&path, "").unwrap();
        assert_eq!(read(&path).unwrap(), "");
        assert_eq!(read(&dir.join("absent.toml")).unwrap(), "");
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
