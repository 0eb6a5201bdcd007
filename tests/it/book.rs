//! The user guide (`docs/`) and the README stay in step with the code: the troubleshooting
//! chapter has an entry for every diagnosis code and every error code the proxy can emit, the
//! README's relative links lead somewhere, and the example configs parse and carry no digest of a
//! guessable key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use entra_proxy::config::KeyDigest;
use entra_proxy::diagnose::DiagnosisCode;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const TROUBLESHOOT: &str = "docs/src/troubleshoot.md";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative))
        .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

/// The id mdBook gives a heading: lower case, letters, digits, `-` and `_` kept, spaces to `-`,
/// everything else (backticks, colons, dots) dropped.
fn heading_id(heading: &str) -> String {
    heading
        .trim()
        .chars()
        .filter_map(|c| match c {
            c if c.is_alphanumeric() || c == '_' || c == '-' => Some(c.to_ascii_lowercase()),
            c if c.is_whitespace() => Some('-'),
            _ => None,
        })
        .collect()
}

/// Every place a link into this Markdown file can land: its headings' ids and its explicit
/// `id="…"` anchors.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_code = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        if let Some(heading) = line.strip_prefix('#') {
            out.insert(heading_id(heading.trim_start_matches('#')));
        }
        let mut rest = line;
        while let Some(at) = rest.find("id=\"") {
            let after = &rest[at + 4..];
            let end = after.find('"').unwrap_or(after.len());
            out.insert(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_diagnosis_code_has_an_entry_in_the_troubleshooting_chapter() {
    let found = anchors(&read(TROUBLESHOOT));
    // The codes as the proxy emits them: serialized, as in `explain --json` and the header.
    let missing: Vec<String> = DiagnosisCode::ALL
        .iter()
        .map(|c| {
            serde_json::to_value(c)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .filter(|code| !found.contains(code))
        .collect();
    assert!(
        missing.is_empty(),
        "{TROUBLESHOOT} has no heading or anchor for the diagnosis codes {missing:?}"
    );
}

#[test]
fn every_error_code_has_an_entry_in_the_troubleshooting_chapter() {
    let found = anchors(&read(TROUBLESHOOT));
    let missing: Vec<&str> = entra_proxy::error::CODES
        .iter()
        .copied()
        .filter(|code| !found.contains(*code))
        .collect();
    assert!(
        missing.is_empty(),
        "{TROUBLESHOOT} has no heading or anchor for the error codes {missing:?}"
    );
}

/// The targets of Markdown links `[text](target)` outside code blocks and code spans.
fn link_targets(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_code = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        // Drop code spans, which may hold `](` without being links.
        let text: String = line.split('`').step_by(2).collect();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after.find(')').unwrap_or(after.len());
            out.push(after[..end].trim().to_string());
            rest = &after[end..];
        }
    }
    out
}

fn is_external(target: &str) -> bool {
    target.contains("://") || target.starts_with("mailto:")
}

/// Checks every relative link in the Markdown file `relative`: the file it names exists, and
/// an `#anchor` into a Markdown file (or into this one) is one of its headings or anchors.
fn check_links(relative: &str) -> Vec<String> {
    let here = root().join(relative);
    let dir = here.parent().unwrap().to_path_buf();
    let text = read(relative);
    let mut broken = Vec::new();
    for target in link_targets(&text) {
        if is_external(&target) {
            continue;
        }
        let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
        let file: PathBuf = if path.is_empty() {
            here.clone()
        } else {
            dir.join(path)
        };
        if !file.exists() {
            broken.push(format!("{relative}: {target} (no such file)"));
            continue;
        }
        if !anchor.is_empty() && file.extension().is_some_and(|e| e == "md") {
            let found = anchors(&std::fs::read_to_string(&file).unwrap());
            if !found.contains(anchor) {
                broken.push(format!("{relative}: {target} (no such anchor)"));
            }
        }
    }
    broken
}

#[test]
fn every_relative_link_in_the_readme_resolves() {
    let links = link_targets(&read("README.md"));
    assert!(
        links.iter().filter(|l| !is_external(l)).count() >= 10,
        "the README links into the user guide, chapter by chapter"
    );
    let broken: Vec<String> = ["README.md", "CONTRIBUTING.md"]
        .iter()
        .flat_map(|f| check_links(f))
        .collect();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// Passwords people type when a config asks for a key. Each is also tried capitalised, upper
/// case, and with the usual suffixes.
const COMMON_PASSWORDS: &str = "\
    password passw0rd p@ssw0rd p@ssword pass passwd pass123 password1 123456 1234567 12345678 \
    123456789 1234567890 12345 1234 123 111111 000000 0000 1111 121212 123123 654321 666666 \
    696969 7777777 987654321 112233 123321 1q2w3e4r 1q2w3e qwerty qwertyuiop qwerty123 qwe123 \
    asdf asdfgh asdfghjkl zxcvbn zxcvbnm azerty abc123 abcdef abcd1234 a1b2c3 aa123456 iloveyou \
    letmein welcome monkey dragon master sunshine princess football baseball soccer hockey \
    superman batman trustno1 shadow michael jennifer jordan hunter hunter2 freedom whatever \
    starwars pokemon mustang access login flower hello hello123 charlie donald loveme lovely \
    ninja cheese killer secret secret123 topsecret changeme changeit change_me default admin \
    admin123 admin1 administrator root toor guest user test test123 testing test1 tester demo \
    sample example key apikey api-key api_key mykey my-key mysecret token dev development prod \
    production staging local localhost server service system oracle mysql postgres redis azure \
    openai microsoft windows linux ubuntu docker kubernetes entra entra-proxy proxy gateway \
    team-a team company office summer winter spring autumn january monday friday computer \
    internet network security master123 qazwsx zaq12wsx !qaz2wsx 1qaz2wsx q1w2e3r4 q1w2e3r4t5 \
    1a2b3c letmein1 welcome1 welcome123 password123 password12 passpass nopassword none null \
    empty blank foo bar foobar baz xyz abc xxx aaa x a s3cr3t s3cret letmein! god love sex money \
    lucky matrix pepper ginger cookie banana orange apple chocolate tigger buster daniel thomas \
    robert andrew joshua george ashley amanda jessica nicole michelle maggie silver golden \
    diamond purple yellow blue red green black white snoopy merlin cowboy eagle falcon phoenix \
    rainbow thunder lakers chelsea liverpool arsenal barcelona ferrari porsche corvette harley \
    yankees dallas austin boston london paris berlin america canada qwerty1 qwertz 1qazxsw2 \
    passw0rd! Password1! P@ssw0rd! Welcome1!";

const SUFFIXES: &[&str] = &[
    "", "1", "12", "123", "1234", "!", "1!", "2024", "2025", "2026", "2027",
];

fn guessable_digests() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for base in COMMON_PASSWORDS.split_whitespace() {
        let mut capitalised = base.to_string();
        if let Some(first) = capitalised.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        for form in [base.to_string(), capitalised, base.to_ascii_uppercase()] {
            for suffix in SUFFIXES {
                let key = format!("{form}{suffix}");
                out.insert(KeyDigest::of(&key).to_hex());
                // Keys pasted with the newline a shell's `echo` adds.
                out.insert(KeyDigest::of(&format!("{key}\n")).to_hex());
            }
        }
    }
    // A digest of nothing at all.
    out.insert(KeyDigest::of("").to_hex());
    out
}

/// Files under `dir`, except the book's build output.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path != root().join("docs/book") {
                files_under(&path, out);
            }
        } else {
            out.push(path);
        }
    }
}

