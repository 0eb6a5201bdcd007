//! Logs on stderr: `tracing` events in the text format of [`text`] (or JSON), the access lines
//! of [`access`] written by the proxy's own formatter, both through the per-thread buffers of
//! [`sink`], so logging never stalls a request.

pub(crate) mod access;
mod sink;
mod text;

pub(crate) use sink::FlushGuard;

/// What is logged without `RUST_LOG`: the proxy's lines, and only warnings from the Azure SDK
/// (whose HTTP pipeline, `typespec_client_core`, logs every failed identity call at info, the
/// proxy's own line about it already said) and hyper.
const DEFAULT_FILTER: &str =
    "info,azure_core=warn,azure_identity=warn,typespec_client_core=warn,typespec=warn,hyper=warn";

/// Sets up logging on stderr: `RUST_LOG` filters (the access lines have the target
/// [`access::TARGET`]), `ENTRA_PROXY_LOG_FORMAT=json` writes one JSON object per line. Lines
/// are buffered per thread and written by a background thread; keep the returned guard
/// alive until exit so the last lines are written.
pub(crate) fn init() -> Option<FlushGuard> {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    let (sink, guard) = match sink::LogSink::new(std::io::stderr()) {
        Ok((sink, guard)) => (Some(sink), Some(guard)),
        Err(e) => {
            eprintln!(
                "entra-proxy: cannot start the log writer thread ({e}); logging to stderr directly"
            );
            (None, None)
        }
    };
    let writer = match &sink {
        Some(sink) => BoxMakeWriter::new(sink.clone()),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    use std::io::IsTerminal as _;
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    let json = std::env::var("ENTRA_PROXY_LOG_FORMAT").is_ok_and(|v| v == "json");
    let installed = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.event_format(text::TextFormat::new(ansi)).try_init()
    };
    // Access lines follow the events: only where this subscriber is the one installed.
    if installed.is_ok() {
        let format = if json {
            access::Format::Json
        } else {
            access::Format::Text { ansi }
        };
        access::install(format, sink);
    }
    guard
}
