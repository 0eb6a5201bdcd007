//! Helpers the config unit tests share: parsing text with a fixed, fake environment.

use super::{Config, ConfigError};

/// A valid key digest (of `password`).
pub(super) const DIGEST: &str = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";

/// Parses `text` with `AZURE_CLIENT_SECRET` and `RES` as the only environment variables.
pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "test.toml", &|name| match name {
        "AZURE_CLIENT_SECRET" => Some("s3cret".into()),
        "RES" => Some("myres".into()),
        _ => None,
    })
}

/// The error `text` is refused with, as displayed.
pub(super) fn err(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

/// Parses `text` from `/etc/ep/config.toml` whose included files read from `files` (resolved
/// path → text); `KEY_DIGEST` is the only environment variable.
pub(super) fn parse_with_files(
    text: &str,
    files: &[(&str, &str)],
) -> Result<(Config, Vec<super::SourceFile>), ConfigError> {
    let read = |p: &std::path::Path| {
        files
            .iter()
            .find(|(path, _)| std::path::Path::new(path) == p)
            .map(|(_, t)| t.to_string())
            .ok_or_else(|| "No such file or directory (os error 2)".to_string())
    };
    let env = |name: &str| (name == "KEY_DIGEST").then(|| DIGEST.to_string());
    let sources = super::Sources {
        env: &env,
        base_dir: std::path::Path::new("/etc/ep"),
        read: &read,
    };
    Config::parse_with(text, "/etc/ep/config.toml", &sources)
}
