//! The access log: one line per proxied request, written by the proxy's own formatter straight
//! into the log buffer of [`super::sink`], instead of as a `tracing` event.
//!
//! This runs for every request, and a `tracing` event is its largest cost there (a value set
//! built, each field visited through a trait object and formatted through `core::fmt`, the
//! line copied twice). A line here looks exactly like the event it replaces would in the
//! chosen format — text in the shape of [`super::text`], or `tracing_subscriber`'s flattened
//! JSON — and is filtered by `RUST_LOG` like one, under the target [`TARGET`]; the tests below
//! hold both formats to the `tracing` rendering of the same fields.
//!
//! A line's fields can be rendered when they are known (the answer's head) and the line written
//! later (the end of its stream), so an answer keeps one string, not one per field.

use super::sink::LogSink;
use super::text::{Escaped, write_level, write_now};
use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::OnceLock;

/// The target of the access lines, for `RUST_LOG`: `RUST_LOG=info,entra_proxy::access=off`
/// keeps every line but these.
pub(crate) const TARGET: &str = "entra_proxy::access";

/// The log's format, as set up by [`super::init`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `ansi`: colour the level (for a terminal).
    Text {
        ansi: bool,
    },
    Json,
}

/// Where access lines go, once logging is set up. Without it (the library in tests, or a
/// program that installed its own subscriber) no access line is written.
struct Out {
    format: Format,
    /// `None` when the writer thread could not start: lines go to stderr directly.
    sink: Option<LogSink>,
}

static OUT: OnceLock<Out> = OnceLock::new();

/// Sends access lines in `format` to `sink` (stderr directly when `None`); the first call wins.
pub(super) fn install(format: Format, sink: Option<LogSink>) {
    let _ = OUT.set(Out { format, sink });
}

/// The fields of one access line, rendered in the log's format, in the order they were given.
/// Values are never secrets: callers pass masked queries and caller labels, never keys.
pub(crate) struct Fields {
    format: Format,
    text: String,
}

impl Fields {
    /// Fields for a line, or `None` when no access line would be written (`RUST_LOG` filters
    /// [`TARGET`] out, or logging is not set up): the caller then renders nothing.
    pub(crate) fn start() -> Option<Fields> {
        let out = OUT.get()?;
        if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
            return None;
        }
        Some(Fields::new(out.format))
    }

    fn new(format: Format) -> Fields {
        Fields {
            format,
            text: String::with_capacity(256),
        }
    }

    fn name(&mut self, name: &str) {
        match self.format {
            Format::Text { .. } => {
                self.text.push(' ');
                self.text.push_str(name);
                self.text.push('=');
            }
            Format::Json => {
                self.text.push_str(",\"");
                self.text.push_str(name);
                self.text.push_str("\":");
            }
        }
    }

    /// A text value: as is with control characters escaped in text lines (a `tracing` `%`
    /// field), a JSON string.
    pub(crate) fn text(&mut self, name: &str, value: &str) -> &mut Fields {
        self.name(name);
        // Writing into a `String` cannot fail.
        match self.format {
            Format::Text { .. } => {
                let _ = Escaped(&mut self.text).write_str(value);
            }
            Format::Json => {
                self.text.push('"');
                let _ = JsonEscaped(&mut self.text).write_str(value);
                self.text.push('"');
            }
        }
        self
    }

    /// [`Fields::text`] for a value that writes itself.
    pub(crate) fn display(&mut self, name: &str, value: impl fmt::Display) -> &mut Fields {
        self.name(name);
        match self.format {
            Format::Text { .. } => {
                let _ = write!(Escaped(&mut self.text), "{value}");
            }
            Format::Json => {
                self.text.push('"');
                let _ = write!(JsonEscaped(&mut self.text), "{value}");
                self.text.push('"');
            }
        }
        self
    }

    /// A quoted value: in text lines in double quotes with Rust's escapes (a `tracing` `&str`
    /// field), a JSON string.
    pub(crate) fn quoted(&mut self, name: &str, value: &str) -> &mut Fields {
        match self.format {
            Format::Text { .. } => {
                self.name(name);
                let plain = value
                    .bytes()
                    .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
                if plain {
                    self.text.push('"');
                    self.text.push_str(value);
                    self.text.push('"');
                } else {
                    let _ = write!(self.text, "{value:?}");
                }
                self
            }
            Format::Json => self.text(name, value),
        }
    }

    pub(crate) fn number(&mut self, name: &str, value: u64) -> &mut Fields {
        self.name(name);
        push_decimal(&mut self.text, value);
        self
    }

    /// A number with a fraction (`tracing`'s `f64` field: a JSON number, `null` if not finite).
    pub(crate) fn decimal(&mut self, name: &str, value: f64) -> &mut Fields {
        self.name(name);
        let _ = match self.format {
            Format::Text { .. } => write!(self.text, "{value}"),
            Format::Json => match serde_json::Number::from_f64(value) {
                Some(n) => write!(self.text, "{n}"),
                None => self.text.write_str("null"),
            },
        };
        self
    }

    pub(crate) fn flag(&mut self, name: &str, value: bool) -> &mut Fields {
        self.name(name);
        self.text.push_str(if value { "true" } else { "false" });
        self
    }

    /// Writes the line now: the time, the level (INFO), [`TARGET`], `message`, the fields.
    pub(crate) fn write(&self, message: &str) {
        thread_local! {
            static LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
        }
        let Some(out) = OUT.get() else { return };
        let emit = |line: &mut String| {
            line.clear();
            let _ = self.render(line, message);
            match &out.sink {
                Some(sink) => sink.push(line.as_bytes()),
                // Nowhere else to report a failing stderr.
                None => {
                    let _ = std::io::stderr().write_all(line.as_bytes());
                }
            }
        };
        // The thread's buffer, or a new one if it is somehow in use already.
        LINE.with(|line| match line.try_borrow_mut() {
            Ok(mut line) => emit(&mut line),
            Err(_) => emit(&mut String::new()),
        });
    }

    fn render(&self, line: &mut String, message: &str) -> fmt::Result {
        match self.format {
            Format::Text { ansi } => {
                write_now(line)?;
                line.push(' ');
                write_level(line, tracing::Level::INFO, ansi)?;
                line.push(' ');
                line.push_str(TARGET);
                line.push_str(": ");
                Escaped(&mut *line).write_str(message)?;
                line.push_str(&self.text);
            }
            Format::Json => {
                line.push_str("{\"timestamp\":\"");
                write_now(line)?;
                line.push_str("\",\"level\":\"INFO\",\"message\":\"");
                JsonEscaped(&mut *line).write_str(message)?;
                line.push('"');
                line.push_str(&self.text);
                line.push_str(",\"target\":\"");
                line.push_str(TARGET);
                line.push_str("\"}");
            }
        }
        line.push('\n');
        Ok(())
    }
}

