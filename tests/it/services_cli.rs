//! `config check` and `doctor` know each service: what a Speech, Translator or Search backend
//! needs is checked before the proxy starts, and `doctor` makes one call per service backend
//! with the token in the service's form, explaining a refusal by the service's rule.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use azure_emulator::{ResourceKind, ServiceOptions};
use std::process::Stdio;

const RID: &str = "/subscriptions/00000000-0000-4000-8000-0000000000e1/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/res";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn run(args: &[&str]) -> Run {
    let out = tokio::process::Command::new(binary())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn with_config(command: &[&str], text: &str) -> Run {
    let path = tempfile_path::TempPath::new("toml");
    std::fs::write(&path.0, text).unwrap();
    let mut args = command.to_vec();
    args.extend(["--config", path.0.to_str().unwrap()]);
    run(&args).await
}

fn backend(endpoint: &str, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:8080\"\n[[backends]]\nname = \"svc\"\nendpoint = \"{endpoint}\"\n{extra}\n"
    )
}

#[tokio::test]
async fn config_check_holds_each_service_to_what_entra_needs_there() {
    let cases = [
        (
            backend("https://westeurope.tts.speech.microsoft.com", ""),
            "backends[0].resource_id: Speech on the regional host westeurope.tts.speech.microsoft.com takes an Entra token only as aad#<resource id>#<token>",
        ),
        (
            backend("https://api.cognitive.microsofttranslator.com", ""),
            "backends[0].region: Translator's global endpoint",
        ),
        (
            backend(
                "https://res.cognitiveservices.azure.com",
                "service = \"speech\"\nresource_id = \"res\"",
            ),
            "backends[0].resource_id: \"res\" is not the ARM id of an Azure AI services account",
        ),
        (
            backend("https://s.search.windows.net", "service = \"openai\""),
            "backends[0].service: s.search.windows.net is a search host",
        ),
        (
            backend("https://res.openai.azure.com", "").replace(
                "listen = \"127.0.0.1:8080\"",
                "listen = \"127.0.0.1:8080\"\npublic_url = \"https://proxy.contoso.com/aoai\"",
            ),
            "server.public_url: \"https://proxy.contoso.com/aoai\" has a path, query or fragment",
        ),
    ];
    for (text, says) in cases {
        let r = with_config(&["config", "check"], &text).await;
        assert_eq!(r.code, 64, "{text}\n{}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains(says), "{says}\n{}", r.stderr);
    }
    let good = backend(
        "https://westeurope.tts.speech.microsoft.com",
        &format!("resource_id = \"{RID}\""),
    ) + &backend(
        "https://api.cognitive.microsofttranslator.com",
        &format!("region = \"westeurope\"\nresource_id = \"{RID}\""),
    )
    .replace("[server]\nlisten = \"127.0.0.1:8080\"\n", "")
    .replace("name = \"svc\"", "name = \"tr\"");
    let r = with_config(&["config", "check"], &good).await;
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains(
            "backend svc: endpoint https://westeurope.tts.speech.microsoft.com api_version 2024-10-21 scope https://cognitiveservices.azure.com/.default"
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains(&format!("service speech resource_id {RID}")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("service translator resource_id"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("region westeurope"), "{}", r.stdout);
    assert!(r.stdout.contains("batch transcription"), "{}", r.stdout);
}

/// The lines of a doctor report about the `svc` backend's call.
fn call_line(stdout: &str) -> String {
    stdout
        .lines()
        .find(|l| l.contains("svc: call "))
        .unwrap_or_else(|| panic!("no call line in\n{stdout}"))
        .to_string()
}

#[tokio::test]
async fn doctor_calls_each_service_with_its_token_form_and_explains_refusals() {
    let emu = emulator().await;
    let speech = add_service(
        &emu,
        ResourceKind::SpeechRegional,
        ServiceOptions::default(),
    )
    .await;
    let search = add_service(&emu, ResourceKind::Search, ServiceOptions::default()).await;
    let translator = add_service(
        &emu,
        ResourceKind::TranslatorGlobal,
        ServiceOptions::default(),
    )
    .await;
    let ai = add_service(&emu, ResourceKind::AiServices, ServiceOptions::default()).await;
    let speech_rid = ServiceOptions::default_resource_id(ResourceKind::SpeechRegional);
    let translator_rid = ServiceOptions::default_resource_id(ResourceKind::TranslatorGlobal);
    let cases = [
        (
            &speech,
            format!("service = \"speech\"\nresource_id = \"{speech_rid}\""),
            "✓",
            "the service took the token as aad#<resource id>#<token>",
        ),
        (
            &search,
            "service = \"search\"".to_string(),
            "✓",
            "the index list",
        ),
        (
            &translator,
            format!(
                "service = \"translator\"\nregion = \"westeurope\"\nresource_id = \"{translator_rid}\""
            ),
            "✓",
            "with Ocp-Apim-ResourceId and Ocp-Apim-Subscription-Region",
        ),
        (
            &ai,
            "service = \"cognitive\"".to_string(),
            "✓",
            "Document Intelligence's model list",
        ),
        (
            &ai,
            "service = \"speech\"".to_string(),
            "✓",
            "the voices list (/tts/cognitiveservices/voices/list)",
        ),
        (
            &speech,
            "service = \"speech\"".to_string(),
            "✗",
            "speech-custom-domain: ",
        ),
        (
            &translator,
            "service = \"translator\"".to_string(),
            "✗",
            "translator-region: ",
        ),
        (
            &search,
            "service = \"cognitive\"".to_string(),
            "✗",
            "search-audience: ",
        ),
    ];
    for (endpoint, backend, mark, says) in cases {
        let text = service_config(&emu.url(), endpoint, &backend, "");
        let r = with_config(&["doctor"], &text).await;
        let line = call_line(&r.stdout);
        assert!(
            line.starts_with(mark) && line.contains(says),
            "{backend}: {line}\n{}",
            r.stdout
        );
        assert_eq!(r.code, i32::from(mark == "✗"), "{}", r.stdout);
    }
}
