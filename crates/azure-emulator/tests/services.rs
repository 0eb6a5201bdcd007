//! Black-box checks of the emulated Azure AI services (Speech, Translator, Search, Document
//! Intelligence, Language, Content Safety, Vision) over real HTTP on 127.0.0.1: each
//! credential rule accepted and refused, with exact statuses and bodies.
// Test helpers outside `#[test]` functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use azure_emulator::{
    AuthForm, Cloud, Emulator, EmulatorConfig, FOREIGN_HOST, MintSpec, ResourceKind,
    SearchAuthFailure, ServiceOptions, TokenVersion,
};
use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

const COG: &str = "https://cognitiveservices.azure.com";
const SEARCH: &str = "https://search.azure.com";
const RID: &str = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/speechy";
const KEY: &str = "resource-key-1";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn options(key: Option<&str>) -> ServiceOptions {
    ServiceOptions {
        resource_id: RID.to_owned(),
        key: key.map(str::to_owned),
        ..ServiceOptions::default()
    }
}

async fn emulator() -> Emulator {
    Emulator::start(EmulatorConfig::default()).await.unwrap()
}

/// Status, headers and body text of a request.
async fn send(req: reqwest::RequestBuilder) -> (u16, HeaderMap, String) {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn at(base: &url::Url, path: &str) -> String {
    format!("{}{}", base.as_str().trim_end_matches('/'), path)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn audience_401() -> Value {
    json!({"error":{"code":"401","message":format!("Unauthorized. Access token is missing, invalid, audience is incorrect ({COG}), or have expired.")}})
}

fn invalid_key_401() -> Value {
    json!({"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}})
}

const SSML: &str =
    "<speak version='1.0' xml:lang='en-US'><voice name='en-US-JennyNeural'>Hi</voice></speak>";

fn tts(base: &url::Url, path: &str) -> reqwest::RequestBuilder {
    client()
        .post(at(base, path))
        .header("content-type", "application/ssml+xml")
        .header("x-microsoft-outputformat", "riff-24khz-16bit-mono-pcm")
        .body(SSML)
}

async fn issue_token(base: &url::Url, key: &str) -> String {
    let (status, headers, token) = send(
        client()
            .post(at(base, "/sts/v1.0/issueToken"))
            .header("ocp-apim-subscription-key", key),
    )
    .await;
    assert_eq!(status, 200, "{token}");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    token
}

fn claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn regional_speech_takes_keys_issued_tokens_and_the_aad_form_but_no_plain_entra_token() {
    let emu = emulator().await;
    let speech = emu
        .add_service(ResourceKind::SpeechRegional, options(Some(KEY)))
        .await
        .unwrap();
    let entra = emu.mint(&MintSpec::new(COG));

    // issueToken: key in, a 10-minute JWT for this resource out, as plain text.
    let token = issue_token(&speech, KEY).await;
    let c = claims(&token);
    assert_eq!(c["azure-resource-id"], RID);
    assert_eq!(c["region"], "westeurope");
    assert_eq!(c["iss"], "urn:ms.cognitiveservices");
    assert_eq!(c["aud"], "urn:ms.speech");
    let lifetime = c["exp"].as_i64().unwrap() - time_now();
    assert!((595..=600).contains(&lifetime), "{lifetime}");

    // Text to speech with the issued token, with the key, with the aad# form.
    let (status, headers, _) =
        send(tts(&speech, "/cognitiveservices/v1").header("authorization", bearer(&token))).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "audio/x-wav");
    assert_eq!(headers["x-emulator-auth"], "issued-token");
    let audio = tts(&speech, "/cognitiveservices/v1")
        .header("ocp-apim-subscription-key", KEY)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&audio[..4], b"RIFF");
    let aad = format!("aad#{RID}#{entra}");
    let (status, headers, _) =
        send(tts(&speech, "/cognitiveservices/v1").header("authorization", bearer(&aad))).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-emulator-auth"], "aad");
    assert_eq!(headers["x-emulator-audience"], COG);

    // Refused: a plain Entra token (the regional host cannot tell the resource), the aad# form
    // naming another resource or carrying a token for another audience, a wrong key: 401,
    // empty body.
    let other = format!("aad#{}x#{entra}", RID);
    let search_token = emu.mint(&MintSpec::new(SEARCH));
    for auth in [
        bearer(&entra),
        bearer(&other),
        bearer(&format!("aad#{RID}#{search_token}")),
    ] {
        let (status, _, body) =
            send(tts(&speech, "/cognitiveservices/v1").header("authorization", auth)).await;
        assert_eq!((status, body.as_str()), (401, ""));
    }
    let (status, _, body) =
        send(tts(&speech, "/cognitiveservices/v1").header("ocp-apim-subscription-key", "nope"))
            .await;
    assert_eq!((status, body.as_str()), (401, ""));
    let (status, _, _) = send(
        client()
            .post(at(&speech, "/cognitiveservices/v1"))
            .header("authorization", bearer(&token))
            .header("content-type", "text/plain")
            .body(SSML),
    )
    .await;
    assert_eq!(status, 415);

    // Voices list.
    let (status, _, body) = send(
        client()
            .get(at(&speech, "/cognitiveservices/voices/list"))
            .header("authorization", bearer(&aad)),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(parse(&body)[0]["ShortName"], "en-US-JennyNeural");

    // Short-audio speech to text: 403 without a credential, 400 without language.
    let stt = "/speech/recognition/conversation/cognitiveservices/v1";
    let (status, _, body) = send(
        client()
            .post(at(&speech, &format!("{stt}?language=en-US")))
            .body(audio.clone()),
    )
    .await;
    assert_eq!((status, body.as_str()), (403, ""));
    let (status, _, _) = send(
        client()
            .post(at(&speech, stt))
            .header("ocp-apim-subscription-key", KEY)
            .body(audio.clone()),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _, body) = send(
        client()
            .post(at(&speech, &format!("{stt}?language=en-US")))
            .header("authorization", bearer(&aad))
            .header(
                "content-type",
                "audio/wav; codecs=audio/pcm; samplerate=16000",
            )
            .body(audio.clone()),
    )
    .await;
    assert_eq!(status, 200);
    let v = parse(&body);
    assert_eq!(v["RecognitionStatus"], "Success");
    assert_eq!(
        v["DisplayText"],
        format!(
            "Emulated transcription of {} bytes of en-US audio.",
            audio.len()
        )
    );

    // issueToken on the regional host: bearer tokens get 400, no key 401, a wrong key 401.
    let (status, _, body) = send(
        client()
            .post(at(&speech, "/sts/v1.0/issueToken"))
            .header("authorization", bearer(&entra)),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        parse(&body),
        json!({"error":{"code":"BadRequest","message":"Please provide an authentication key."}})
    );
    let (status, _, body) = send(client().post(at(&speech, "/sts/v1.0/issueToken"))).await;
    assert_eq!(status, 401);
    assert_eq!(
        parse(&body),
        json!({"error":{"code":"401","message":"Access denied due to missing subscription key. Make sure to include subscription key when making requests to an API."}})
    );
    let (status, _, body) = send(
        client()
            .post(at(&speech, "/sts/v1.0/issueToken"))
            .header("ocp-apim-subscription-key", "nope"),
    )
    .await;
    assert_eq!((status, parse(&body)), (401, invalid_key_401()));

    // Batch transcription on the regional host: keys and issued tokens, no Entra.
    let create = json!({"contentUrls": ["https://example.invalid/a.wav"], "locale": "en-US", "displayName": "t"});
    let (status, _, body) = send(
        client()
            .post(at(&speech, "/speechtotext/v3.2/transcriptions"))
            .header("authorization", bearer(&entra))
            .json(&create),
    )
    .await;
    assert_eq!((status, parse(&body)), (401, audience_401()));
    let (status, _, body) = send(
        client()
            .post(at(&speech, "/speechtotext/v3.2/transcriptions"))
            .header("authorization", bearer(&token))
            .json(&create),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    // The request log says which form reached "Azure".
    let seen = emu.requests();
    assert_eq!(seen[1].auth, AuthForm::IssuedToken);
    assert_eq!(seen[2].auth, AuthForm::SubscriptionKey);
    assert_eq!(
        seen[3].auth,
        AuthForm::SpeechAad {
            resource_id: RID.to_owned(),
            audience: Some(COG.to_owned())
        }
    );
    assert_eq!(seen[3].bearer_audience.as_deref(), Some(COG));
    assert_eq!(
        seen[4].auth,
        AuthForm::Bearer {
            audience: Some(COG.to_owned())
        }
    );
    let shown = format!("{:?}", seen[3]);
    assert!(!shown.contains(&entra), "Debug must not show the token");
    assert!(shown.contains("<redacted>"));
}

fn time_now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

#[tokio::test]
async fn custom_domain_speech_takes_plain_entra_tokens_and_batch_refuses_the_aad_form() {
    let emu = emulator().await;
    let res = emu
        .add_service(ResourceKind::AiServices, options(None))
        .await
        .unwrap();
    let entra = emu.mint(&MintSpec::new(COG));
    let aad = format!("aad#{RID}#{entra}");

    for auth in [bearer(&entra), bearer(&aad)] {
        let (status, _, _) =
            send(tts(&res, "/tts/cognitiveservices/v1").header("authorization", auth)).await;
        assert_eq!(status, 200);
    }
    // Key auth is off on this resource.
    let (status, _, body) =
        send(tts(&res, "/tts/cognitiveservices/v1").header("ocp-apim-subscription-key", KEY)).await;
    assert_eq!((status, body.as_str()), (401, ""));
    let (status, _, body) = send(
        client()
            .post(at(&res, "/sts/v1.0/issueToken"))
            .header("ocp-apim-subscription-key", KEY),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        parse(&body),
        json!({"error":{"code":"AuthenticationTypeDisabled","message":"Key based authentication is disabled for this resource."}})
    );
    // issueToken takes an Entra token on the custom domain; its token works for TTS.
    let (status, _, token) = send(
        client()
            .post(at(&res, "/sts/v1.0/issueToken"))
            .header("authorization", bearer(&entra)),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) =
        send(tts(&res, "/tts/cognitiveservices/v1").header("authorization", bearer(&token))).await;
    assert_eq!(status, 200);
    // Short audio under /stt.
    let (status, _, body) = send(
        client()
            .post(at(&res, "/stt/speech/recognition/conversation/cognitiveservices/v1?language=de-DE&format=detailed"))
            .header("authorization", bearer(&entra))
            .body(vec![1u8; 64]),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        parse(&body)["NBest"][0]["Display"],
        "Emulated transcription of 64 bytes of de-DE audio."
    );

    // Batch transcription: plain Entra token yes, aad# form no.
    let create = json!({"contentUrls": ["https://example.invalid/a.wav"], "locale": "en-US", "displayName": "t"});
    let (status, _, body) = send(
        client()
            .post(at(&res, "/speechtotext/v3.2/transcriptions"))
            .header("authorization", bearer(&aad))
            .json(&create),
    )
    .await;
    assert_eq!((status, parse(&body)), (401, audience_401()));
    let (status, headers, body) = send(
        client()
            .post(at(&res, "/speechtotext/v3.2/transcriptions"))
            .header("authorization", bearer(&entra))
            .json(&create),
    )
    .await;
    assert_eq!(status, 201);
    let created = parse(&body);
    assert_eq!(created["status"], "NotStarted");
    let this = created["self"].as_str().unwrap().to_owned();
    assert!(
        this.starts_with(&at(&res, "/speechtotext/v3.2/transcriptions/")),
        "{this}"
    );
    assert_eq!(headers["location"], this.as_str());
    let get = |url: String| client().get(url).header("authorization", bearer(&entra));
    let (_, _, body) = send(get(this.clone())).await;
    assert_eq!(parse(&body)["status"], "Running");
    let (_, _, body) = send(get(this.clone())).await;
    assert_eq!(parse(&body)["status"], "Succeeded");
    let files = parse(
        &send(get(parse(&body)["links"]["files"]
            .as_str()
            .unwrap()
            .to_owned()))
        .await
        .2,
    );
    let content = files["values"][0]["links"]["contentUrl"].as_str().unwrap();
    assert!(
        content.starts_with("https://emulatorstore.blob.core.windows.net/transcriptions/"),
        "{content}"
    );
    assert!(content.contains("&sig="));
    let (status, _, body) = send(get(at(&res, "/speechtotext/v3.2/transcriptions/nope"))).await;
    assert_eq!(
        (status, parse(&body)["code"].as_str()),
        (404, Some("NotFound"))
    );
    // The 2024-11-15 form.
    let (status, _, body) = send(
        client()
            .post(at(
                &res,
                "/speechtotext/transcriptions:submit?api-version=2024-11-15",
            ))
            .header("authorization", bearer(&entra))
            .json(&create),
    )
    .await;
    assert_eq!(status, 201);
    assert!(
        parse(&body)["self"]
            .as_str()
            .unwrap()
            .ends_with("?api-version=2024-11-15")
    );
    let (status, _, body) = send(
        client()
            .post(at(&res, "/speechtotext/v3.2/transcriptions"))
            .header("authorization", bearer(&entra))
            .json(&json!({"locale": "en-US"})),
    )
    .await;
    assert_eq!(
        (status, parse(&body)["code"].as_str()),
        (400, Some("InvalidPayload"))
    );

    // Other paths of the custom domain are the OpenAI data plane.
    let (status, _, _) = send(
        client()
            .post(at(
                &res,
                "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
            ))
            .header("authorization", bearer(&entra))
            .json(&json!({"messages":[{"role":"user","content":"hi"}]})),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn issued_tokens_expire_and_belong_to_one_resource() {
    let emu = emulator().await;
    let short = emu
        .add_service(
            ResourceKind::SpeechRegional,
            ServiceOptions {
                issued_token_lifetime: Duration::from_secs(1),
                ..options(Some(KEY))
            },
        )
        .await
        .unwrap();
    let other = emu
        .add_service(
            ResourceKind::SpeechRegional,
            ServiceOptions {
                resource_id: format!("{RID}-2"),
                ..options(Some(KEY))
            },
        )
        .await
        .unwrap();
    let token = issue_token(&short, KEY).await;
    let (status, _, _) =
        send(tts(&other, "/cognitiveservices/v1").header("authorization", bearer(&token))).await;
    assert_eq!(status, 401);
    let (status, _, _) =
        send(tts(&short, "/cognitiveservices/v1").header("authorization", bearer(&token))).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, _, _) =
        send(tts(&short, "/cognitiveservices/v1").header("authorization", bearer(&token))).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn speech_websockets_check_credentials_before_the_upgrade() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    use tokio_tungstenite::tungstenite::{Error as WsError, Message};

    let emu = emulator().await;
    let regional = emu
        .add_service(ResourceKind::SpeechRegional, options(None))
        .await
        .unwrap();
    let custom = emu
        .add_service(ResourceKind::AiServices, options(None))
        .await
        .unwrap();
    let entra = emu.mint(&MintSpec::new(COG));
    let ws = |base: &url::Url, path: &str, auth: String| {
        let url = format!("ws://{}{path}", base.authority());
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("authorization", auth.parse().unwrap());
        req
    };
    let stt = "/speech/recognition/conversation/cognitiveservices/v1?language=en-US";
    let (mut socket, _) =
        tokio_tungstenite::connect_async(ws(&regional, stt, bearer(&format!("aad#{RID}#{entra}"))))
            .await
            .unwrap();
    socket.send(Message::text("speech.config")).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::text("speech.config")
    );
    socket.close(None).await.unwrap();
    match tokio_tungstenite::connect_async(ws(&regional, stt, bearer(&entra))).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    let (socket, _) =
        tokio_tungstenite::connect_async(ws(&custom, &format!("/stt{stt}"), bearer(&entra)))
            .await
            .unwrap();
    drop(socket);
    let (socket, _) = tokio_tungstenite::connect_async(ws(
        &custom,
        "/tts/cognitiveservices/websocket/v1",
        bearer(&entra),
    ))
    .await
    .unwrap();
    drop(socket);
}

fn translate(base: &url::Url, path: &str) -> reqwest::RequestBuilder {
    client()
        .post(at(base, path))
        .json(&json!([{"Text": "Hello, friend."}]))
}

fn translator_401() -> Value {
    json!({"error":{"code":401000,"message":"The request is not authorized because credentials are missing or invalid."}})
}

#[tokio::test]
async fn translator_global_wants_resource_id_and_region_beside_an_entra_token() {
    let emu = emulator().await;
    let global = emu
        .add_service(ResourceKind::TranslatorGlobal, options(Some(KEY)))
        .await
        .unwrap();
    let entra = emu.mint(&MintSpec::new(COG));
    let path = "/translate?api-version=3.0&to=de";

    let (status, headers, body) = send(
        translate(&global, path)
            .header("authorization", bearer(&entra))
            .header("ocp-apim-resourceid", RID)
            .header("ocp-apim-subscription-region", "westeurope"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-emulator-auth"], "entra");
    assert_eq!(
        parse(&body),
        json!([{"detectedLanguage":{"language":"en","score":1.0},"translations":[{"text":"[de] Hello, friend.","to":"de"}]}])
    );
    let seen = emu.requests().pop().unwrap();
    assert_eq!(seen.resource_id_header.as_deref(), Some(RID));
    assert_eq!(seen.region_header.as_deref(), Some("westeurope"));

    // Without the resource id, with another, or without the region: 401000.
    for (rid, region) in [
        (None, Some("westeurope")),
        (Some("/subscriptions/x"), Some("westeurope")),
        (Some(RID), None),
        (Some(RID), Some("eastus")),
    ] {
        let mut req = translate(&global, path).header("authorization", bearer(&entra));
        if let Some(rid) = rid {
            req = req.header("ocp-apim-resourceid", rid);
        }
        if let Some(region) = region {
            req = req.header("ocp-apim-subscription-region", region);
        }
        let (status, _, body) = send(req).await;
        assert_eq!(
            (status, parse(&body)),
            (401, translator_401()),
            "{rid:?} {region:?}"
        );
    }
    // The aad# form is Speech's, not Translator's.
    let (status, _, _) = send(
        translate(&global, path)
            .header("authorization", bearer(&format!("aad#{RID}#{entra}")))
            .header("ocp-apim-resourceid", RID)
            .header("ocp-apim-subscription-region", "westeurope"),
    )
    .await;
    assert_eq!(status, 401);

    // Keys: a regional resource's key needs its region; the query form is read too.
    let (status, _, _) = send(
        translate(&global, path)
            .header("ocp-apim-subscription-key", KEY)
            .header("ocp-apim-subscription-region", "WestEurope"),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, body) =
        send(translate(&global, path).header("ocp-apim-subscription-key", KEY)).await;
    assert_eq!((status, parse(&body)), (401, translator_401()));
    let (status, _, _) = send(translate(
        &global,
        &format!("{path}&Subscription-Key={KEY}&Subscription-Region=westeurope"),
    ))
    .await;
    assert_eq!(status, 200);
    let seen = emu.requests().pop().unwrap();
    assert_eq!(seen.query_credentials, vec!["Subscription-Key".to_owned()]);
    assert!(!format!("{seen:?}").contains(KEY));

    // A token from issueToken needs no more headers.
    let token = issue_token(&global, KEY).await;
    let (status, _, _) =
        send(translate(&global, path).header("authorization", bearer(&token))).await;
    assert_eq!(status, 200);

    // Request checks, in Translator's codes.
    let auth = |r: reqwest::RequestBuilder| r.header("authorization", bearer(&token));
    let (status, _, body) = send(auth(translate(&global, "/translate?to=de"))).await;
    assert_eq!(
        (status, parse(&body)["error"]["code"].as_u64()),
        (400, Some(400021))
    );
    let (status, _, body) = send(auth(translate(&global, "/translate?api-version=3.0"))).await;
    assert_eq!(
        (status, parse(&body)["error"]["code"].as_u64()),
        (400, Some(400036))
    );
    let (status, _, body) = send(auth(client().post(at(&global, path)).body("not json"))).await;
    assert_eq!(
        (status, parse(&body)["error"]["code"].as_u64()),
        (400, Some(400074))
    );
    let (status, _, body) = send(auth(
        client()
            .post(at(&global, "/detect?api-version=3.0"))
            .json(&json!([{"text": "Guten Tag und danke"}])),
    ))
    .await;
    assert_eq!(
        (status, parse(&body)[0]["language"].as_str()),
        (200, Some("de"))
    );
    // The languages list needs no credential.
    let (status, _, body) = send(client().get(at(&global, "/languages?api-version=3.0"))).await;
    assert_eq!(status, 200);
    assert_eq!(parse(&body)["translation"]["de"]["name"], "German");
}

#[tokio::test]
async fn translator_on_a_custom_domain_takes_the_bearer_alone_and_a_global_resource_needs_no_region()
 {
    let emu = emulator().await;
    let res = emu
        .add_service(ResourceKind::AiServices, options(None))
        .await
        .unwrap();
    let entra = emu.mint(&MintSpec::new(COG));
    let (status, _, body) = send(
        translate(
            &res,
            "/translator/text/v3.0/translate?api-version=3.0&to=fr&from=en",
        )
        .header("authorization", bearer(&entra)),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        parse(&body),
        json!([{"translations":[{"text":"[fr] Hello, friend.","to":"fr"}]}])
    );
    let (status, _, body) = send(
        translate(
            &res,
            "/translator/text/v3.0/translate?api-version=3.0&to=fr",
        )
        .header("ocp-apim-subscription-key", KEY),
    )
    .await;
    assert_eq!((status, parse(&body)), (401, translator_401()));

    let global_resource = emu
        .add_service(
            ResourceKind::TranslatorGlobal,
            ServiceOptions {
                region: "global".into(),
                ..options(Some(KEY))
            },
        )
        .await
        .unwrap();
    let (status, _, _) = send(
        translate(&global_resource, "/translate?api-version=3.0&to=de")
            .header("authorization", bearer(&entra))
            .header("ocp-apim-resourceid", format!("{RID}/")),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = send(
        translate(&global_resource, "/translate?api-version=3.0&to=de")
            .header("ocp-apim-subscription-key", KEY),
    )
    .await;
    assert_eq!(status, 200);
}

async fn search_service(emu: &Emulator, extra: ServiceOptions) -> url::Url {
    emu.add_service(ResourceKind::Search, extra).await.unwrap()
}

const SV: &str = "api-version=2024-07-01";

#[tokio::test]
async fn search_takes_its_own_audience_and_api_keys_and_refuses_cognitive_tokens() {
    let emu = emulator().await;
    let search = search_service(
        &emu,
        ServiceOptions {
            key: Some("admin-key".into()),
            query_key: Some("query-key".into()),
            ..ServiceOptions::default()
        },
    )
    .await;
    let index = json!({"name": "hotels", "fields": [{"name": "id", "type": "Edm.String", "key": true}, {"name": "description", "type": "Edm.String"}]});
    let put = |key: &str| {
        client()
            .put(at(&search, &format!("/indexes/hotels?{SV}")))
            .header("api-key", key)
            .json(&index)
    };

    let (status, _, body) = send(put("query-key")).await;
    assert_eq!((status, body.as_str()), (403, ""));
    let (status, _, body) = send(put("wrong")).await;
    assert_eq!((status, body.as_str()), (403, ""));
    let (status, _, body) = send(put("admin-key")).await;
    assert_eq!(status, 201);
    assert_eq!(parse(&body)["name"], "hotels");
    let (status, _, _) = send(put("admin-key")).await;
    assert_eq!(status, 200);

    let cog = emu.mint(&MintSpec::new(COG));
    let good = emu.mint(&MintSpec::new(SEARCH));
    let get = |auth: (&str, String)| {
        client()
            .get(at(&search, &format!("/indexes('hotels')?{SV}")))
            .header(auth.0, auth.1)
    };
    let (status, headers, body) = send(get(("authorization", bearer(&cog)))).await;
    assert_eq!((status, body.as_str()), (401, ""));
    let challenge = headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer authorization_uri=\"https://login.microsoftonline.com/"),
        "{challenge}"
    );
    assert!(
        challenge.contains("resource_id=\"https://search.azure.com\""),
        "{challenge}"
    );
    let (status, headers, _) = send(get(("authorization", bearer(&good)))).await;
    assert_eq!(
        (status, &headers["x-emulator-auth"]),
        (
            200,
            &"entra".parse::<reqwest::header::HeaderValue>().unwrap()
        )
    );
    let (status, _, _) = send(get(("api-key", "query-key".into()))).await;
    assert_eq!(status, 200);
    let (status, _, _) = send(client().get(at(&search, &format!("/indexes('hotels')?{SV}")))).await;
    assert_eq!(status, 401);
    let (status, _, body) = send(
        client()
            .get(at(&search, "/indexes('hotels')"))
            .header("api-key", "admin-key"),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        parse(&body),
        json!({"error":{"code":"","message":"The api-version query parameter (?api-version=) is required for all requests."}})
    );
    let (status, _, body) = send(
        client()
            .get(at(&search, &format!("/indexes('nope')?{SV}")))
            .header("api-key", "admin-key"),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        parse(&body),
        json!({"error":{"code":"","message":"No index with the name 'nope' was found in the service 'emulator-search'."}})
    );
    assert_eq!(
        emu.requests()[4].auth,
        AuthForm::Bearer {
            audience: Some(COG.into())
        }
    );
    assert_eq!(emu.requests()[0].auth, AuthForm::ApiKey);

    // The 403 failure mode, and another cloud's audience.
    let strict = search_service(
        &emu,
        ServiceOptions {
            search_auth_failure: SearchAuthFailure::Http403,
            ..ServiceOptions::default()
        },
    )
    .await;
    let (status, headers, _) = send(
        client()
            .get(at(&strict, &format!("/indexes?{SV}")))
            .header("authorization", bearer(&cog)),
    )
    .await;
    assert_eq!(status, 403);
    assert!(!headers.contains_key("www-authenticate"));
    let gov = Emulator::start(EmulatorConfig {
        cloud: Cloud::Usgov,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let gov_search = search_service(&gov, ServiceOptions::default()).await;
    let (status, _, _) = send(
        client()
            .get(at(&gov_search, &format!("/indexes?{SV}")))
            .header(
                "authorization",
                bearer(&gov.mint(&MintSpec::new("https://search.azure.us"))),
            ),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = send(
        client()
            .get(at(&gov_search, &format!("/indexes?{SV}")))
            .header("authorization", bearer(&gov.mint(&MintSpec::new(SEARCH)))),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn search_keeps_documents_and_pages_with_next_page_parameters() {
    let emu = emulator().await;
    let search = search_service(
        &emu,
        ServiceOptions {
            key: Some("k".into()),
            page_size: 3,
            ..ServiceOptions::default()
        },
    )
    .await;
    let req = |m: reqwest::Method, path: &str| {
        client()
            .request(m, at(&search, path))
            .header("api-key", "k")
    };
    let index = json!({"name": "h", "fields": [{"name": "id", "type": "Edm.String", "key": true}, {"name": "text", "type": "Edm.String"}]});
    let (status, _, _) =
        send(req(reqwest::Method::POST, &format!("/indexes?{SV}")).json(&index)).await;
    assert_eq!(status, 201);
    let (status, _, body) =
        send(req(reqwest::Method::POST, &format!("/indexes?{SV}")).json(&index)).await;
    assert_eq!(
        (status, parse(&body)["error"]["message"].as_str()),
        (
            409,
            Some("Cannot create index 'h' because it already exists.")
        )
    );
    let docs: Vec<Value> = (0..7)
        .map(|i| json!({"@search.action": "upload", "id": i.to_string(), "text": if i % 2 == 0 { "blue sea" } else { "red sky" }}))
        .collect();
    let (status, _, body) = send(
        req(
            reqwest::Method::POST,
            &format!("/indexes('h')/docs/search.index?{SV}"),
        )
        .json(&json!({"value": docs})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        parse(&body)["value"][0],
        json!({"key": "0", "status": true, "errorMessage": null, "statusCode": 201})
    );
    let (status, _, body) = send(req(reqwest::Method::POST, &format!("/indexes/h/docs/index?{SV}")).json(&json!({"value": [{"@search.action": "merge", "id": "99", "text": "x"}, {"@search.action": "merge", "id": "1", "text": "red sky blue"}]}))).await;
    assert_eq!(status, 207);
    let results = parse(&body)["value"].clone();
    assert_eq!(results[0]["statusCode"], 404);
    assert_eq!(results[1]["statusCode"], 200);

    // POST search: three per page, the next page by posting @search.nextPageParameters.
    let base = search.as_str().trim_end_matches('/');
    let mut body = json!({"search": "*", "count": true});
    let mut keys = Vec::new();
    let mut pages = 0;
    loop {
        let (status, _, text) = send(
            req(
                reqwest::Method::POST,
                &format!("/indexes('h')/docs/search.post.search?{SV}"),
            )
            .json(&body),
        )
        .await;
        assert_eq!(status, 200, "{text}");
        let page = parse(&text);
        pages += 1;
        assert_eq!(page["@odata.count"], 7);
        assert_eq!(
            page["@odata.context"],
            format!("{base}/indexes('h')/$metadata#docs(*)")
        );
        keys.extend(
            page["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["id"].as_str().unwrap().to_owned()),
        );
        if page.get("@search.nextPageParameters").is_none() {
            assert!(page.get("@odata.nextLink").is_none());
            break;
        }
        assert_eq!(
            page["@odata.nextLink"],
            format!("{base}/indexes('h')/docs/search.post.search?{SV}")
        );
        body = page["@search.nextPageParameters"].clone();
        assert_eq!(body["skip"], pages * 3);
    }
    assert_eq!(pages, 3);
    assert_eq!(keys, ["0", "1", "2", "3", "4", "5", "6"]);

    // The other search forms.
    let (_, _, text) = send(
        req(
            reqwest::Method::POST,
            &format!("/indexes/h/docs/search?{SV}"),
        )
        .json(&json!({"search": "blue", "select": "id", "top": 10})),
    )
    .await;
    let page = parse(&text);
    assert_eq!(page["value"][0], json!({"id": "0", "@search.score": 1.0}));
    assert_eq!(page["value"].as_array().unwrap().len(), 3);
    assert!(page.get("@odata.nextLink").is_some());
    let (_, _, text) = send(req(
        reqwest::Method::GET,
        &format!("/indexes/h/docs?{SV}&search=*&$top=4"),
    ))
    .await;
    let page = parse(&text);
    assert_eq!(page["value"].as_array().unwrap().len(), 3);
    let next = page["@odata.nextLink"].as_str().unwrap();
    assert!(
        next.starts_with(&format!("{base}/indexes/h/docs?")),
        "{next}"
    );
    assert!(
        next.contains("%24skip=3") && next.contains("%24top=1"),
        "{next}"
    );
    let (_, _, text) = send(client().get(next).header("api-key", "k")).await;
    assert_eq!(parse(&text)["value"].as_array().unwrap().len(), 1);

    let (status, _, text) = send(req(
        reqwest::Method::GET,
        &format!("/indexes('h')/docs/$count?{SV}"),
    ))
    .await;
    assert_eq!((status, text.as_str()), (200, "7"));
    let (status, _, text) = send(req(
        reqwest::Method::GET,
        &format!("/indexes('h')/docs('3')?{SV}"),
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(parse(&text)["text"], "red sky");
    let (status, _, _) = send(req(
        reqwest::Method::GET,
        &format!("/indexes/h/docs/4?{SV}"),
    ))
    .await;
    assert_eq!(status, 200);
    let (status, _, text) = send(req(
        reqwest::Method::GET,
        &format!("/indexes/h/docs/nope?{SV}"),
    ))
    .await;
    assert_eq!((status, text.as_str()), (404, ""));
    let (status, _, _) = send(req(reqwest::Method::DELETE, &format!("/indexes/h?{SV}"))).await;
    assert_eq!(status, 204);
    let (status, _, _) = send(req(
        reqwest::Method::GET,
        &format!("/indexes/h/docs/$count?{SV}"),
    ))
    .await;
    assert_eq!(status, 404);
}

const DI: &str =
    "/documentintelligence/documentModels/prebuilt-read:analyze?api-version=2024-11-30";

#[tokio::test]
async fn document_intelligence_answers_202_with_an_operation_location_on_the_callers_host() {
    let emu = emulator().await;
    let res = emu
        .add_service(
            ResourceKind::AiServices,
            ServiceOptions {
                polls_before_done: 2,
                ..options(Some(KEY))
            },
        )
        .await
        .unwrap();
    let key = |r: reqwest::RequestBuilder| r.header("ocp-apim-subscription-key", KEY);
    let (status, headers, body) = send(key(client()
        .post(at(&res, DI))
        .json(&json!({"urlSource": "https://example.invalid/a.pdf"}))))
    .await;
    assert_eq!((status, body.as_str()), (202, ""));
    let location = headers["operation-location"].to_str().unwrap().to_owned();
    let id = headers["apim-request-id"].to_str().unwrap().to_owned();
    assert_eq!(
        location,
        at(
            &res,
            &format!(
                "/documentintelligence/documentModels/prebuilt-read/analyzeResults/{id}?api-version=2024-11-30"
            )
        )
    );
    for _ in 0..2 {
        let (status, _, body) = send(key(client().get(&location))).await;
        assert_eq!(status, 200);
        assert_eq!(parse(&body)["status"], "running");
    }
    let (_, _, body) = send(key(client().get(&location))).await;
    let done = parse(&body);
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["analyzeResult"]["modelId"], "prebuilt-read");
    assert_eq!(done["analyzeResult"]["apiVersion"], "2024-11-30");
    assert!(!body.contains("blob.core.windows.net"));

    // Behind a proxy the Host header names the proxy, and so does Operation-Location.
    let (status, headers, _) = send(key(client()
        .post(at(&res, DI))
        .header("host", "proxy.example:8443")
        .header("content-type", "application/octet-stream")
        .body(vec![7u8; 100])))
    .await;
    assert_eq!(status, 202);
    assert!(headers["operation-location"].to_str().unwrap().starts_with("http://proxy.example:8443/documentintelligence/documentModels/prebuilt-read/analyzeResults/"));

    // Refusals and request checks.
    let (status, _, body) = send(key(client().post(at(&res, DI)).json(&json!({})))).await;
    assert_eq!(status, 400);
    assert_eq!(
        parse(&body)["error"]["innererror"]["code"],
        "InvalidContent"
    );
    let (status, _, body) = send(key(client()
        .post(at(
            &res,
            "/documentintelligence/documentModels/nope:analyze?api-version=2024-11-30",
        ))
        .json(&json!({"base64Source": "AAAA"}))))
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        parse(&body),
        json!({"error":{"code":"NotFound","message":"Resource not found.","innererror":{"code":"ModelNotFound","message":"The requested model 'nope' was not found."}}})
    );
    let search_token = emu.mint(&MintSpec::new(SEARCH));
    let (status, _, body) = send(
        client()
            .post(at(&res, DI))
            .header("authorization", bearer(&search_token))
            .json(&json!({"base64Source": "AAAA"})),
    )
    .await;
    assert_eq!((status, parse(&body)), (401, audience_401()));
    let (status, _, body) = send(
        client()
            .post(at(&res, DI))
            .header("ocp-apim-subscription-key", "wrong")
            .json(&json!({"base64Source": "AAAA"})),
    )
    .await;
    assert_eq!((status, parse(&body)), (401, invalid_key_401()));
    let entra = emu.mint(&MintSpec::new(COG));
    let (status, _, _) = send(
        client()
            .post(at(
                &res,
                "/formrecognizer/documentModels/prebuilt-layout:analyze?api-version=2023-07-31",
            ))
            .header("authorization", bearer(&entra))
            .json(&json!({"base64Source": "AAAA"})),
    )
    .await;
    assert_eq!(status, 202);
    let (status, _, _) = send(key(client()
        .post(at(
            &res,
            "/documentintelligence/documentModels/prebuilt-read:analyze",
        ))
        .json(&json!({"base64Source": "AAAA"}))))
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn document_intelligence_lists_models_in_pages_and_can_point_elsewhere() {
    let emu = emulator().await;
    let res = emu
        .add_service(
            ResourceKind::AiServices,
            ServiceOptions {
                page_size: 3,
                polls_before_done: 0,
                ..options(Some(KEY))
            },
        )
        .await
        .unwrap();
    let key = |r: reqwest::RequestBuilder| r.header("ocp-apim-subscription-key", KEY);
    let mut url = at(
        &res,
        "/documentintelligence/documentModels?api-version=2024-11-30",
    );
    let mut ids = Vec::new();
    loop {
        let (status, _, body) = send(key(client().get(&url))).await;
        assert_eq!(status, 200);
        let page = parse(&body);
        ids.extend(
            page["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["modelId"].as_str().unwrap().to_owned()),
        );
        match page["nextLink"].as_str() {
            Some(next) => {
                assert!(
                    next.starts_with(&at(&res, "/documentintelligence/documentModels?")),
                    "{next}"
                );
                url = next.to_owned();
            }
            None => break,
        }
    }
    assert_eq!(ids.len(), 8);
    assert_eq!(ids[0], "prebuilt-read");

    let elsewhere = emu
        .add_service(
            ResourceKind::AiServices,
            ServiceOptions {
                foreign_links: true,
                polls_before_done: 0,
                ..options(Some(KEY))
            },
        )
        .await
        .unwrap();
    let (status, headers, _) = send(key(client()
        .post(at(&elsewhere, DI))
        .json(&json!({"base64Source": "AAAA"}))))
    .await;
    assert_eq!(status, 202);
    let location = headers["operation-location"].to_str().unwrap();
    let foreign_prefix = format!(
        "https://{FOREIGN_HOST}/documentintelligence/documentModels/prebuilt-read/analyzeResults/"
    );
    assert!(location.starts_with(&foreign_prefix), "{location}");
    // The result is still served on the emulator's own path.
    let own = at(
        &elsewhere,
        location
            .strip_prefix(&format!("https://{FOREIGN_HOST}"))
            .unwrap(),
    );
    let (status, _, body) = send(key(client().get(own))).await;
    assert_eq!(status, 200);
    let source =
        parse(&body)["analyzeResult"]["documents"][0]["fields"]["SourceUrl"]["valueString"].clone();
    let source = source.as_str().unwrap();
    assert!(
        source.starts_with("https://emulatorstore.blob.core.windows.net/analyze/")
            && source.contains("?sv=")
            && source.contains("&sig="),
        "{source}"
    );
    let (_, _, body) = send(key(client().get(at(
        &elsewhere,
        "/documentintelligence/documentModels?api-version=2024-11-30",
    ))))
    .await;
    assert!(
        parse(&body)["value"][0]["azureBlobSource"]["containerUrl"]
            .as_str()
            .unwrap()
            .contains("blob.core.windows.net")
    );
}

#[tokio::test]
async fn language_content_safety_and_vision_answer_on_the_custom_domain() {
    let emu = emulator().await;
    let res = emu
        .add_service(ResourceKind::AiServices, options(Some(KEY)))
        .await
        .unwrap();
    let key = |r: reqwest::RequestBuilder| r.header("ocp-apim-subscription-key", KEY);
    let docs = json!({"documents": [{"id": "1", "text": "The emulator answers quickly", "language": "en"}]});
    let (status, _, body) = send(key(client()
        .post(at(&res, "/language/:analyze-text?api-version=2023-04-01"))
        .json(&json!({"kind": "SentimentAnalysis", "analysisInput": docs}))))
    .await;
    assert_eq!(status, 200);
    let v = parse(&body);
    assert_eq!(v["kind"], "SentimentAnalysisResults");
    assert_eq!(v["results"]["documents"][0]["sentiment"], "neutral");
    let (status, _, body) = send(key(client()
        .post(at(&res, "/language/:analyze-text?api-version=2023-04-01"))
        .json(&json!({"kind": "Nope", "analysisInput": docs}))))
    .await;
    assert_eq!(
        (status, parse(&body)["error"]["code"].as_str()),
        (400, Some("InvalidRequest"))
    );

    let (status, headers, _) = send(key(client().post(at(&res, "/language/analyze-text/jobs?api-version=2023-04-01")).json(&json!({"analysisInput": docs, "tasks": [{"kind": "KeyPhraseExtraction", "taskName": "k"}]})))).await;
    assert_eq!(status, 202);
    let location = headers["operation-location"].to_str().unwrap();
    assert!(
        location.starts_with(&at(&res, "/language/analyze-text/jobs/"))
            && location.ends_with("?api-version=2023-04-01"),
        "{location}"
    );
    let (_, _, body) = send(key(client().get(location))).await;
    assert_eq!(parse(&body)["status"], "running");
    let (_, _, body) = send(key(client().get(location))).await;
    let job = parse(&body);
    assert_eq!(job["status"], "succeeded");
    assert_eq!(
        job["tasks"]["items"][0]["results"]["documents"][0]["keyPhrases"],
        json!(["emulator", "answers", "quickly"])
    );

    let (status, _, body) = send(key(client()
        .post(at(
            &res,
            "/contentsafety/text:analyze?api-version=2024-09-01",
        ))
        .json(&json!({"text": "hello"}))))
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        parse(&body)["categoriesAnalysis"][0],
        json!({"category": "Hate", "severity": 0})
    );
    let (status, _, body) = send(key(client()
        .post(at(
            &res,
            "/contentsafety/text:analyze?api-version=2024-09-01",
        ))
        .json(&json!({}))))
    .await;
    assert_eq!(
        (status, parse(&body)["error"]["code"].as_str()),
        (400, Some("InvalidRequestBody"))
    );
    let (status, _, body) = send(key(client()
        .post(at(&res, "/contentsafety/text:analyze"))
        .json(&json!({"text": "x"}))))
    .await;
    assert_eq!(
        (status, parse(&body)),
        (
            404,
            json!({"error":{"code":"404","message":"Resource not found"}})
        )
    );

    let (status, _, body) = send(key(client()
        .post(at(
            &res,
            "/computervision/imageanalysis:analyze?api-version=2024-02-01&features=caption,read",
        ))
        .json(&json!({"url": "https://example.invalid/a.png"}))))
    .await;
    assert_eq!(status, 200);
    let v = parse(&body);
    assert_eq!(v["captionResult"]["text"], "an emulated picture");
    assert!(v["readResult"].is_object());
    let entra = emu.mint(&MintSpec::new(COG));
    let (status, _, _) = send(
        client()
            .post(at(
                &res,
                "/contentsafety/text:analyze?api-version=2024-09-01",
            ))
            .header("authorization", bearer(&entra))
            .json(&json!({"text": "hi"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, body) = send(
        client()
            .post(at(
                &res,
                "/contentsafety/text:analyze?api-version=2024-09-01",
            ))
            .json(&json!({"text": "hi"})),
    )
    .await;
    assert_eq!((status, parse(&body)), (401, audience_401()));
}

#[tokio::test]
async fn the_request_log_names_credential_query_parameters_and_the_control_api_opens_services() {
    let emu = emulator().await;
    let resp = client()
        .post(at(&emu.url(), "/emulator/services"))
        .body(json!({"kind": "search", "options": {"key": "k", "page_size": 2}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let url = url::Url::parse(parse(&resp.text().await.unwrap())["url"].as_str().unwrap()).unwrap();
    let (status, _, _) = send(
        client()
            .get(at(&url, &format!("/indexes?{SV}&api-key=leaked")))
            .header("api-key", "k"),
    )
    .await;
    assert_eq!(status, 200);
    let seen = emu.requests().pop().unwrap();
    assert_eq!(seen.query_credentials, vec!["api-key".to_owned()]);
    assert_eq!(seen.auth, AuthForm::ApiKey);
    let shown = format!("{seen:?}");
    assert!(
        !shown.contains("leaked") && shown.contains("api-key=<redacted>"),
        "{shown}"
    );
    let (status, _, _) = send(
        client()
            .get(at(&url, &format!("/indexes?{SV}")))
            .header("api-key", "k"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(emu.requests().pop().unwrap().query_credentials.is_empty());

    let resp = client()
        .post(at(&emu.url(), "/emulator/services"))
        .body(json!({"kind": "nope"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    emu.shutdown().await;
}

#[tokio::test]
async fn the_services_note_whose_verified_entra_token_reached_them() {
    const USER: &str = "11111111-2222-4333-8444-555555555555";
    const SPA: &str = "99999999-0000-4000-8000-000000000001";
    let emu = emulator().await;
    let user = |aud: &str| {
        emu.mint(&MintSpec {
            oid: Some(USER.into()),
            appid: Some(SPA.into()),
            scp: Some("user_impersonation".into()),
            version: TokenVersion::V2,
            ..MintSpec::new(aud)
        })
    };
    let forged = emu.mint(&MintSpec {
        oid: Some("forged".into()),
        bad_signature: true,
        ..MintSpec::new(COG)
    });
    let search = search_service(&emu, ServiceOptions::default()).await;
    let res = emu
        .add_service(ResourceKind::AiServices, options(Some(KEY)))
        .await
        .unwrap();
    let speech = emu
        .add_service(ResourceKind::SpeechRegional, options(Some(KEY)))
        .await
        .unwrap();
    let global = emu
        .add_service(ResourceKind::TranslatorGlobal, options(Some(KEY)))
        .await
        .unwrap();
    let indexes = at(&search, &format!("/indexes?{SV}"));
    let language = at(&res, "/language/:analyze-text?api-version=2023-04-01");
    let analyze = || {
        client().post(&language).json(&json!({"kind": "SentimentAnalysis", "analysisInput": {"documents": [{"id": "1", "text": "hi", "language": "en"}]}}))
    };
    let translation = "/translate?api-version=3.0&to=de";

    let calls = [
        // Search with its own audience, then with a token for another audience (still noted, as
        // the OpenAI data plane notes it), then a forged one (not noted).
        client()
            .get(&indexes)
            .header("authorization", bearer(&user(SEARCH))),
        client()
            .get(&indexes)
            .header("authorization", bearer(&user(COG))),
        client()
            .get(&indexes)
            .header("authorization", bearer(&forged)),
        // The multi-service resource: Language, and the OpenAI data plane behind it.
        analyze().header("authorization", bearer(&user(COG))),
        analyze().header("ocp-apim-subscription-key", KEY),
        client()
            .post(at(
                &res,
                "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
            ))
            .header("authorization", bearer(&user(COG)))
            .json(&json!({"messages": [{"role": "user", "content": "hi"}]})),
        // Speech's aad# form on a regional host.
        tts(&speech, "/cognitiveservices/v1")
            .header("authorization", bearer(&format!("aad#{RID}#{}", user(COG)))),
        // Translator's global host with an Entra token.
        translate(&global, translation)
            .header("authorization", bearer(&user(COG)))
            .header("ocp-apim-resourceid", RID)
            .header("ocp-apim-subscription-region", "westeurope"),
    ];
    let mut statuses = Vec::new();
    for call in calls {
        statuses.push(send(call).await.0);
    }
    assert_eq!(statuses, vec![200, 401, 401, 200, 200, 200, 200, 200]);

    let noted = (Some(USER), Some(SPA), Some("user_impersonation"));
    let seen = emu.requests();
    let facts: Vec<_> = seen
        .iter()
        .map(|r| {
            (
                r.bearer_oid.as_deref(),
                r.bearer_app_id.as_deref(),
                r.bearer_scp.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        facts,
        vec![
            noted,
            noted,
            (None, None, None),
            noted,
            (None, None, None),
            noted,
            noted,
            noted,
        ]
    );
    emu.shutdown().await;
}