/// Appends `value` in decimal (as `{value}` would, without the formatting machinery).
fn push_decimal(out: &mut String, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        out.push(char::from(d));
    }
}

/// Renders a typical access line (a metered chat answer) in text or JSON and returns its
/// length, without writing it anywhere: what a line costs, for the hot-path benchmark.
pub fn render_typical(json: bool) -> usize {
    let format = if json {
        Format::Json
    } else {
        Format::Text { ansi: false }
    };
    let mut fields = Fields::new(format);
    fields
        .text("request_id", "3f2a9c1e7b40-12")
        .text("path", "/openai/deployments/gpt-4o/chat/completions")
        .display("query", format_args!("api-version={}", "2024-10-21"))
        .display("caller", format_args!("key:{}", "team-a"))
        .text("backend", "primary")
        .quoted("model", "gpt-4o")
        .quoted("deployment", "gpt-4o")
        .number("status", 200)
        .number("took_ms", 3)
        .number("prompt_tokens", 14)
        .number("completion_tokens", 7)
        .number("total_tokens", 21)
        .flag("usage_estimated", false)
        .flag("ended", true);
    let mut line = String::with_capacity(512);
    let _ = fields.render(&mut line, "proxied");
    line.len()
}

/// Writes text as the inside of a JSON string: `"`, `\` and control characters escaped.
struct JsonEscaped<'a>(&'a mut String);

