//! Client connections that say too little: `server.header_read_timeout_secs` closes a
//! connection that sends no whole request head in time — silent from the start, stalled in
//! the middle of a head, or idle on keep-alive after its last answer — while one that keeps
//! sending requests stays open.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_millis(600);

async fn with_header_timeout() -> Harness {
    let emu = emulator().await;
    let text = base_config(&emu.url()).replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nheader_read_timeout_secs = 0.6",
    );
    proxy(emu, &text).await
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
