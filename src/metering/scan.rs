//! The usage of a whole JSON answer, read without building the document. A byte-level walk
//! checks the document and finds the top-level `usage` member; only that member's value goes
//! through serde, which reads its counts and skips the rest of it. Nothing is allocated for an
//! answer whose usage keys have no escapes.
//!
//! The answer is the same as reading the document into a `serde_json::Value` and taking its
//! `usage` ([`Counts::of_value`]): the last of a repeated member wins, a count is read only when
//! it is a non-negative integer, `null` is absent. The walk accepts only what serde_json
//! accepts; whatever it does not take on (a document that is not an object, an escaped
//! top-level key, a surrogate escape other than a valid pair, an exponent, a long integer, deep
//! nesting, invalid JSON) returns `None`, and the caller reads the document the general way.

use super::usage::{Fallback, Usage};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::fmt;

/// The visitor methods of the scalars (and `null`), each giving the value `$scalar`
/// (`$null` for `null`): how each reader below sees a value that is not what it looks for.
macro_rules! scalars {
    ($value:ty, null => $null:expr, other => $scalar:expr) => {
        fn visit_unit<E: de::Error>(self) -> Result<$value, E> {
            Ok($null)
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<$value, E> {
            Ok($scalar)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<$value, E> {
            Ok($scalar)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<$value, E> {
            Ok($scalar)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<$value, E> {
            Ok($scalar)
        }
    };
}

/// A `DeserializeSeed` that reads any value with the type's own visitor.
macro_rules! seeded_by_any {
    ($seed:ty => $value:ty) => {
        impl<'de> DeserializeSeed<'de> for $seed {
            type Value = $value;
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<$value, D::Error> {
                d.deserialize_any(self)
            }
        }
    };
}

/// The usage of `body`, or `None` when it must be read the general way.
pub(super) fn json_usage(body: &[u8]) -> Option<Result<Usage, Fallback>> {
    // Checked first, as `Value` would: the walk below looks at bytes, not characters.
    let text = std::str::from_utf8(body).ok()?;
    let usage = match Walk::new(body).usage_member()? {
        None => Slot::Absent,
        Some(value) => {
            let mut de = serde_json::Deserializer::from_str(text.get(value)?);
            let usage = de.deserialize_any(UsageSlot).ok()?;
            de.end().ok()?;
            usage
        }
    };
    Some(match usage {
        Slot::Absent => Err(Fallback::NoUsage),
        Slot::NotObject => Err(Fallback::MalformedUsage),
        Slot::Object(counts) => counts.usage(),
    })
}

/// Nesting the walk takes on; serde_json refuses beyond 128, and deeper documents are rare
/// enough to be read the general way.
const MAX_DEPTH: usize = 64;

/// Digits an integer part may have: up to 18 it fits a `u64`, so serde_json can never find it
/// out of range whatever follows it.
const MAX_INTEGER_DIGITS: usize = 18;

/// A byte-level walk through a JSON document that accepts a subset of what serde_json accepts.
/// Every method returns `None` on anything outside that subset, valid JSON or not.
struct Walk<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Walk<'a> {
    fn new(bytes: &'a [u8]) -> Walk<'a> {
        Walk { bytes, at: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        (self.next()? == b).then_some(())
    }

    fn blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\t' | b'\r')) {
            self.at += 1;
        }
    }

    /// The whole document, an object: where the value of its last `usage` member is, if any.
    fn usage_member(mut self) -> Option<Option<std::ops::Range<usize>>> {
        let mut usage = None;
        self.blanks();
        self.expect(b'{')?;
        self.blanks();
        if self.peek() == Some(b'}') {
            self.at += 1;
        } else {
            loop {
                self.expect(b'"')?;
                let key = self.at;
                if self.string()? {
                    return None; // an escaped key: `"us\u0061ge"` is `usage`
                }
                let key = &self.bytes[key..self.at - 1];
                self.blanks();
                self.expect(b':')?;
                self.blanks();
                let start = self.at;
                self.value(1)?;
                if key == b"usage" {
                    usage = Some(start..self.at);
                }
                self.blanks();
                match self.next()? {
                    b',' => self.blanks(),
                    b'}' => break,
                    _ => return None,
                }
            }
        }
        self.blanks();
        (self.at == self.bytes.len()).then_some(usage)
    }

    /// One value inside `depth` containers.
    fn value(&mut self, depth: usize) -> Option<()> {
        match self.next()? {
            b'"' => self.string().map(drop),
            b'{' => self.container(depth + 1, b'}', true),
            b'[' => self.container(depth + 1, b']', false),
            b't' => self.word(b"rue"),
            b'f' => self.word(b"alse"),
            b'n' => self.word(b"ull"),
            b'-' => self.number(),
            b'0'..=b'9' => {
                self.at -= 1;
                self.number()
            }
            _ => None,
        }
    }

    /// The members of an object or the elements of an array, after its opening bracket.
    fn container(&mut self, depth: usize, close: u8, object: bool) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.blanks();
        if self.peek() == Some(close) {
            self.at += 1;
            return Some(());
        }
        loop {
            if object {
                self.expect(b'"')?;
                self.string()?;
                self.blanks();
                self.expect(b':')?;
                self.blanks();
            }
            self.value(depth)?;
            self.blanks();
            match self.next()? {
                b',' => self.blanks(),
                b if b == close => return Some(()),
                _ => return None,
            }
        }
    }

    fn word(&mut self, rest: &[u8]) -> Option<()> {
        let end = self.at + rest.len();
        (self.bytes.get(self.at..end)? == rest).then(|| self.at = end)
    }

    /// A number after its sign: an integer part of at most [`MAX_INTEGER_DIGITS`] without a
    /// leading zero, then an optional fraction; no exponent.
    fn number(&mut self) -> Option<()> {
        let start = self.at;
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => {
                while matches!(self.peek(), Some(b'0'..=b'9')) {
                    self.at += 1;
                }
            }
            _ => return None,
        }
        if self.at - start > MAX_INTEGER_DIGITS {
            return None;
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            let fraction = self.at;
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.at += 1;
            }
            if self.at == fraction {
                return None;
            }
        }
        match self.peek() {
            Some(b'e' | b'E' | b'0'..=b'9') => None,
            _ => Some(()),
        }
    }

    /// A string after its opening quote, up to and including its closing one: whether it had
    /// an escape.
    fn string(&mut self) -> Option<bool> {
        let mut escaped = false;
        loop {
            self.at += plain_run(&self.bytes[self.at..]);
            match self.next()? {
                b'"' => return Some(escaped),
                b'\\' => {
                    escaped = true;
                    match self.next()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => match self.hex4()? {
                            0xD800..=0xDBFF => {
                                self.word(b"\\u")?;
                                if !(0xDC00..=0xDFFF).contains(&self.hex4()?) {
                                    return None;
                                }
                            }
                            0xDC00..=0xDFFF => return None,
                            _ => {}
                        },
                        _ => return None,
                    }
                }
                0..0x20 => return None,
                _ => {}
            }
        }
    }

    fn hex4(&mut self) -> Option<u16> {
        let digits = self.bytes.get(self.at..self.at + 4)?;
        self.at += 4;
        digits.iter().try_fold(0u16, |n, &d| {
            let v = (d as char).to_digit(16)?;
            Some(n << 4 | v as u16)
        })
    }
}

