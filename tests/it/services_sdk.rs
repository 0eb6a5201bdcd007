//! The real Azure SDKs a user points at the proxy with a proxy key, through the proxy to the
//! emulator: `azure-ai-documentintelligence` (`begin_analyze_document` polled to completion by
//! following the rewritten `Operation-Location`, the model list paged), `azure-search-documents`
//! (index, upload, search and page with `AzureKeyCredential`), and the Speech REST API as the
//! Speech SDKs call it (`issueToken` with the key, then text to speech with that token). The
//! scripts are `examples/services/*.py`. (Translator's script is not run through the proxy: its
//! last call, the languages list, goes without any credential, which the proxy refuses.)
//!
//! The Python comes from `ENTRA_PROXY_SDK_PYTHON`, else `target/sdk-venv/bin/python` (which
//! `.ci/run` makes). Without one that imports the SDKs the test says so on stderr and runs
//! nothing, unless `ENTRA_PROXY_REQUIRE_SDK=1` (which `.ci/run` sets): then it fails, saying how
//! to make the venv.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use azure_emulator::{AuthForm, Emulator, ResourceKind, ServiceOptions};
use std::path::PathBuf;
use std::process::Command;

const MODULES: &str = "import azure.ai.documentintelligence, azure.search.documents, requests";

/// The Python to run the scripts with, or `None` when there is none and none is required.
fn python() -> Option<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let candidate = std::env::var("ENTRA_PROXY_SDK_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| {
            root.join("target/sdk-venv/bin/python")
                .display()
                .to_string()
        });
    let usable = Command::new(&candidate)
        .args(["-c", MODULES])
        .output()
        .is_ok_and(|o| o.status.success());
    if usable {
        return Some(candidate);
    }
    let how = format!(
        "{candidate} cannot import the Azure SDKs; make the venv with `python3 -m venv target/sdk-venv && target/sdk-venv/bin/pip install azure-ai-documentintelligence azure-search-documents requests` (as .ci/run does), or point ENTRA_PROXY_SDK_PYTHON at one"
    );
    assert!(
        std::env::var("ENTRA_PROXY_REQUIRE_SDK").as_deref() != Ok("1"),
        "ENTRA_PROXY_REQUIRE_SDK=1 and {how}"
    );
    eprintln!("SKIPPED: the Azure SDK scripts were not run: {how}");
    None
}

/// Runs a script off the async workers (the proxy and emulator keep serving); its JSON line.
async fn script(python: &str, name: &str, args: Vec<String>) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples/services")
        .join(name);
    let python = python.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(path)
            .args(args)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name} failed: {stderr}{stdout}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{name}: {e}: {stdout}"))
}

/// A proxy in front of one resource of `kind` (keys off: only Entra works there).
async fn through_proxy(emu: Emulator, kind: ResourceKind, backend: &str) -> Harness {
    let endpoint = add_service(
        &emu,
        kind,
        ServiceOptions {
            page_size: 3,
            ..ServiceOptions::default()
        },
    )
    .await;
    let rid = ServiceOptions::default_resource_id(kind);
    let text = service_config(&emu.url(), &endpoint, &backend.replace("{rid}", &rid), "");
    proxy(emu, &text).await
}

/// Every request reached the resource with the proxy's token, and nothing of the client's.
fn only_entra_upstream(emu: &Emulator) {
    let seen = emu.requests();
    assert!(!seen.is_empty());
    for r in seen {
        assert!(
            matches!(r.auth, AuthForm::Bearer { .. } | AuthForm::SpeechAad { .. }),
            "{} went with {:?}",
            r.path_and_query,
            r.auth
        );
        assert!(r.query_credentials.is_empty());
        assert!(r.headers.iter().all(|(_, v)| !v.contains(KEY)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_azure_sdks_work_through_the_proxy_with_a_proxy_key() {
    let Some(python) = python() else {
        return;
    };
    let key = KEY.to_string();

    let h = through_proxy(
        emulator().await,
        ResourceKind::AiServices,
        "service = \"cognitive\"",
    )
    .await;
    let di = script(&python, "docintel_check.py", vec![h.url(""), key.clone()]).await;
    assert_eq!(di["model_id"], "prebuilt-read");
    assert_eq!(di["second_model_id"], "prebuilt-layout");
    assert_eq!(di["models"].as_array().unwrap().len(), 8);
    let seen = h.emulator.requests();
    assert!(
        seen.iter()
            .any(|r| r.path_and_query.contains("/analyzeResults/"))
    );
    assert!(
        seen.iter().any(|r| r.path_and_query.contains("skip=3")),
        "paged via nextLink"
    );
    only_entra_upstream(&h.emulator);
    h.stop().await;

    let h = through_proxy(
        emulator().await,
        ResourceKind::Search,
        "service = \"search\"",
    )
    .await;
    let s = script(&python, "search_check.py", vec![h.url(""), key.clone()]).await;
    assert_eq!(
        (s["pages"].as_u64(), s["total"].as_u64()),
        (Some(3), Some(7))
    );
    assert_eq!(s["count"], 7);
    only_entra_upstream(&h.emulator);
    h.stop().await;

    let h = through_proxy(
        emulator().await,
        ResourceKind::SpeechRegional,
        "service = \"speech\"\nresource_id = \"{rid}\"",
    )
    .await;
    let sp = script(&python, "speech_rest_check.py", vec![h.url(""), key]).await;
    assert_eq!(sp["token_parts"], 3);
    assert_eq!(sp["voices"][0], "en-US-JennyNeural");
    assert!(sp["recognized"].as_str().unwrap().contains("en-US"));
    only_entra_upstream(&h.emulator);
    assert!(
        h.emulator
            .requests()
            .iter()
            .all(|r| !r.path_and_query.contains("issueToken")),
        "the proxy answered issueToken itself"
    );
    h.stop().await;
}
