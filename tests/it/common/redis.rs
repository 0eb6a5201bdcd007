//! A real `redis-server` on a free loopback port in a temp dir, killed on drop; restartable on
//! the same port to test outages.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Redis {
    pub port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
    tls: Option<Tls>,
}

/// A TLS port next to the plain one, with the fixture certificate and a password.
pub struct Tls {
    pub port: u16,
    pub password: String,
}

/// Test-only certificates (tests/fixtures/redis-tls).
pub fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/redis-tls")
        .join(name)
}

impl Redis {
    /// Starts one; fails the test, saying what to install, when `redis-server` is missing.
    pub fn start() -> Redis {
        Redis::start_with(None)
    }

    /// Also listens for TLS (`rediss://`) with the fixture certificate, and wants `password`.
    pub fn start_tls(password: &str) -> Redis {
        Redis::start_with(Some(Tls {
            port: super::free_port(),
            password: password.to_string(),
        }))
    }

    /// The TLS port and password, when started with [`Redis::start_tls`].
    pub fn tls(&self) -> &Tls {
        self.tls.as_ref().expect("started with start_tls")
    }

    fn start_with(tls: Option<Tls>) -> Redis {
        let port = super::free_port();
        let dir =
            std::env::temp_dir().join(format!("entra-proxy-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Redis {
            port,
            dir,
            child: None,
            tls,
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        match &self.tls {
            None => format!("redis://127.0.0.1:{}/0", self.port),
            Some(t) => format!("redis://:{}@127.0.0.1:{}/0", t.password, self.port),
        }
    }

    /// Kills the server (an outage).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port, empty, and waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--daemonize", "no"]);
        if let Some(t) = &self.tls {
            command
                .args(["--tls-port", &t.port.to_string()])
                .arg("--tls-cert-file")
                .arg(fixture("server.pem"))
                .arg("--tls-key-file")
                .arg(fixture("server.key"))
                .args(["--tls-auth-clients", "no", "--requirepass", &t.password]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): install it (`apt-get install -y redis-server`) to run the Redis tests")
            });
        self.child = Some(child);
        for _ in 0..200 {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }

    /// Stops the server without ending it (SIGSTOP): it keeps its data and its connections,
    /// but answers nothing until [`Redis::resume`] — calls time out rather than fail.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server go on (SIGCONT): it answers what was sent meanwhile.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, which: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args([which, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// A counter's value, 0 when absent.
    pub fn get_u64(&self, key: &str) -> u64 {
        let client = redis::Client::open(self.url()).unwrap();
        let mut con = client.get_connection().unwrap();
        let value: Option<u64> = redis::cmd("GET").arg(key).query(&mut con).unwrap();
        value.unwrap_or(0)
    }

    /// Sets a counter, expiring in an hour.
    pub fn set_u64(&self, key: &str, value: u64) {
        let client = redis::Client::open(self.url()).unwrap();
        let mut con = client.get_connection().unwrap();
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("EX")
            .arg(3600)
            .query(&mut con)
            .unwrap();
    }

    /// The sum of a window's per-second buckets, 0 when absent.
    pub fn hash_sum(&self, key: &str) -> u64 {
        let client = redis::Client::open(self.url()).unwrap();
        let mut con = client.get_connection().unwrap();
        // The buckets (fields named by their second), not the window's own `t` and `o`.
        let fields: Vec<(String, u64)> = redis::cmd("HGETALL").arg(key).query(&mut con).unwrap();
        fields
            .iter()
            .filter(|(field, _)| field.parse::<i64>().is_ok())
            .map(|(_, n)| n)
            .sum()
    }

    /// Whether the server answers PING (a raw RESP exchange).
    pub fn ping(&self) -> bool {
        use std::io::{Read as _, Write as _};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        // With a password, NOAUTH also says the server is up.
        s.read_exact(&mut buf).is_ok() && (&buf == b"+PONG\r\n" || &buf == b"-NOAUTH")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
