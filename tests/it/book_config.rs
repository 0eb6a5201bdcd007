//! The annotated example in the user guide's configuration reference parses with the real
//! config code, and every key it shows commented out is a real key, so the docs cannot drift
//! from the code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use entra_proxy::config::Config;

const CHAPTER: &str = "docs/src/configuration.md";
/// The heading the example sits under.
const EXAMPLE_HEADING: &str = "## The whole file, annotated";

fn chapter() -> String {
    std::fs::read_to_string(format!("{}/{CHAPTER}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The first TOML block under [`EXAMPLE_HEADING`].
fn example() -> String {
    let text = chapter();
    let section = text
        .split(EXAMPLE_HEADING)
        .nth(1)
        .unwrap_or_else(|| panic!("{CHAPTER} has no {EXAMPLE_HEADING:?} section"));
    let start = section.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = start + section[start..].find("```").expect("block end");
    section[start..end].to_string()
}

/// Any `${VAR}` in the example reads as "x".
fn parse(text: &str) -> Result<Config, String> {
    Config::parse(text, CHAPTER, &|_| Some("x".into())).map_err(|e| e.to_string())
}

#[test]
fn the_configuration_reference_example_is_accepted_as_written() {
    let config = parse(&example())
        .unwrap_or_else(|e| panic!("the configuration reference no longer parses: {e}"));
    assert_eq!(config.backends[0].name, "primary");
    assert_eq!(config.models.len(), 2);
    assert_eq!(config.keys[0].name, "team-a");
    assert!(config.inbound.entra.is_some() && config.inbound.client_credentials.is_some());
}

/// A commented-out `# key = value` line: its indentation, the key, and the line uncommented.
fn commented_key(line: &str) -> Option<(&str, String)> {
    let trimmed = line.trim_start();
    let candidate = trimmed.strip_prefix("# ")?;
    let (key, _) = candidate.split_once(" = ")?;
    key.chars()
        .all(|c| c.is_ascii_lowercase() || c == '_')
        .then(|| (key, candidate.to_string()))
}

/// Whether one problem `path: message` of the example with `key` uncommented still shows the
/// key is real and its value taken: the problem must be about another setting the example
/// leaves out (`limits: … need limits.redis_url`) or the identity kind it chose (`identity.tenant_id:
/// not used by kind …`), never a TOML or serde error or one about the key's own value.
fn problem_is_about_another_setting(problem: &str, key: &str) -> bool {
    let (path, message) = problem.split_once(": ").unwrap_or(("", problem));
    const SERDE: [&str; 5] = [
        "unknown field",
        "invalid type",
        "unknown variant",
        "invalid value",
        "missing field",
    ];
    if path.is_empty() || path.starts_with("line ") || SERDE.iter().any(|s| message.contains(s)) {
        return false;
    }
    message.starts_with("not used by kind")
        || message.starts_with("is not used with credential")
        || !(path == key || path.ends_with(&format!(".{key}")))
}

#[test]
fn every_commented_key_in_the_reference_is_a_real_key() {
    // Each `# key = value` line is uncommented, together with the commented lines above it in
    // the same table (a later key may need an earlier one: token_quota_period needs
    // token_quota), and the example parsed again. Unknown keys are rejected
    // (deny_unknown_fields), so this passes only for keys that exist, with values the proxy
    // takes.
    let block = example();
    let lines: Vec<&str> = block.lines().collect();
    // The table each line sits in, as the index of its header line.
    let mut table = 0;
    let tables: Vec<usize> = lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            if line.starts_with('[') {
                table = i;
            }
            table
        })
        .collect();
    let mut checked = 0;
    for (i, line) in lines.iter().enumerate() {
        let Some((key, _)) = commented_key(line) else {
            continue;
        };
        let mut text = String::new();
        for (j, other) in lines.iter().enumerate() {
            match commented_key(other) {
                Some((_, uncommented)) if j <= i && tables[j] == tables[i] => {
                    text.push_str(&uncommented)
                }
                _ => text.push_str(other),
            }
            text.push('\n');
        }
        checked += 1;
        let Err(e) = parse(&text) else { continue };
        // One problem: `FILE: path: message`; several: `FILE: N problems:` then one per line.
        let problems: Vec<&str> = match e.lines().count() {
            1 => vec![e.split_once(": ").map_or(e.as_str(), |(_, rest)| rest)],
            _ => e.lines().skip(1).map(str::trim).collect(),
        };
        assert!(
            problems
                .iter()
                .all(|p| problem_is_about_another_setting(p, key)),
            "`{}` in {CHAPTER} is not accepted when uncommented: {e}",
            line.trim()
        );
    }
    assert!(checked >= 30, "only {checked} commented keys found");
}

#[test]
fn every_key_the_config_code_reads_is_in_the_reference() {
    // The field names of the raw config types are the keys a config file may hold.
    let raw =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/config/raw.rs")).unwrap();
    let text = chapter();
    let mut skip_next = false;
    let mut missing = Vec::new();
    for line in raw.lines().map(str::trim) {
        if line.starts_with("#[serde(skip)]") {
            skip_next = true;
            continue;
        }
        let Some(field) = line
            .strip_prefix("pub(super) ")
            .and_then(|rest| rest.split_once(':'))
            .map(|(name, _)| name)
            .filter(|name| name.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        else {
            continue;
        };
        if std::mem::take(&mut skip_next) {
            continue;
        }
        let shown = [
            format!("`{field}`"),
            format!("{field} = "),
            format!("[{field}]"),
            format!(".{field}]"),
            format!("[[{field}]]"),
        ];
        if !shown.iter().any(|s| text.contains(s.as_str())) {
            missing.push(field);
        }
    }
    assert!(
        missing.is_empty(),
        "{CHAPTER} does not document: {missing:?}"
    );
}