/// One count as the document has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Count {
    /// Missing or `null`.
    #[default]
    Absent,
    Number(u64),
    /// Anything else: a string, a negative or fractional number, an array, …
    Other,
}

/// The top-level `usage` member.
#[derive(Debug, Default)]
enum Slot {
    /// Missing or `null`.
    #[default]
    Absent,
    NotObject,
    Object(Counts),
}

/// The counts `usage` names, each under every name it goes by.
#[derive(Debug, Default)]
pub(super) struct Counts {
    prompt_tokens: Count,
    input_tokens: Count,
    completion_tokens: Count,
    output_tokens: Count,
    total_tokens: Count,
    /// `cached_tokens` of `prompt_tokens_details`, `input_tokens_details`, `input_token_details`.
    cached: [Count; 3],
    /// `reasoning_tokens` of `completion_tokens_details`, `output_tokens_details`.
    reasoning: [Count; 2],
}

impl Counts {
    /// The counts of a `usage` already read as a `Value` (realtime events, the general path).
    pub(super) fn of_value(usage: &Value) -> Result<Counts, Fallback> {
        let Value::Object(map) = usage else {
            return Err(Fallback::MalformedUsage);
        };
        let count = |v: Option<&Value>| match v {
            None | Some(Value::Null) => Count::Absent,
            Some(v) => v.as_u64().map_or(Count::Other, Count::Number),
        };
        let detail = |outer: &str, inner: &str| count(map.get(outer).and_then(|d| d.get(inner)));
        Ok(Counts {
            prompt_tokens: count(map.get("prompt_tokens")),
            input_tokens: count(map.get("input_tokens")),
            completion_tokens: count(map.get("completion_tokens")),
            output_tokens: count(map.get("output_tokens")),
            total_tokens: count(map.get("total_tokens")),
            cached: [
                detail("prompt_tokens_details", "cached_tokens"),
                detail("input_tokens_details", "cached_tokens"),
                detail("input_token_details", "cached_tokens"),
            ],
            reasoning: [
                detail("completion_tokens_details", "reasoning_tokens"),
                detail("output_tokens_details", "reasoning_tokens"),
            ],
        })
    }

