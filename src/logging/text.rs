//! The text log format: the shape of `tracing_subscriber`'s default
//! (`2026-01-02T03:04:05.123456Z  INFO target: message key=value …`), written in fewer steps
//! (the date and time are formatted once a second per thread, values are written straight into
//! the line) and with every control character in a message or `%` value escaped, so nothing a
//! client or Azure sends (a path, an error text) can start a forged log line or drive a
//! terminal.
//!
//! The access lines (see [`super::access`]) are written in the same shape by the proxy's own
//! formatter, with the pieces here.

use std::fmt::{self, Write as _};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The `FormatEvent` for text logs (`ENTRA_PROXY_LOG_FORMAT` unset).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TextFormat {
    ansi: bool,
    time: bool,
}

impl TextFormat {
    /// `ansi`: colour the level (for a terminal).
    pub(crate) fn new(ansi: bool) -> TextFormat {
        TextFormat { ansi, time: true }
    }
}

impl<S, N> FormatEvent<S, N> for TextFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        if self.time {
            write_now(&mut w)?;
            w.write_char(' ')?;
        }
        write_level(&mut w, *meta.level(), self.ansi)?;
        w.write_char(' ')?;
        if let Some(scope) = ctx.event_scope() {
            let mut any = false;
            for span in scope.from_root() {
                w.write_str(span.name())?;
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    write!(w, "{{{fields}}}")?;
                }
                w.write_char(':')?;
                any = true;
            }
            if any {
                w.write_char(' ')?;
            }
        }
        w.write_str(meta.target())?;
        w.write_str(": ")?;
        let mut fields = Fields {
            w: &mut w,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        w.write_char('\n')
    }
}

pub(super) fn write_level(w: &mut impl fmt::Write, level: Level, ansi: bool) -> fmt::Result {
    let (text, colour) = match level {
        Level::TRACE => ("TRACE", "35"),
        Level::DEBUG => ("DEBUG", "34"),
        Level::INFO => (" INFO", "32"),
        Level::WARN => (" WARN", "33"),
        Level::ERROR => ("ERROR", "31"),
    };
    if ansi {
        write!(w, "\x1b[{colour}m{text}\x1b[0m")
    } else {
        w.write_str(text)
    }
}

/// RFC 3339 UTC with microseconds; the part up to the seconds is cached per thread.
pub(super) fn write_now(w: &mut impl fmt::Write) -> fmt::Result {
    use std::cell::RefCell;
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            cached.1 = date_time(secs);
            cached.0 = secs;
        }
        w.write_str(&cached.1)?;
        let fraction = fraction(now.subsec_micros());
        w.write_str(std::str::from_utf8(&fraction).map_err(|_| fmt::Error)?)
    })
}

