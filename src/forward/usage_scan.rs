//! The usage of a whole JSON answer, read in one pass without building the document: only the
//! top-level `usage` member and its counts are looked at, everything else is skipped as the
//! parser meets it. Nothing is allocated for an answer whose keys have no escapes.
//!
//! The answer is the same as reading the document into a `serde_json::Value` and taking its
//! `usage` ([`Counts::of_value`]): the last of a repeated member wins, a count is read only when
//! it is a non-negative integer, `null` is absent. Whatever this reader does not take on (a
//! document that is not an object, a key it cannot borrow, invalid JSON) returns `None`, and
//! the caller reads the document the general way.

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
    // Checked first, as `Value` would: skipped strings are not checked for UTF-8.
    let text = std::str::from_utf8(body).ok()?;
    let mut de = serde_json::Deserializer::from_str(text);
    let usage = de.deserialize_map(TopLevel).ok()?;
    de.end().ok()?;
    Some(match usage {
        Slot::Absent => Err(Fallback::NoUsage),
        Slot::NotObject => Err(Fallback::MalformedUsage),
        Slot::Object(counts) => counts.usage(),
    })
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

/// The answer object: only `usage` is read.
struct TopLevel;

impl<'de> Visitor<'de> for TopLevel {
    type Value = Slot;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Slot, A::Error> {
        let mut usage = Slot::Absent;
        while let Some(key) = map.next_key_seed(KeyIn(&["usage"]))? {
            match key {
                Some(_) => usage = map.next_value_seed(UsageSlot)?,
                None => {
                    map.next_value_seed(Skip)?;
                }
            }
        }
        Ok(usage)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The general reader: the document as a `Value`, then its `usage`.
    fn general(body: &[u8]) -> Result<Usage, Fallback> {
        let value: Value = serde_json::from_slice(body).map_err(|_| Fallback::NotJson)?;
        match value.get("usage") {
            None | Some(Value::Null) => Err(Fallback::NoUsage),
            Some(u) => super::super::usage::usage_of(u),
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
        ];
        for case in cases {
            let fast = json_usage(case.as_bytes());
            assert!(
                fast.is_none() || fast == Some(general(case.as_bytes())),
                "{case}: {fast:?} vs {:?}",
                general(case.as_bytes())
            );
        }
        // The common shapes are read here, not handed back.
        assert!(json_usage(cases[0].as_bytes()).is_some());
        assert!(json_usage(cases[1].as_bytes()).is_some());
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
    }
}
