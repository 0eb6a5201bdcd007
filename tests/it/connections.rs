//! Client connections that say too little: `server.header_read_timeout_secs` closes a
//! connection that sends no whole request head in time — silent from the start, stalled in
//! the middle of a head, or idle on keep-alive after its last answer — and an HTTP/2 one with
//! no stream open for as long; one that keeps sending requests, or holds a long stream, stays
//! open.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_millis(600);

async fn with_header_timeout() -> Harness {
    with_header_timeout_on(emulator().await).await
}

async fn with_header_timeout_on(emu: azure_emulator::Emulator) -> Harness {
    let text = base_config(&emu.url()).replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nheader_read_timeout_secs = 0.6",
    );
    proxy(emu, &text).await
}

/// The proxy with the 0.6 s limit, in front of Azure streaming `events` chunks 150 ms apart.
async fn with_streams_of(events: usize) -> Harness {
    let emu = emulator_with(azure_emulator::EmulatorConfig {
        stream_events: events,
        stream_interval: Duration::from_millis(150),
        ..azure_emulator::EmulatorConfig::default()
    })
    .await;
    with_header_timeout_on(emu).await
}

/// A streamed chat completion.
fn stream_body() -> serde_json::Value {
    let mut body = chat_body("gpt-4o");
    body["stream"] = serde_json::json!(true);
    body
}

/// Reads until the proxy closes the connection (bounded: a proxy that never closes fails the
/// test instead of hanging it); returns what was read and when the close came.
async fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, Instant) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, Instant::now()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the connection was still open after 10 s (read so far: {:?})",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: proxy\r\n\r\n";

#[tokio::test]
async fn a_silent_or_stalled_client_is_disconnected_after_the_header_read_timeout() {
    let h = with_header_timeout().await;

    // Silent from the start.
    let opened = Instant::now();
    let mut silent = TcpStream::connect(h.addr).await.unwrap();
    let (got, closed) = read_until_closed(&mut silent).await;
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert!(
        closed - opened >= TIMEOUT - Duration::from_millis(100),
        "closed after {:?}",
        closed - opened
    );

    // Half a head, then nothing.
    let opened = Instant::now();
    let mut stalled = TcpStream::connect(h.addr).await.unwrap();
    stalled
        .write_all(b"POST /openai/deployments/gpt-4o/chat/completions HTTP/1.1\r\nhost: proxy\r\n")
        .await
        .unwrap();
    let (got, closed) = read_until_closed(&mut stalled).await;
    assert!(
        !String::from_utf8_lossy(&got).contains(" 200 "),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        closed - opened >= TIMEOUT - Duration::from_millis(100),
        "closed after {:?}",
        closed - opened
    );
    assert_eq!(h.emulator.stats().data_requests, 0, "nothing reached Azure");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_and_a_busy_one_is_not() {
    let h = with_header_timeout().await;
    let mut conn = TcpStream::connect(h.addr).await.unwrap();
    // Requests more often than the timeout, for well over twice its length: the wait starts
    // again after each answer, so the connection stays open.
    let began = Instant::now();
    let mut answered = 0;
    while began.elapsed() < TIMEOUT * 3 {
        conn.write_all(HEALTHZ).await.unwrap();
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        answered += 1;
        tokio::time::sleep(TIMEOUT / 3).await;
    }
    assert!(answered >= 6, "{answered} answers");
    // Then idle: closed one timeout after the last answer, with nothing more sent.
    let idle_from = Instant::now();
    let (got, closed) = read_until_closed(&mut conn).await;
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert!(
        closed - idle_from >= TIMEOUT - Duration::from_millis(350),
        "closed after {:?} idle",
        closed - idle_from
    );
}

/// An HTTP/2 frame's head: length, type, flags, stream.
fn frame_head(len: u32, kind: u8, flags: u8, stream: u32) -> Vec<u8> {
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out
}

/// Reads HTTP/2 frames until the proxy closes the connection, answering its pings as a live
/// client does (or not); returns the frames' types, what the DATA frames held, and when the
/// close came.
async fn frames_until_closed(
    stream: &mut TcpStream,
    answer_pings: bool,
) -> (Vec<u8>, Vec<u8>, Instant) {
    let mut got: Vec<u8> = Vec::new();
    let mut types = Vec::new();
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (types, data, Instant::now()),
            Ok(Ok(n)) => n,
            Err(_) => panic!("the connection was still open after 10 s (frames: {types:?})"),
        };
        got.extend_from_slice(&buf[..n]);
        while got.len() >= 9 {
            let len = u32::from_be_bytes([0, got[0], got[1], got[2]]) as usize;
            if got.len() < 9 + len {
                break;
            }
            let frame: Vec<u8> = got.drain(..9 + len).collect();
            let (kind, flags) = (frame[3], frame[4]);
            types.push(kind);
            if kind == DATA {
                data.extend_from_slice(&frame[9..]);
            }
            if kind == PING && flags & 0x1 == 0 && answer_pings {
                let mut ack = frame_head(8, PING, 0x1, 0);
                ack.extend_from_slice(&frame[9..17]);
                stream.write_all(&ack).await.unwrap();
            }
        }
    }
}

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;

