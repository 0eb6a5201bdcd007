//! What routing is given and gives back: the request as routing reads it, and its [`Route`]s.

use super::table::RoutingTable;
use crate::backends::BackendId;
use crate::config::Backend;
use crate::error::ProxyError;
use bytes::Bytes;
use http::Uri;

/// What routing may read of the request body.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// Not read (streamed) or empty.
    Absent,
    /// Read whole; JSON when it has a `model`.
    Json(&'a Bytes),
    /// A multipart form, with its `model` field's value when it has one.
    Form(Option<&'a str>),
}

/// Where one request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The backend, in [`RoutingTable::backends`].
    pub backend: BackendId,
    /// The full upstream URL: backend base, re-encoded path, the client's query as sent.
    pub uri: Uri,
    pub deployment: Option<String>,
    /// The body to send instead of the client's, when it had to change.
    pub body: Option<Bytes>,
    /// The model the client asked for, when it named one.
    pub model: Option<String>,
}

/// One request as routing reads it, besides its plan.
pub(super) struct Incoming<'a> {
    pub(super) table: &'a RoutingTable,
    pub(super) path: &'a str,
    /// The client's query, without credentials.
    pub(super) query: Option<&'a str>,
    /// The backend the client named with [`BACKEND_HEADER`](super::BACKEND_HEADER).
    pub(super) chosen_backend: Option<&'a str>,
    pub(super) payload: Payload<'a>,
}

impl<'a> From<Option<&'a Bytes>> for Payload<'a> {
    fn from(body: Option<&'a Bytes>) -> Payload<'a> {
        body.map_or(Payload::Absent, Payload::Json)
    }
}

impl<'a> Incoming<'a> {
    /// The body, when it was read whole (a form's is not).
    pub(super) fn json(&self) -> Option<&'a Bytes> {
        match self.payload {
            Payload::Json(b) => Some(b),
            Payload::Absent | Payload::Form(_) => None,
        }
    }

    /// The backend for a request that names no deployment the table knows: the only one, or
    /// the one the client chose.
    pub(super) fn pick_backend(&self) -> Result<BackendId, ProxyError> {
        self.table.pick_backend(self.chosen_backend, self.path)
    }

    /// A backend's configuration.
    pub(super) fn backend(&self, id: BackendId) -> &'a Backend {
        &self.table.backends()[id].config
    }
}
