//! Speech through the swap, on both kinds of host the emulator plays: the regional front ends
//! take the proxy's token only as `aad#{resource id}#{token}`, a custom domain the plain bearer;
//! batch transcription's links come back to the proxy; the WebSockets take the key or an issued
//! token in a header or the query, and Azure sees neither.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use azure_emulator::{AuthForm, Emulator, ResourceKind, SeenRequest, ServiceOptions};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

const SSML: &str =
    "<speak version='1.0' xml:lang='en-US'><voice name='en-US-JennyNeural'>Hello.</voice></speak>";

/// A proxy in front of a Speech resource of `kind`, with `backend` keys on its backend.
async fn speech(kind: ResourceKind, backend: &str) -> (Harness, String) {
    let emu = emulator().await;
    let endpoint = add_service(&emu, kind, ServiceOptions::default()).await;
    let rid = ServiceOptions::default_resource_id(kind);
    let text = service_config(&emu.url(), &endpoint, &backend.replace("{rid}", &rid), "");
    (proxy(emu, &text).await, rid)
}

async fn synthesize(h: &Harness, path: &str, credential: (&str, &str)) -> reqwest::Response {
    client()
        .post(h.url(path))
        .header(credential.0, credential.1)
        .header("content-type", "application/ssml+xml")
        .header("x-microsoft-outputformat", "riff-24khz-16bit-mono-pcm")
        .body(SSML)
        .send()
        .await
        .unwrap()
}

fn last(emu: &Emulator) -> SeenRequest {
    emu.requests()
        .pop()
        .expect("a request reached the emulator")
}

/// Nothing the client held reached Azure: no key header, no key in the query.
fn nothing_of_the_client(seen: &SeenRequest) {
    assert!(seen.query_credentials.is_empty(), "{seen:?}");
    for (name, value) in &seen.headers {
        assert!(!value.contains(KEY), "{name} carried the key");
    }
    assert!(seen.header("ocp-apim-subscription-key").is_none());
    assert!(seen.header("api-key").is_none());
}