/// The client preface and an empty SETTINGS frame.
fn h2_hello() -> Vec<u8> {
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(frame_head(0, SETTINGS, 0, 0));
    hello
}

#[tokio::test]
async fn an_idle_http2_connection_is_told_to_go_away_and_closed() {
    let h = with_header_timeout().await;
    // A live client answers the shutdown's ping and gets the last GOAWAY; one that has gone
    // answers nothing and is closed all the same, one timeout later.
    for answer_pings in [true, false] {
        let mut conn = TcpStream::connect(h.addr).await.unwrap();
        conn.write_all(&h2_hello()).await.unwrap();
        let opened = Instant::now();
        let (types, _, closed) = frames_until_closed(&mut conn, answer_pings).await;
        assert_eq!(
            types.first(),
            Some(&SETTINGS),
            "the proxy's SETTINGS first: {types:?}"
        );
        // A live client gets the graceful shutdown's two; one that has gone, at least the first.
        let goaways = types.iter().filter(|t| **t == GOAWAY).count();
        assert!(goaways >= if answer_pings { 2 } else { 1 }, "{types:?}");
        let took = closed - opened;
        assert!(
            took >= TIMEOUT - Duration::from_millis(100),
            "closed after {took:?}"
        );
        if !answer_pings {
            assert!(
                took >= TIMEOUT * 2 - Duration::from_millis(100),
                "closed after {took:?}"
            );
        }
    }
}

#[tokio::test]
async fn an_http2_stream_longer_than_the_timeout_is_not_cut() {
    let h = with_streams_of(12).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let body = stream_body();
    for _ in 0..2 {
        let began = Instant::now();
        let r = h2
            .post(h.url("/v1/chat/completions"))
            .header("api-key", KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        assert!(began.elapsed() > TIMEOUT * 2, "{:?}", began.elapsed());
        assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
        assert_eq!(text.matches("\"delta\"").count(), 12, "{text}");
    }
}

/// One HPACK literal header field, without indexing or Huffman coding (names and values
/// under 127 bytes).
fn literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0);
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
}

#[tokio::test]
async fn an_http2_client_that_stops_answering_pings_mid_stream_is_disconnected() {
    let h = with_streams_of(40).await;
    let body = stream_body().to_string();
    let mut fields = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/v1/chat/completions"),
        (":authority", "proxy"),
        ("api-key", KEY),
        ("content-type", "application/json"),
    ] {
        literal(&mut fields, name, value);
    }
    let mut request = h2_hello();
    request.extend(frame_head(fields.len() as u32, HEADERS, 0x4, 1)); // END_HEADERS
    request.extend(fields);
    request.extend(frame_head(body.len() as u32, DATA, 0x1, 1)); // END_STREAM
    request.extend(body.as_bytes());
    let mut conn = TcpStream::connect(h.addr).await.unwrap();
    conn.write_all(&request).await.unwrap();
    let sent = Instant::now();
    // The stream would take 6 s; a client silent for the limit is pinged, and one that does
    // not answer within it again is gone.
    let (types, data, closed) = frames_until_closed(&mut conn, false).await;
    let data = String::from_utf8_lossy(&data);
    assert!(types.contains(&HEADERS), "{types:?}");
    assert!(types.contains(&PING), "{types:?}");
    assert!(data.contains("chat.completion.chunk"), "{data}");
    assert!(!data.contains("[DONE]"), "the whole stream came: {data}");
    let took = closed - sent;
    assert!(
        took >= TIMEOUT * 2 - Duration::from_millis(100),
        "closed after {took:?}"
    );
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    // And Azure's stream is not left running for nobody.
    let mut cancelled = 0;
    for _ in 0..40 {
        let stats = h.emulator.stats();
        cancelled = stats.cancelled_streams;
        if stats.open_streams == 0 && cancelled == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cancelled, 1, "the upstream stream outlived its client");
}