    /// The usage these counts make: under each name, the first count that is there; a count
    /// that is not a non-negative integer is malformed; prompt or total must be there.
    pub(super) fn usage(&self) -> Result<Usage, Fallback> {
        let prompt = first(&[self.prompt_tokens, self.input_tokens])?;
        let completion = first(&[self.completion_tokens, self.output_tokens])?;
        let total = first(&[self.total_tokens])?;
        if prompt.is_none() && total.is_none() {
            return Err(Fallback::MalformedUsage);
        }
        let (prompt, completion) = (prompt.unwrap_or(0), completion.unwrap_or(0));
        Ok(Usage {
            prompt,
            completion,
            total: total.unwrap_or(prompt.saturating_add(completion)),
            cached: first(&self.cached)?,
            reasoning: first(&self.reasoning)?,
        })
    }
}

/// The first count that is there: its number, or malformed when it is not one.
fn first(counts: &[Count]) -> Result<Option<u64>, Fallback> {
    for count in counts {
        match count {
            Count::Absent => {}
            Count::Number(n) => return Ok(Some(*n)),
            Count::Other => return Err(Fallback::MalformedUsage),
        }
    }
    Ok(None)
}

/// Matches a key against `names` without allocating, escaped or not.
struct KeyIn(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for KeyIn {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyIn {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|n| *n == key))
    }
}

/// The value of `usage`.
struct UsageSlot;

seeded_by_any!(UsageSlot => Slot);

