//! What a bad configuration reports: [`ConfigError`] for callers, and the [`Errors`]
//! accumulator that lets `${ENV}` expansion and validation list every problem in a file at once,
//! each prefixed with its exact key.

use std::fmt;

/// A configuration problem, naming the file and where in it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{source_name}: cannot read: {reason}")]
    Read { source_name: String, reason: String },
    /// One or more problems, each `key: message`. Displayed on one line when there is one, else
    /// as a count followed by one indented problem per line.
    #[error("{source_name}: {}", Problems(problems))]
    Invalid {
        source_name: String,
        problems: Vec<String>,
    },
}

impl ConfigError {
    /// The problems found in the file (empty when it could not be read).
    pub fn problems(&self) -> &[String] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { problems, .. } => problems,
        }
    }
}

struct Problems<'a>(&'a [String]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [one] => f.write_str(one),
            many => {
                write!(f, "{} problems:", many.len())?;
                for problem in many {
                    write!(f, "\n  {problem}")?;
                }
                Ok(())
            }
        }
    }
}

/// Problems collected so far, each already `key: message`.
#[derive(Debug, Default)]
pub(super) struct Errors(Vec<String>);

impl Errors {
    /// Records `message` as a problem with `key`.
    pub(super) fn add(&mut self, key: impl fmt::Display, message: impl fmt::Display) {
        self.0.push(format!("{key}: {message}"));
    }

    /// Records `message` as a problem with `key`; `None`, for a section that has no value.
    pub(super) fn reject<T>(
        &mut self,
        key: impl fmt::Display,
        message: impl fmt::Display,
    ) -> Option<T> {
        self.add(key, message);
        None
    }

    /// The value of `result`, or `None` with its error recorded under `key`.
    pub(super) fn check<T>(
        &mut self,
        key: impl fmt::Display,
        result: Result<T, String>,
    ) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(message) => {
                self.add(key, message);
                None
            }
        }
    }

    /// How many problems so far: compare before and after a section to see if it added any.
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// `value` when nothing was recorded, else every problem in the order found.
    pub(super) fn finish<T>(self, value: Option<T>) -> Result<T, Vec<String>> {
        match value {
            Some(v) if self.0.is_empty() => Ok(v),
            // Every section that yields no value records why, so this arm is only a guard.
            None if self.0.is_empty() => Err(vec![
                "config: rejected without a recorded reason (a bug in the proxy; please report it)"
                    .to_string(),
            ]),
            _ => Err(self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(problems: &[&str]) -> String {
        ConfigError::Invalid {
            source_name: "f.toml".into(),
            problems: problems.iter().map(|p| p.to_string()).collect(),
        }
        .to_string()
    }

    #[test]
    fn one_problem_is_one_line_and_several_are_one_per_line() {
        assert_eq!(
            invalid(&["server.listen: bad"]),
            "f.toml: server.listen: bad"
        );
        assert_eq!(
            invalid(&["server.listen: bad", "keys[0].sha256: short"]),
            "f.toml: 2 problems:\n  server.listen: bad\n  keys[0].sha256: short"
        );
    }

    #[test]
    fn errors_keep_the_order_found_and_prefix_the_key() {
        let mut e = Errors::default();
        assert_eq!(e.check("a", Ok::<_, String>(1)), Some(1));
        assert_eq!(e.check::<u8>("b.c", Err("no".into())), None);
        e.add("d[0]", "empty");
        assert_eq!(e.len(), 2);
        assert_eq!(
            e.finish(Some(())).unwrap_err(),
            vec!["b.c: no", "d[0]: empty"]
        );
    }
}