/// Every 64-hex value after `sha256 = "` (which `admin_key_sha256` ends with too).
fn digests_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices("sha256") {
        let rest = text[at + "sha256".len()..].trim_start();
        let Some(rest) = rest.strip_prefix('=') else {
            continue;
        };
        let rest = rest.trim_start().trim_start_matches(['"', '\'']);
        let hex: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
        if hex.len() == 64 {
            out.push(hex.to_ascii_lowercase());
        }
    }
    out
}

#[test]
fn no_example_or_doc_carries_the_digest_of_a_guessable_key() {
    let guessable = guessable_digests();
    assert!(guessable.contains("5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"));
    let mut files = Vec::new();
    for dir in ["examples", "docs", "infra"] {
        files_under(&root().join(dir), &mut files);
    }
    files.push(root().join("README.md"));
    let mut seen = 0;
    let mut bad = Vec::new();
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for digest in digests_in(&text) {
            seen += 1;
            if guessable.contains(&digest) {
                bad.push(format!("{}: {digest}", file.display()));
            }
        }
    }
    assert!(
        seen >= 2,
        "the examples and the configuration reference hold digests"
    );
    assert!(
        bad.is_empty(),
        "digests of guessable keys (paste one from `entra-proxy keys new` instead):\n{}",
        bad.join("\n")
    );
}