impl<'de> Visitor<'de> for UsageSlot {
    type Value = Slot;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a usage object")
    }
    scalars!(Slot, null => Slot::Absent, other => Slot::NotObject);
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Slot, E> {
        Ok(Slot::NotObject)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Slot, A::Error> {
        drain_seq(seq).map(|()| Slot::NotObject)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Slot, A::Error> {
        const NAMES: &[&str] = &[
            "prompt_tokens",
            "input_tokens",
            "completion_tokens",
            "output_tokens",
            "total_tokens",
            "prompt_tokens_details",
            "input_tokens_details",
            "input_token_details",
            "completion_tokens_details",
            "output_tokens_details",
        ];
        let mut c = Counts::default();
        while let Some(key) = map.next_key_seed(KeyIn(NAMES))? {
            match key {
                Some(0) => c.prompt_tokens = map.next_value_seed(CountOf)?,
                Some(1) => c.input_tokens = map.next_value_seed(CountOf)?,
                Some(2) => c.completion_tokens = map.next_value_seed(CountOf)?,
                Some(3) => c.output_tokens = map.next_value_seed(CountOf)?,
                Some(4) => c.total_tokens = map.next_value_seed(CountOf)?,
                Some(i @ 5..=7) => {
                    c.cached[i - 5] = map.next_value_seed(Detail("cached_tokens"))?
                }
                Some(i @ 8..=9) => {
                    c.reasoning[i - 8] = map.next_value_seed(Detail("reasoning_tokens"))?;
                }
                _ => {
                    map.next_value_seed(Skip)?;
                }
            }
        }
        Ok(Slot::Object(c))
    }
}

/// One count.
struct CountOf;

seeded_by_any!(CountOf => Count);

impl<'de> Visitor<'de> for CountOf {
    type Value = Count;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a count")
    }
    scalars!(Count, null => Count::Absent, other => Count::Other);
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Count, E> {
        Ok(Count::Number(n))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Count, A::Error> {
        drain_seq(seq).map(|()| Count::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Count, A::Error> {
        drain_map(map).map(|()| Count::Other)
    }
}

/// A `*_details` object: its one count named `.0`; anything but an object has none.
struct Detail(&'static str);

seeded_by_any!(Detail => Count);

impl<'de> Visitor<'de> for Detail {
    type Value = Count;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a details object")
    }
    scalars!(Count, null => Count::Absent, other => Count::Absent);
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Count, E> {
        Ok(Count::Absent)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Count, A::Error> {
        drain_seq(seq).map(|()| Count::Absent)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Count, A::Error> {
        let names: &'static [&'static str] = match self.0 {
            "cached_tokens" => &["cached_tokens"],
            _ => &["reasoning_tokens"],
        };
        let mut count = Count::Absent;
        while let Some(key) = map.next_key_seed(KeyIn(names))? {
            match key {
                Some(_) => count = map.next_value_seed(CountOf)?,
                None => {
                    map.next_value_seed(Skip)?;
                }
            }
        }
        Ok(count)
    }
}

fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element_seed(Skip)?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry_seed(Skip, Skip)?.is_some() {}
    Ok(())
}

/// A value skipped as the general reader reads it: through `deserialize_any`, so strings,
/// escapes, numbers and the nesting limit are checked exactly as for a `Value` (serde's
/// `IgnoredAny` skips without those checks), and nothing is kept.
struct Skip;

seeded_by_any!(Skip => ());

impl<'de> Visitor<'de> for Skip {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }
    scalars!((), null => (), other => ());
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        drain_seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        drain_map(map)
    }
}

/// How many bytes at the start of `rest` a string holds as they are: up to the first quote,
/// backslash or control byte. Eight bytes at a time, the way serde_json skips a string.
fn plain_run(rest: &[u8]) -> usize {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    let mut run = 0;
    for chunk in rest.chunks_exact(8) {
        let chars = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        let control = chars.wrapping_sub(ONES * 0x20) & !chars;
        let quote = chars ^ (ONES * u64::from(b'"'));
        let quote = quote.wrapping_sub(ONES) & !quote;
        let backslash = chars ^ (ONES * u64::from(b'\\'));
        let backslash = backslash.wrapping_sub(ONES) & !backslash;
        // Only bytes above the first special one can be flagged wrongly (by a borrow).
        let special = (control | quote | backslash) & HIGH;
        if special != 0 {
            return run + special.trailing_zeros() as usize / 8;
        }
        run += 8;
    }
    run + rest[run..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .unwrap_or(rest.len() - run)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The general reader: the document as a `Value`, then its `usage`.
    fn general(body: &[u8]) -> Result<Usage, Fallback> {
        let value: Value = serde_json::from_slice(body).map_err(|_| Fallback::NotJson)?;
        match value.get("usage") {
            None | Some(Value::Null) => Err(Fallback::NoUsage),
            Some(u) => Counts::of_value(u)?.usage(),
        }
    }

    #[test]
    fn a_plain_run_ends_at_the_first_quote_backslash_or_control_byte() {
        let naive = |rest: &[u8]| {
            rest.iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .unwrap_or(rest.len())
        };
        let fillers: [&[u8]; 3] = [b"a", "\u{e9}".as_bytes(), b"\x7f"];
        for filler in fillers {
            for len in 0..40 {
                let plain: Vec<u8> = filler.iter().copied().cycle().take(len).collect();
                assert_eq!(plain_run(&plain), len);
                for special in [b'"', b'\\', 0, b'\n', 0x1f] {
                    for at in 0..len {
                        let mut text = plain.clone();
                        text[at] = special;
                        // A second special byte after the first must not move the answer.
                        text.push(b'"');
                        assert_eq!(plain_run(&text), naive(&text), "{text:?}");
                        assert_eq!(plain_run(&text), at, "{text:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn reads_what_the_general_reader_reads() {
        let cases: &[&str] = &[
            r#"{"id":"x","choices":[{"message":{"content":"usage"}}],"usage":{"prompt_tokens":14,"completion_tokens":7,"total_tokens":21}}"#,
            r#"{"usage":{"prompt_tokens":10,"completion_tokens":3,"total_tokens":13,"completion_tokens_details":{"reasoning_tokens":1}}}"#,
            r#"{"usage":{"input_tokens":7,"output_tokens":2,"total_tokens":9,"input_tokens_details":{"cached_tokens":3}}}"#,
            r#"{"usage":{"prompt_tokens":4,"total_tokens":4}}"#,
            r#"{"usage":{"prompt_tokens":"ten"}}"#,
            r#"{"usage":{"prompt_tokens":1,"input_tokens":"x"}}"#,
            r#"{"usage":{"prompt_tokens":null,"input_tokens":2}}"#,
            r#"{"usage":{"total_tokens":-1}}"#,
            r#"{"usage":{"total_tokens":1.0}}"#,
            r#"{"usage":{"total_tokens":18446744073709551616}}"#,
            r#"{"usage":{"completion_tokens":3}}"#,
            r#"{"usage":{"prompt_tokens":1,"prompt_tokens_details":[1]}}"#,
            r#"{"usage":{"prompt_tokens":1,"prompt_tokens_details":{"cached_tokens":"x"}}}"#,
            r#"{"usage":{"prompt_tokens":1,"prompt_tokens_details":null,"input_tokens_details":{"cached_tokens":5}}}"#,
            r#"{"usage":{"prompt_tokens":1,"prompt_tokens_details":{"cached_tokens":2},"prompt_tokens_details":{}}}"#,
            r#"{"usage":{"prompt_tokens":1},"usage":null}"#,
            r#"{"usage":null,"usage":{"prompt_tokens":2}}"#,
            r#"{"usage":[1]}"#,
            r#"{"usage":"x"}"#,
            r#"{"usage":{}}"#,
            r#"{"id":1}"#,
            r#"{"us\u0061ge":{"prompt_tokens":3}}"#,
            r#"{"usage":{"prompt_\u0074okens":3}}"#,
            r#"[{"usage":{"prompt_tokens":3}}]"#,
            r#"{"usage":{"prompt_tokens":3}} x"#,
            r#"{"usage":{"prompt_tokens":"#,
            r#"{"a":"\ud800","usage":{"prompt_tokens":3}}"#,
            r#"{"a":"\ud83d\ude00","usage":{"prompt_tokens":3}}"#,
            r#"{"a":1e999,"usage":{"prompt_tokens":3}}"#,
            r#"{"a":01,"usage":{"prompt_tokens":3}}"#,
            "<html>",
            "",
            // The walk's edges: each is read here or handed back, never answered otherwise.
            r#"{"a":1e5,"usage":{"prompt_tokens":3}}"#,
            r#"{"a":1E+5,"usage":{"prompt_tokens":3}}"#,
            r#"{"a":12345678901234567890,"usage":{"prompt_tokens":3}}"#,
            r#"{"a":-0.000123456789012345678901,"usage":{"prompt_tokens":3}}"#,
            r#"{"a":-,"usage":{"prompt_tokens":3}}"#,
            r#"{"a":-01,"usage":{"prompt_tokens":3}}"#,
            r#"{"a":1.,"usage":{"prompt_tokens":3}}"#,
            r#"{"a":.5,"usage":{"prompt_tokens":3}}"#,
            r#"{"a":"\ude00","usage":{"prompt_tokens":3}}"#,
            r#"{"a":"\ud83d\u0041","usage":{"prompt_tokens":3}}"#,
            r#"{"a":"\ud83d","usage":{"prompt_tokens":3}}"#,
            r#"{"a":"\u00e9\n\t\"\\\/\b\f\r","usage":{"prompt_tokens":3}}"#,
            r#"{"a":"\x","usage":{"prompt_tokens":3}}"#,
            r#"{"a":"\u12g4","usage":{"prompt_tokens":3}}"#,
            "{\"a\":\"\t\",\"usage\":{\"prompt_tokens\":3}}",
            r#"{"a":[1,],"usage":{"prompt_tokens":3}}"#,
            r#"{"a":{"b":1,},"usage":{"prompt_tokens":3}}"#,
            r#"{"a":[1 2],"usage":{"prompt_tokens":3}}"#,
            r#"{"a":{"b"},"usage":{"prompt_tokens":3}}"#,
            r#"{"a":tru,"usage":{"prompt_tokens":3}}"#,
            r#"{"a":nul}"#,
            r#"{"usage":{"prompt_tokens":3},}"#,
            r#"{"usage" : { "prompt_tokens" : 3 } , "b" : [ true , false , null , { } , [ ] ] }"#,
            "\u{feff}{\"usage\":{\"prompt_tokens\":3}}",
            " \r\n\t{\"usage\":{\"prompt_tokens\":3}}\n",
            "{\"usage\":{\"prompt_tokens\":3}}\u{c}",
            r#"{"usage":{"prompt_tokens":3}"#,
            r#"{"usage""#,
            r#"{"usage":"#,
            r#"{"#,
        ];
        for case in cases {
            let fast = json_usage(case.as_bytes());
            assert!(
                fast.is_none() || fast == Some(general(case.as_bytes())),
                "{case}: {fast:?} vs {:?}",
                general(case.as_bytes())
            );
        }
        // The common shapes are read here, not handed back: escapes, fractions, blanks.
        for common in [
            cases[0],
            cases[1],
            r#"{"a":-0.000123456789012345678901,"usage":{"prompt_tokens":3}}"#,
            r#"{"a":"\ud83d\ude00","usage":{"prompt_tokens":3}}"#,
            r#"{"a":"\u00e9\n\t\"\\\/\b\f\r","usage":{"prompt_tokens":3}}"#,
            r#"{"usage" : { "prompt_tokens" : 3 } , "b" : [ true , false , null , { } , [ ] ] }"#,
            " \r\n\t{\"usage\":{\"prompt_tokens\":3}}\n",
            "{\"a\":\"caf\u{e9} \u{1f600}\",\"usage\":{\"prompt_tokens\":3}}",
        ] {
            assert!(json_usage(common.as_bytes()).is_some(), "{common}");
        }
        // Invalid UTF-8 inside a skipped string is not JSON.
        assert_eq!(json_usage(b"{\"a\":\"\xff\",\"usage\":null}"), None);
        // Nor is nesting deeper than the general reader takes, in a skipped value.
        let deep = format!(
            r#"{{"a":{}1{},"usage":{{"prompt_tokens":3}}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert_eq!(general(deep.as_bytes()), Err(Fallback::NotJson));
        assert_eq!(json_usage(deep.as_bytes()), None);
        // Nesting up to the walk's limit is read here.
        let nested = format!(
            r#"{{"a":{}1{},"usage":{{"prompt_tokens":3}}}}"#,
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert!(json_usage(nested.as_bytes()).is_some());
    }
}
