//! Runs the SDK check scripts of `examples/services/` against the emulator, with the real
//! Azure SDKs, when `AZURE_EMULATOR_SDK_PYTHON` names a Python that has
//! `azure-ai-documentintelligence`, `azure-search-documents` and `requests` installed (a venv's
//! `bin/python`). Without it each test says so on stderr and passes: the packages come from PyPI,
//! which a plain `cargo test` does not reach for.
// Test helpers outside `#[test]` functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

use azure_emulator::{Emulator, EmulatorConfig, ResourceKind, ServiceOptions};
use serde_json::Value;

const KEY: &str = "sdk-check-key";

fn python() -> Option<String> {
    std::env::var("AZURE_EMULATOR_SDK_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/services")
        .join(name)
}

/// Runs a script off the async workers (the emulator keeps serving) and returns its JSON line.
async fn run(python: String, name: &str, args: Vec<String>) -> Value {
    let path = script(name);
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(path)
            .args(args)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{name} failed: {stderr}{stdout}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{name}: {e}: {stdout}"))
}

async fn service(emu: &Emulator, kind: ResourceKind, page_size: usize) -> String {
    let options = ServiceOptions {
        key: Some(KEY.to_owned()),
        page_size,
        ..ServiceOptions::default()
    };
    emu.add_service(kind, options)
        .await
        .unwrap()
        .as_str()
        .trim_end_matches('/')
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_scripts_pass_against_the_emulator() {
    let Some(python) = python() else {
        eprintln!("AZURE_EMULATOR_SDK_PYTHON is not set: the SDK scripts were not run");
        return;
    };
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let ai = service(&emu, ResourceKind::AiServices, 3).await;
    let search = service(&emu, ResourceKind::Search, 3).await;
    let speech = service(&emu, ResourceKind::SpeechRegional, 3).await;
    let translator = service(&emu, ResourceKind::TranslatorGlobal, 3).await;
    let key = KEY.to_owned();

    let di = run(
        python.clone(),
        "docintel_check.py",
        vec![ai.clone(), key.clone()],
    )
    .await;
    assert_eq!(di["model_id"], "prebuilt-read");
    assert_eq!(di["models"].as_array().unwrap().len(), 8);
    let s = run(python.clone(), "search_check.py", vec![search, key.clone()]).await;
    assert_eq!(
        (s["pages"].as_u64(), s["total"].as_u64()),
        (Some(3), Some(7))
    );
    let sp = run(
        python.clone(),
        "speech_rest_check.py",
        vec![speech, key.clone()],
    )
    .await;
    assert_eq!(sp["token_parts"], 3);
    let sp = run(
        python.clone(),
        "speech_rest_check.py",
        vec![ai.clone(), key.clone(), "--custom-domain".into()],
    )
    .await;
    assert_eq!(sp["voices"][0], "en-US-JennyNeural");
    let t = run(
        python.clone(),
        "translator_check.py",
        vec![translator, key.clone()],
    )
    .await;
    assert_eq!(t["translations"][0]["to"], "de");
    let t = run(
        python,
        "translator_check.py",
        vec![ai, key, "westeurope".into(), "--custom-domain".into()],
    )
    .await;
    assert_eq!(t["detected"], "de");
    let seen = emu.requests();
    assert!(seen.iter().all(|r| r.query_credentials.is_empty()));
    assert!(
        seen.iter()
            .any(|r| r.path_and_query.contains("/analyzeResults/"))
    );
}