#[test]
fn every_example_config_is_accepted() {
    // The files the guide points at as starting points must pass `config check` as shipped.
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("examples"))
        .unwrap()
        .flatten()
    {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        if let Err(e) =
            entra_proxy::config::Config::parse(&text, &path.display().to_string(), &|_| {
                Some("x".into())
            })
        {
            panic!("{e}");
        }
        checked += 1;
    }
    assert!(checked >= 1);
}

/// The names of every metric the proxy describes (`src/telemetry/recorder.rs`, whose own unit
/// test holds that table to every metric in the source).
fn described_metrics() -> BTreeSet<String> {
    let table = read("src/telemetry/recorder.rs");
    let table = &table[..table.find("pub(crate) fn help_of").unwrap()];
    table
        .match_indices("\"entra_proxy_")
        .map(|(at, _)| {
            let name = &table[at + 1..];
            name[..name.find('"').unwrap()].to_string()
        })
        .collect()
}

#[test]
fn every_metric_is_in_the_observe_chapter() {
    let observe = read("docs/src/observe.md");
    let metrics = described_metrics();
    assert!(metrics.len() > 20, "{metrics:?}");
    let missing: Vec<&String> = metrics
        .iter()
        .filter(|m| !observe.contains(&format!("`{m}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/src/observe.md does not list {missing:?}"
    );
}

#[test]
fn every_command_and_long_option_is_in_the_commands_chapter() {
    use clap::CommandFactory as _;
    fn walk(cmd: &clap::Command, path: &str, out: &mut Vec<(String, Vec<String>)>) {
        let path = if path.is_empty() {
            cmd.get_name().to_string()
        } else {
            format!("{path} {}", cmd.get_name())
        };
        let longs = cmd
            .get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|l| !matches!(*l, "help" | "version"))
            .map(|l| format!("--{l}"))
            .collect();
        out.push((path.clone(), longs));
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            walk(sub, &path, out);
        }
    }
    let mut commands = Vec::new();
    walk(&entra_proxy::cli::Cli::command(), "", &mut commands);
    let chapter = read("docs/src/commands.md");
    let mut missing = Vec::new();
    for (path, longs) in &commands[1..] {
        // The command's own line in the table, e.g. `entra-proxy keys new --name NAME …`.
        match chapter
            .lines()
            .find(|l| l.starts_with(&format!("| `{path}")))
        {
            None => missing.push(path.clone()),
            Some(line) => missing.extend(
                longs
                    .iter()
                    .filter(|l| !line.contains(l.as_str()))
                    .map(|l| format!("{path} {l}")),
            ),
        }
    }
    assert!(
        missing.is_empty(),
        "docs/src/commands.md's table lacks {missing:?}"
    );
}
