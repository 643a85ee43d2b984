//! Starting and stopping the real `kpld` binary with a generated config, in
//! a scratch directory of its own (socket, config, log).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct Daemon {
    child: Child,
    pub pid: u32,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    keep_dir: bool,
}

/// A fresh scratch directory under the system temp dir.
pub fn scratch_dir() -> std::io::Result<PathBuf> {
    let base = std::env::temp_dir();
    for n in 0..1000 {
        let d = base.join(format!("kpld-bench-{}-{n}", std::process::id()));
        if std::fs::create_dir(&d).is_ok() {
            return Ok(d);
        }
    }
    Err(std::io::Error::other("cannot create a scratch directory"))
}

/// The kpld binary: `given`, else `kpld` beside this program; it must exist.
pub fn kpld_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let kpld = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .map(|d| d.join("kpld"))
            .ok_or_else(|| anyhow::anyhow!("cannot locate kpld next to kpld-bench; use --kpld"))?,
    };
    if !kpld.exists() {
        anyhow::bail!("{} does not exist; build it or pass --kpld", kpld.display());
    }
    Ok(kpld)
}

/// The count-only double with one stream named `bench`.
pub async fn count_only_double(shards: usize) -> kpld_kinesis_double::FakeKinesis {
    let mut o = kpld_kinesis_double::FakeOptions::default()
        .stream("bench", shards)
        .count_only();
    o.worker_threads = 2;
    kpld_kinesis_double::FakeKinesis::start(o).await
}

fn command(kpld: &Path, prefix: &[String]) -> Command {
    match prefix.split_first() {
        None => Command::new(kpld),
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(kpld);
            c
        }
    }
}

fn aws_env(c: &mut Command) -> &mut Command {
    c.env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("RUST_LOG")
}

/// Writes `config` (socket_path is added) and asks `kpld --check` whether it
/// is valid; Err holds kpld's complaint.
pub fn check_config(kpld: &Path, dir: &Path, config: &str) -> Result<(), String> {
    let cfg = dir.join("check.toml");
    let text = format!("socket_path = {:?}\n{config}", dir.join("check.sock"));
    std::fs::write(&cfg, text).map_err(|e| e.to_string())?;
    let out = aws_env(&mut Command::new(kpld))
        .arg("--config")
        .arg(&cfg)
        .arg("--check")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", kpld.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

impl Daemon {
    /// Starts `kpld --config` (under `prefix`, e.g. a profiler) in `dir`.
    pub fn start(
        kpld: &Path,
        prefix: &[String],
        dir: PathBuf,
        config: &str,
        keep_dir: bool,
    ) -> std::io::Result<Daemon> {
        let socket = dir.join("kpld.sock");
        let log = dir.join("kpld.log");
        let cfg = dir.join("kpld.toml");
        std::fs::write(&cfg, format!("socket_path = {socket:?}\n{config}"))?;
        let child = aws_env(&mut command(kpld, prefix))
            .arg("--config")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .map_err(|e| std::io::Error::other(format!("cannot start {}: {e}", kpld.display())))?;
        Ok(Daemon {
            pid: child.id(),
            child,
            dir,
            socket,
            log,
            keep_dir,
        })
    }

    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits until the socket accepts connections.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if tokio::net::UnixStream::connect(&self.socket).await.is_ok() {
                return Ok(());
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!("kpld exited at start ({st}):\n{}", self.log_tail()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "kpld did not accept connections within {timeout:?}:\n{}",
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM (the drain), then waits up to `timeout` for the exit; kills
    /// it after that.
    pub async fn stop(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(st)) => return Ok(st),
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(format!(
                        "kpld did not exit within {timeout:?} of SIGTERM; killed"
                    ));
                }
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
