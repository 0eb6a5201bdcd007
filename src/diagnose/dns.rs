//! A minimal DNS lookup for `doctor`: the CNAME chain and addresses of a host, from the
//! system's first nameserver, so a private endpoint (`*.privatelink.*` CNAME → private
//! address) can be told from the public path. The system resolver hides CNAMEs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resolution {
    /// Names the host is an alias of, in order (e.g. `myres.privatelink.openai.azure.com`).
    pub cnames: Vec<String>,
    pub addresses: Vec<Ipv4Addr>,
}

impl Resolution {
    /// Whether the chain goes through a `privatelink.` zone, as a private endpoint's does.
    pub fn via_privatelink(&self) -> bool {
        self.cnames.iter().any(|c| {
            c.split('.')
                .any(|label| label.eq_ignore_ascii_case("privatelink"))
        })
    }
}

/// The first `nameserver` in a resolv.conf text.
pub fn nameserver(resolv_conf: &str) -> Option<IpAddr> {
    resolv_conf
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix("nameserver"))
        .and_then(|rest| rest.trim().parse().ok())
}

/// Asks the system's nameserver for `host`'s A records, following what it reports.
pub async fn lookup(host: &str, timeout: Duration) -> Result<Resolution, String> {
    let conf = std::fs::read_to_string("/etc/resolv.conf")
        .map_err(|e| format!("cannot read /etc/resolv.conf: {e}"))?;
    let server = nameserver(&conf).ok_or("no nameserver in /etc/resolv.conf")?;
    let socket = tokio::net::UdpSocket::bind(if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .await
    .map_err(|e| e.to_string())?;
    let mut id = [0u8; 2];
    let _ = aws_lc_rs::rand::fill(&mut id);
    let query = build_query(u16::from_be_bytes(id), host)?;
    socket
        .send_to(&query, SocketAddr::new(server, 53))
        .await
        .map_err(|e| format!("DNS query to {server}: {e}"))?;
    let mut buf = vec![0u8; 1500];
    let n = tokio::time::timeout(timeout, socket.recv(&mut buf))
        .await
        .map_err(|_| format!("no DNS answer from {server} within {timeout:?}"))?
        .map_err(|e| e.to_string())?;
    parse_response(&buf[..n], u16::from_be_bytes(id))
}

fn build_query(id: u16, host: &str) -> Result<Vec<u8>, String> {
    let mut q = Vec::with_capacity(32 + host.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in host.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("{host:?} is not a valid host name"));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    Ok(q)
}

/// Reads a possibly compressed name at `pos`; returns it and the position after it.
fn read_name(msg: &[u8], mut pos: usize) -> Result<(String, usize), String> {
    let mut labels = Vec::new();
    let mut end = None;
    for _ in 0..64 {
        let len = *msg.get(pos).ok_or("truncated name")? as usize;
        if len == 0 {
            return Ok((labels.join("."), end.unwrap_or(pos + 1)));
        }
        if len & 0xc0 == 0xc0 {
            let lo = *msg.get(pos + 1).ok_or("truncated pointer")? as usize;
            end.get_or_insert(pos + 2);
            pos = ((len & 0x3f) << 8) | lo;
            continue;
        }
        let label = msg.get(pos + 1..pos + 1 + len).ok_or("truncated label")?;
        labels.push(String::from_utf8_lossy(label).into_owned());
        pos += 1 + len;
    }
    Err("name too long or looping".into())
}

fn parse_response(msg: &[u8], id: u16) -> Result<Resolution, String> {
    if msg.len() < 12 || msg[..2] != id.to_be_bytes() {
        return Err("not an answer to our query".into());
    }
    let rcode = msg[3] & 0x0f;
    if rcode == 3 {
        return Err("the name does not exist (NXDOMAIN)".into());
    }
    if rcode != 0 {
        return Err(format!("DNS error code {rcode}"));
    }
    let qd = u16::from_be_bytes([msg[4], msg[5]]) as usize;
    let an = u16::from_be_bytes([msg[6], msg[7]]) as usize;
    let mut pos = 12;
    for _ in 0..qd {
        pos = read_name(msg, pos)?.1 + 4;
    }
    let mut out = Resolution::default();
    for _ in 0..an {
        let (_, after) = read_name(msg, pos)?;
        let head = msg.get(after..after + 10).ok_or("truncated record")?;
        let rtype = u16::from_be_bytes([head[0], head[1]]);
        let len = u16::from_be_bytes([head[8], head[9]]) as usize;
        let data_at = after + 10;
        let data = msg
            .get(data_at..data_at + len)
            .ok_or("truncated record data")?;
        match (rtype, data) {
            (1, [a, b, c, d]) => out.addresses.push(Ipv4Addr::new(*a, *b, *c, *d)),
            (5, _) => out.cnames.push(read_name(msg, data_at)?.0),
            _ => {}
        }
        pos = data_at + len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_first_nameserver() {
        assert_eq!(
            nameserver("# x\nsearch a\nnameserver 168.63.129.16\nnameserver 8.8.8.8\n"),
            Some("168.63.129.16".parse().unwrap())
        );
        assert_eq!(nameserver("search a\n"), None);
    }

    #[test]
    fn parses_a_privatelink_cname_chain_with_compression() {
        // Query for myres.openai.azure.com, answered by a CNAME to
        // myres.privatelink.openai.azure.com (compressed) and an A record 10.0.0.5.
        let mut m = build_query(0x1234, "myres.openai.azure.com").unwrap();
        m[2] = 0x81;
        m[3] = 0x80;
        m[7] = 2; // ancount
        // answer 1: name ptr to 12, CNAME, IN, ttl, rdata = "myres" "privatelink" ptr->"openai..." (offset 18)
        let mut rdata = vec![5];
        rdata.extend_from_slice(b"myres");
        rdata.push(11);
        rdata.extend_from_slice(b"privatelink");
        rdata.extend_from_slice(&[0xc0, 18]);
        m.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, rdata.len() as u8]);
        let cname_at = m.len();
        m.extend_from_slice(&rdata);
        // answer 2: name ptr to the cname, A, IN, ttl, 10.0.0.5
        m.extend_from_slice(&[
            0xc0,
            cname_at as u8,
            0,
            1,
            0,
            1,
            0,
            0,
            0,
            60,
            0,
            4,
            10,
            0,
            0,
            5,
        ]);
        let r = parse_response(&m, 0x1234).unwrap();
        assert_eq!(
            r.cnames,
            vec!["myres.privatelink.openai.azure.com".to_string()]
        );
        assert_eq!(r.addresses, vec![Ipv4Addr::new(10, 0, 0, 5)]);
        assert!(r.via_privatelink());
    }

    #[test]
    fn refuses_garbage_and_nxdomain() {
        assert!(parse_response(&[0; 5], 1).is_err());
        let mut m = build_query(7, "nope.example").unwrap();
        m[3] = 0x83;
        assert!(parse_response(&m, 7).unwrap_err().contains("NXDOMAIN"));
        let mut looping = build_query(7, "a.b").unwrap();
        looping[7] = 1;
        looping.extend_from_slice(&[0xc0, (looping.len()) as u8]);
        assert!(parse_response(&looping, 7).is_err());
    }
}