/// `.123456Z` for 123456 microseconds (`.{:06}Z`, without the formatting machinery).
fn fraction(mut micros: u32) -> [u8; 8] {
    let mut out = *b".000000Z";
    for digit in out[1..7].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SS` for seconds since the Unix epoch.
fn date_time(secs: u64) -> String {
    let t = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Writes an event's fields: the message as is, others as `name=value`, space separated.
struct Fields<'a, 'w> {
    w: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    /// Starts a field (the separating space and `name=`); false for the message.
    fn start(&mut self, field: &Field) -> fmt::Result {
        if !self.first {
            self.w.write_char(' ')?;
        }
        self.first = false;
        match field.name() {
            "message" => Ok(()),
            name => {
                self.w.write_str(name.strip_prefix("r#").unwrap_or(name))?;
                self.w.write_char('=')
            }
        }
    }

    fn field(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() && !field.name().starts_with("log.") {
            self.result = self.start(field).and_then(|()| value(self.w));
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%` values and the message arrive here; their text is written escaped.
        self.field(field, |w| write!(Escaped(w), "{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.field(field, |w| Escaped(w).write_str(value));
        } else {
            // Quoted, with Rust's escapes, like the default format.
            self.field(field, |w| write!(w, "{value:?}"));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |w| write!(w, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |w| write!(w, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |w| write!(w, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.field(field, |w| write!(w, "{value}"));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let name = field.name();
        self.field(field, |w| {
            write!(Escaped(&mut *w), "{value}")?;
            let mut source = value.source();
            if source.is_some() {
                write!(w, " {name}.sources=[")?;
                let mut first = true;
                while let Some(s) = source {
                    if !first {
                        w.write_str(", ")?;
                    }
                    first = false;
                    write!(Escaped(&mut *w), "{s}")?;
                    source = s.source();
                }
                w.write_char(']')?;
            }
            Ok(())
        });
    }
}

/// Passes text through, writing control characters as escapes (`\n`, `\r`, `\t`, `\u{1b}`).
pub(super) struct Escaped<W: fmt::Write>(pub(super) W);

impl<W: fmt::Write> fmt::Write for Escaped<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Control characters are C0 and DEL (one byte each) and C1 (U+0080 to U+009F: 0xC2
        // then 0x80 to 0x9F in UTF-8); text without those bytes is written as is.
        if !s.bytes().any(|b| b < b' ' || b == 0x7f || b == 0xc2) {
            return self.0.write_str(s);
        }
        let mut plain_from = 0;
        for (i, c) in s.char_indices() {
            if !c.is_control() {
                continue;
            }
            self.0.write_str(&s[plain_from..i])?;
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c => write!(self.0, "\\u{{{:x}}}", u32::from(c))?,
            }
            plain_from = i + c.len_utf8();
        }
        self.0.write_str(&s[plain_from..])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::logging::sink::tests::Captured;

    /// What `format` writes for the events `emit` sends.
    fn render(format: Option<TextFormat>, emit: impl FnOnce()) -> String {
        let out = Captured::default();
        let builder = out.subscriber();
        match format {
            Some(format) => {
                tracing::subscriber::with_default(builder.event_format(format).finish(), emit)
            }
            // The default format, without time, to compare shapes.
            None => tracing::subscriber::with_default(builder.without_time().finish(), emit),
        }
        out.text()
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer failure")]
    struct Outer(#[source] std::io::Error);

    /// The events the proxy writes, in every field kind.
    fn emit() {
        let source = Outer(std::io::Error::other("inner cause"));
        tracing::info!(
            request_id = %"abc-1",
            path = %"/openai/deployments/gpt-4o/chat/completions",
            model = "gpt-4o",
            status = 200u16,
            took_ms = 3u64,
            delta = -2i64,
            retried = false,
            ratio = 0.5f64,
            "proxied"
        );
        tracing::warn!(
            error = &source as &(dyn std::error::Error + 'static),
            "token refresh failed"
        );
        tracing::error!(r#type = "x", "{} went wrong", "something");
        let _span = tracing::info_span!("request", id = 7).entered();
        tracing::info!(inside = true, "in a span");
    }

    fn ours(time: bool) -> String {
        render(Some(TextFormat { ansi: false, time }), emit)
    }

    #[test]
    fn lines_look_like_the_default_format() {
        let default = render(None, emit);
        assert_eq!(ours(false), default);
        assert!(default.contains(" INFO entra_proxy::logging::text::tests: proxied request_id=abc-1 path=/openai/deployments/gpt-4o/chat/completions model=\"gpt-4o\" status=200"), "{default}");
    }

    #[test]
    fn lines_start_with_an_rfc3339_utc_time_in_microseconds() {
        let text = ours(true);
        for line in text.lines() {
            let (stamp, rest) = line.split_once(' ').unwrap();
            assert_eq!(stamp.len(), "2026-01-02T03:04:05.123456Z".len(), "{line}");
            time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|e| panic!("{stamp}: {e}"));
            assert!(
                rest.starts_with(" INFO ")
                    || rest.starts_with(" WARN ")
                    || rest.starts_with("ERROR "),
                "{line}"
            );
        }
        assert_eq!(date_time(0), "1970-01-01T00:00:00");
        for micros in [0, 5, 120_000, 123_456, 999_999] {
            assert_eq!(fraction(micros), *format!(".{micros:06}Z").as_bytes());
        }
        assert_eq!(date_time(1_767_323_045), "2026-01-02T03:04:05");
    }

    #[test]
    fn control_characters_cannot_forge_lines_or_reach_the_terminal() {
        let text = render(Some(TextFormat::new(false)), || {
            let evil = "x\n2026-01-01T00:00:00.000000Z  INFO forged\r\t\u{1b}[31mred\u{9b}£\u{a0}";
            tracing::info!(path = %evil, quoted = evil, "msg {evil}");
            tracing::warn!(
                error = &std::io::Error::other(evil) as &(dyn std::error::Error + 'static),
                "e"
            );
        });
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(!text.contains('\u{1b}') && !text.contains('\r') && !text.contains('\t'));
        assert!(!text.contains('\u{9b}'));
        assert!(
            text.contains(r"x\n2026-01-01T00:00:00.000000Z  INFO forged\r\t\u{1b}[31mred\u{9b}"),
            "{text}"
        );
        // Printable characters that share the first byte of C1's UTF-8 pass unchanged.
        assert!(text.contains("red\\u{9b}£\u{a0}"), "{text}");
    }

    #[test]
    fn a_terminal_gets_a_coloured_level() {
        let text = render(Some(TextFormat::new(true)), || tracing::warn!("careful"));
        assert!(text.contains("\u{1b}[33m WARN\u{1b}[0m "), "{text}");
    }
}
