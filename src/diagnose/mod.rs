//! Explaining auth failures: Azure error classification, token explanation and `doctor`.

mod annotate;

pub use annotate::{DIAGNOSIS_HEADER, annotate, wants};

use crate::claims::Claims;
use crate::routing::Route;
use crate::server::AppState;

/// Classifies an upstream error for one route; `None` when there is nothing to add.
pub(crate) fn classify_for_route(
    _state: &AppState,
    _status: u16,
    _retry_after: Option<&str>,
    _body: &[u8],
    _route: &Route,
    _claims: Option<&Claims>,
) -> Option<String> {
    None
}
