//! Which protocol a new connection speaks, from its first bytes, peeked and not read: HTTP/2
//! with prior knowledge opens with the connection preface, anything else is HTTP/1.1.
//!
//! Peeking leaves every byte to the protocol's own reader. A reader that read the first bytes
//! to tell (and handed them back through a rewinding wrapper) would give HTTP/1.1 a first read
//! of a few bytes, a partial head, and hyper then doubles the connection's read buffer, 8 to
//! 16 KiB, for as long as the connection lives.

use std::future::Future;
use std::time::Duration;
use tokio::net::TcpStream;

/// The HTTP/2 connection preface (RFC 9113, section 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long to wait before peeking again while the bytes so far are a part of the preface.
const MORE_OF_THE_PREFACE: Duration = Duration::from_millis(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    Http1,
    Http2,
}

/// The protocol of a connection, once its first bytes tell; `None` when the client closed it,
/// or sent nothing that tells before `give_up` fires.
pub(super) async fn sniff(
    stream: &TcpStream,
    give_up: impl Future<Output = ()>,
) -> Option<Protocol> {
    let telling = async {
        let mut first = [0u8; PREFACE.len()];
        loop {
            let n = stream.peek(&mut first).await.ok()?;
            if n == 0 {
                return None;
            }
            match decide(&first[..n]) {
                Some(protocol) => return Some(protocol),
                // The socket stays readable with bytes already peeked: wait, then look again
                // (only a preface split across segments gets here).
                None => tokio::time::sleep(MORE_OF_THE_PREFACE).await,
            }
        }
    };
    tokio::select! {
        protocol = telling => protocol,
        () = give_up => None,
    }
}

/// What `first` bytes tell: HTTP/1.1 as soon as they leave the preface, HTTP/2 once they are
/// all of it, `None` while they are a part of it.
fn decide(first: &[u8]) -> Option<Protocol> {
    if !PREFACE.starts_with(first) {
        Some(Protocol::Http1)
    } else if first.len() == PREFACE.len() {
        Some(Protocol::Http2)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_byte_off_the_preface_is_http1_and_the_whole_preface_http2() {
        assert_eq!(decide(b"POST /v1/chat"), Some(Protocol::Http1));
        assert_eq!(decide(b"GET / HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(decide(b"PRI * HTTP/1.1"), Some(Protocol::Http1));
        assert_eq!(decide(b"P"), None);
        assert_eq!(decide(b"PRI * HTTP/2.0\r\n"), None);
        assert_eq!(decide(PREFACE), Some(Protocol::Http2));
    }

    #[tokio::test]
    async fn a_split_preface_is_waited_for_and_silence_is_not() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let patience = || tokio::time::sleep(Duration::from_secs(5));
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.write_all(&PREFACE[..10]).await.unwrap();
        let later = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            client.write_all(&PREFACE[10..]).await.unwrap();
            client
        };
        let (sniffed, _client) = tokio::join!(sniff(&server, patience()), later);
        assert_eq!(sniffed, Some(Protocol::Http2));
        // Peeked, not read: every byte is still there for the protocol's reader.
        let mut all = [0u8; 24];
        assert_eq!(server.peek(&mut all).await.unwrap(), 24);

        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let silent = sniff(&server, tokio::time::sleep(Duration::from_millis(50))).await;
        assert_eq!(silent, None, "nothing sent within its patience");
        drop(client);
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        drop(client);
        assert_eq!(sniff(&server, patience()).await, None, "closed at once");
    }
}