impl fmt::Write for JsonEscaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain_from = 0;
        for (i, b) in s.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0..0x20 => "",
                _ => continue,
            };
            self.0.push_str(&s[plain_from..i]);
            if escape.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.push_str(escape);
            }
            plain_from = i + 1;
        }
        self.0.push_str(&s[plain_from..]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::logging::sink::tests::Captured;

    /// A line's fields in every kind, with values that need escaping in one format or both.
    fn fields(format: Format, path: &str, model: &str) -> Fields {
        let mut f = Fields::new(format);
        f.text("request_id", "abc-1")
            .text("path", path)
            .display(
                "query",
                format_args!("api-version={}&api-key=***", "2024-10-21"),
            )
            .quoted("model", model)
            .number("status", 200)
            .number("took_ms", 3)
            .flag("usage_estimated", false)
            .text("ended", "complete")
            .decimal("whole", 1.0)
            .decimal("open_secs", 0.25)
            .display("end", format_args!("{:?}", Some("Closed")));
        f
    }

    /// The same line as a `tracing` event, rendered by `subscriber`.
    fn as_event(path: &str, model: &str) {
        tracing::info!(
            target: TARGET,
            request_id = %"abc-1",
            path = %path,
            query = %format_args!("api-version={}&api-key=***", "2024-10-21"),
            model = model,
            status = 200u16,
            took_ms = 3u64,
            usage_estimated = false,
            ended = %"complete",
            whole = 1.0f64,
            open_secs = 0.25f64,
            end = ?Some("Closed"),
            "proxied"
        );
    }

    const VALUES: [(&str, &str); 4] = [
        ("/openai/deployments/gpt-4o/chat/completions", "gpt-4o"),
        (
            "/x\n2026-01-01T00:00:00.000000Z  INFO forged\r\t\u{1b}[31m\u{9b}\u{7f}",
            "q\"uo\\te \u{1}\u{7f}\u{9b}é\u{200b}",
        ),
        ("/ünïcode/😀/£\u{a0}", "'single' £"),
        ("", ""),
    ];

    fn ours(format: Format, path: &str, model: &str) -> String {
        let mut line = String::new();
        fields(format, path, model)
            .render(&mut line, "proxied")
            .unwrap();
        line
    }

    fn theirs(json: bool, path: &str, model: &str) -> String {
        let out = Captured::default();
        let builder = out.subscriber();
        if json {
            let subscriber = builder.json().flatten_event(true).finish();
            tracing::subscriber::with_default(subscriber, || as_event(path, model));
        } else {
            let subscriber = builder
                .event_format(super::super::text::TextFormat::new(false))
                .finish();
            tracing::subscriber::with_default(subscriber, || as_event(path, model));
        }
        out.text()
    }

    fn rfc3339(stamp: &str) {
        assert_eq!(stamp.len(), "2026-01-02T03:04:05.123456Z".len(), "{stamp}");
        time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{stamp}: {e}"));
    }

    #[test]
    fn a_text_line_is_the_text_format_of_the_same_event() {
        for (path, model) in VALUES {
            let ours = ours(Format::Text { ansi: false }, path, model);
            let theirs = theirs(false, path, model);
            let (our_time, our_rest) = ours.split_once(' ').unwrap();
            let (their_time, their_rest) = theirs.split_once(' ').unwrap();
            rfc3339(our_time);
            rfc3339(their_time);
            assert_eq!(our_rest, their_rest);
            assert_eq!(ours.lines().count(), 1, "{ours}");
        }
        let plain = ours(Format::Text { ansi: false }, VALUES[0].0, VALUES[0].1);
        assert!(plain.ends_with(" INFO entra_proxy::access: proxied request_id=abc-1 path=/openai/deployments/gpt-4o/chat/completions query=api-version=2024-10-21&api-key=*** model=\"gpt-4o\" status=200 took_ms=3 usage_estimated=false ended=complete whole=1 open_secs=0.25 end=Some(\"Closed\")\n"), "{plain}");
    }

    #[test]
    fn a_json_line_is_the_json_of_the_same_event() {
        for (path, model) in VALUES {
            let ours = ours(Format::Json, path, model);
            let theirs = theirs(true, path, model);
            assert_eq!(ours.lines().count(), 1, "{ours}");
            let mut ours: serde_json::Value = serde_json::from_str(&ours).unwrap();
            let mut theirs: serde_json::Value = serde_json::from_str(&theirs).unwrap();
            rfc3339(ours["timestamp"].as_str().unwrap());
            rfc3339(theirs["timestamp"].as_str().unwrap());
            ours.as_object_mut().unwrap().remove("timestamp");
            theirs.as_object_mut().unwrap().remove("timestamp");
            assert_eq!(ours, theirs);
            assert_eq!(ours["path"], path);
            assert_eq!(ours["model"], model);
            assert_eq!(ours["status"], 200);
        }
    }

    #[test]
    fn a_terminal_gets_a_coloured_level() {
        let line = ours(Format::Text { ansi: true }, "/p", "m");
        assert!(
            line.contains(" \u{1b}[32m INFO\u{1b}[0m entra_proxy::access: proxied "),
            "{line}"
        );
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        for n in [0, 7, 10, 99, 100, 12_345, u64::from(u32::MAX), u64::MAX] {
            let mut out = String::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string());
        }
    }

    #[test]
    fn every_control_character_is_escaped_in_json() {
        let all: String = (0u8..0x20)
            .map(char::from)
            .chain(['"', '\\', 'x'])
            .collect();
        let mut text = String::new();
        JsonEscaped(&mut text).write_str(&all).unwrap();
        assert!(!text.bytes().any(|b| b < 0x20), "{text}");
        let back: String = serde_json::from_str(&format!("\"{text}\"")).unwrap();
        assert_eq!(back, all);
    }
}
