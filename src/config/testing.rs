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
