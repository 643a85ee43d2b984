//! Test support: start the real `kpld` binary on a socket in a temp dir,
//! talk to it with the protocol client, collect every result.
#![allow(dead_code)]

pub mod verify;

use kpld::client::{self, Receiver, Sender};
use kpld::ipc::{server_message, RecordResult};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct Daemon {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts kpld against `endpoint` with extra TOML lines, and waits until
    /// the socket accepts connections.
    pub async fn start(endpoint: &str, extra: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("kpld.sock");
        let log = dir.path().join("kpld.log");
        let cfg = dir.path().join("kpld.toml");
        // No CloudWatch upload unless a test asks: tests talk to loopback only.
        let metrics = if extra.contains("metrics_level") {
            ""
        } else {
            "metrics_level = \"none\"\n"
        };
        std::fs::write(
            &cfg,
            format!(
                "socket_path = {socket:?}\nregion = \"us-east-1\"\nkinesis_endpoint = \"{endpoint}\"\n{metrics}{extra}\n"
            ),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kpld"))
            .arg("--config")
            .arg(&cfg)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env_remove("AWS_PROFILE")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let d = Daemon {
            child,
            dir,
            socket,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::UnixStream::connect(&d.socket).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "kpld did not start:\n{}",
                d.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        d
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn connect(&self) -> (Sender, Receiver) {
        let (tx, rx, _) = client::connect(&self.socket, "kpld-tests").await.unwrap();
        (tx, rx)
    }

    /// A connection that asked for `Accepted` messages.
    pub async fn connect_accepting(&self) -> (Sender, Receiver) {
        let (tx, rx, _) = client::connect_with(&self.socket, "kpld-tests", true)
            .await
            .unwrap();
        (tx, rx)
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// SIGTERM, then waits (bounded) for the exit status.
    pub async fn stop(mut self) -> (ExitStatus, String) {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                let log = self.log_text();
                return (st, log);
            }
            assert!(
                Instant::now() < deadline,
                "kpld did not exit:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads results until every id in `want` has one (or the timeout), and
/// fails on a duplicate result.
pub async fn collect_results(
    rx: &mut Receiver,
    want: usize,
    timeout: Duration,
) -> HashMap<u64, RecordResult> {
    let mut got: HashMap<u64, RecordResult> = HashMap::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while got.len() < want {
        let msg = tokio::time::timeout_at(deadline, rx.next())
            .await
            .unwrap_or_else(|_| panic!("timed out with {} of {want} results", got.len()))
            .expect("connection open");
        if let Some(server_message::Msg::Results(r)) = msg.msg {
            for r in r.results {
                let id = r.id;
                assert!(got.insert(id, r).is_none(), "two results for record {id}");
            }
        }
    }
    got
}

pub fn socket_exists(p: &Path) -> bool {
    p.exists()
}