#[tokio::test]
async fn the_regional_front_ends_get_the_aad_form_with_the_resource_id() {
    let (h, rid) = speech(
        ResourceKind::SpeechRegional,
        "service = \"speech\"\nresource_id = \"{rid}\"",
    )
    .await;
    let r = synthesize(
        &h,
        "/cognitiveservices/v1",
        ("ocp-apim-subscription-key", KEY),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-emulator-auth"], "aad");
    let audio = r.bytes().await.unwrap();
    assert_eq!(&audio[..4], b"RIFF");
    let seen = last(&h.emulator);
    assert_eq!(
        seen.auth,
        AuthForm::SpeechAad {
            resource_id: rid.clone(),
            audience: Some(COGNITIVE_AUD.into())
        }
    );
    nothing_of_the_client(&seen);

    // The voices list with the key in the query, short-audio speech to text with it as a bearer.
    let r = client()
        .get(h.url(&format!(
            "/cognitiveservices/voices/list?Subscription-Key={KEY}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    nothing_of_the_client(&last(&h.emulator));
    let r = client()
        .post(h.url(
            "/speech/recognition/conversation/cognitiveservices/v1?language=en-US&format=detailed",
        ))
        .bearer_auth(KEY)
        .header(
            "content-type",
            "audio/wav; codecs=audio/pcm; samplerate=16000",
        )
        .body(audio.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["RecognitionStatus"], "Success");
    let seen = last(&h.emulator);
    assert!(matches!(seen.auth, AuthForm::SpeechAad { .. }), "{seen:?}");
    assert_eq!(
        seen.path_and_query,
        "/speech/recognition/conversation/cognitiveservices/v1?language=en-US&format=detailed"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_plain_bearer_on_a_regional_host_is_refused_and_explained_without_a_refresh() {
    // No resource_id: the proxy can only send the plain bearer, which the regional front end
    // refuses (on an Azure host name `config check` would have refused the config).
    let (h, _) = speech(ResourceKind::SpeechRegional, "service = \"speech\"").await;
    let r = synthesize(&h, "/cognitiveservices/v1", ("api-key", KEY)).await;
    assert_eq!(r.status(), 401);
    let diagnosis = r.headers()["x-entra-proxy-diagnosis"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        diagnosis.starts_with("speech-custom-domain: "),
        "{diagnosis}"
    );
    assert!(diagnosis.contains("plain bearer"), "{diagnosis}");
    assert!(diagnosis.contains("set resource_id = "), "{diagnosis}");
    let seen = h.emulator.requests();
    assert_eq!(seen.len(), 1, "refused once, not refreshed and replayed");
    assert!(matches!(seen[0].auth, AuthForm::Bearer { .. }));
    h.stop().await;
}

#[tokio::test]
async fn a_custom_domain_takes_the_plain_bearer_and_batch_links_come_back_to_the_proxy() {
    let (h, _) = speech(ResourceKind::AiServices, "service = \"speech\"").await;
    let r = synthesize(
        &h,
        "/tts/cognitiveservices/v1",
        ("ocp-apim-subscription-key", KEY),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-emulator-auth"], "entra");
    assert!(matches!(last(&h.emulator).auth, AuthForm::Bearer { .. }));

    let r = client()
        .post(h.url("/speechtotext/v3.2/transcriptions"))
        .header("ocp-apim-subscription-key", KEY)
        .json(&serde_json::json!({
            "contentUrls": ["https://example.blob.core.windows.net/audio/a.wav"],
            "locale": "en-US",
            "displayName": "through the proxy"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let proxy_base = format!("http://{}/speechtotext/v3.2/transcriptions/", h.addr);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(&proxy_base), "{location}");
    let created: serde_json::Value = r.json().await.unwrap();
    assert_eq!(created["self"], location.as_str());
    let files = created["links"]["files"].as_str().unwrap();
    assert!(files.starts_with(&proxy_base), "{files}");

    // The client follows the links through the proxy, with its key.
    let r = client()
        .get(&location)
        .header("ocp-apim-subscription-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let polled: serde_json::Value = r.json().await.unwrap();
    assert_eq!(polled["status"], "Running");
    let r = client()
        .get(files)
        .header("ocp-apim-subscription-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let listed: serde_json::Value = r.json().await.unwrap();
    // The result file is a blob SAS URL: another host, left as Azure wrote it.
    let content = listed["values"][0]["links"]["contentUrl"].as_str().unwrap();
    assert!(
        content.starts_with(&format!("https://{}/", azure_emulator::FOREIGN_BLOB_HOST)),
        "{content}"
    );
    assert!(
        listed["values"][0]["self"]
            .as_str()
            .unwrap()
            .starts_with(&proxy_base)
    );
    h.stop().await;
}

#[tokio::test]
async fn with_a_resource_id_the_front_ends_get_aad_and_batch_transcription_the_plain_bearer() {
    let (h, rid) = speech(
        ResourceKind::AiServices,
        "service = \"speech\"\nresource_id = \"{rid}\"",
    )
    .await;
    let r = synthesize(&h, "/tts/cognitiveservices/v1", ("api-key", KEY)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        last(&h.emulator).auth,
        AuthForm::SpeechAad {
            resource_id: rid,
            audience: Some(COGNITIVE_AUD.into())
        }
    );
    let r = client()
        .get(h.url("/speechtotext/v3.2/transcriptions"))
        .header("api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert!(matches!(last(&h.emulator).auth, AuthForm::Bearer { .. }));
    h.stop().await;
}

/// Opens a WebSocket through the proxy, sends one text frame and reads the echo.
async fn socket(h: &Harness, path_and_query: &str, header: Option<(&'static str, String)>) -> u16 {
    let mut request = format!("ws://{}{path_and_query}", h.addr)
        .into_client_request()
        .unwrap();
    if let Some((name, value)) = header {
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((mut ws, response)) => {
            ws.send(Message::text("path:speech.config\r\n\r\n{}"))
                .await
                .unwrap();
            let echoed = ws.next().await.unwrap().unwrap();
            assert!(echoed.is_text(), "{echoed:?}");
            let _ = ws.close(None).await;
            response.status().as_u16()
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
        Err(e) => panic!("{e}"),
    }
}

async fn issued_token(h: &Harness) -> String {
    let r = client()
        .post(h.url("/sts/v1.0/issueToken"))
        .header("ocp-apim-subscription-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

#[tokio::test]
async fn speech_websockets_take_the_key_or_an_issued_token_in_a_header_or_the_query() {
    let (h, rid) = speech(
        ResourceKind::SpeechRegional,
        "service = \"speech\"\nresource_id = \"{rid}\"",
    )
    .await;
    let token = issued_token(&h).await;
    let stt = "/speech/recognition/conversation/cognitiveservices/v1?language=en-US&X-ConnectionId=c0ffee";
    let encoded_token = url::form_urlencoded::byte_serialize(format!("Bearer {token}").as_bytes())
        .collect::<String>();
    let cases: Vec<(String, Option<(&'static str, String)>)> = vec![
        // The native SDKs: headers.
        (
            stt.to_string(),
            Some(("ocp-apim-subscription-key", KEY.to_string())),
        ),
        (
            stt.to_string(),
            Some(("authorization", format!("Bearer {token}"))),
        ),
        // A browser: the SDK puts its headers in the query.
        (format!("{stt}&Ocp-Apim-Subscription-Key={KEY}"), None),
        (format!("{stt}&Authorization={encoded_token}"), None),
        // Text to speech's socket.
        (
            "/cognitiveservices/websocket/v1".to_string(),
            Some(("authorization", format!("Bearer {token}"))),
        ),
    ];
    for (path, header) in cases {
        assert_eq!(socket(&h, &path, header).await, 101, "{path}");
        let seen = last(&h.emulator);
        assert_eq!(
            seen.auth,
            AuthForm::SpeechAad {
                resource_id: rid.clone(),
                audience: Some(COGNITIVE_AUD.into())
            },
            "{path}"
        );
        nothing_of_the_client(&seen);
        assert!(!seen.path_and_query.contains("Authorization"), "{path}");
        assert!(seen.headers.iter().all(|(_, v)| !v.contains(&token)));
        if path.starts_with("/speech/") {
            assert!(seen.path_and_query.contains("X-ConnectionId=c0ffee"));
        }
    }
    // A key the proxy does not know is refused before Azure is called.
    let before = h.emulator.requests().len();
    assert_eq!(
        socket(&h, &format!("{stt}&Ocp-Apim-Subscription-Key=nope"), None).await,
        401
    );
    assert_eq!(h.emulator.requests().len(), before);
    h.stop().await;
}
