//! What kpld says when it cannot start (issue 18 item 7): the error once, each cause once.

use std::process::Command;

#[test]
fn a_socket_directory_that_cannot_be_made_is_reported_once_with_its_cause_once() {
    let dir = tempfile_dir("socket-dir");
    let cfg = dir.join("kpld.toml");
    // /proc refuses new directories: the socket directory cannot be created.
    std::fs::write(
        &cfg,
        "socket_path = \"/proc/kpld-no-such-dir/kpld.sock\"\nregion = \"us-east-1\"\nmetrics_cloudwatch = false\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kpld"))
        .arg("--config")
        .arg(&cfg)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("cannot create the socket directory /proc/kpld-no-such-dir"))
        .collect();
    assert_eq!(lines.len(), 1, "the error must be printed once:\n{stderr}");
    assert!(lines[0].contains("ERROR"), "{}", lines[0]);
    let cause = "No such file or directory (os error 2)";
    assert_eq!(
        lines[0].matches(cause).count(),
        1,
        "the cause ({cause}) must be named once: {}",
        lines[0]
    );
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("kpld-startup-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn without_credentials_one_warning_at_start_names_every_source_tried() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile_dir("no-credentials");
    std::fs::create_dir_all(dir.join("home")).unwrap();
    let sock = dir.join("kpld.sock");
    let cfg = dir.join("kpld.toml");
    std::fs::write(
        &cfg,
        format!(
            "socket_path = \"{}\"\nregion = \"us-east-1\"\nmetrics_cloudwatch = false\n",
            sock.display()
        ),
    )
    .unwrap();
    // Nothing of the AWS chain can answer: no variables, an empty home, and instance
    // metadata off (tests stay on loopback).
    let mut child = Command::new(env!("CARGO_BIN_EXE_kpld"))
        .arg("--config")
        .arg(&cfg)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir.join("home"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !seen
        .iter()
        .any(|l: &String| l.contains("no AWS credentials"))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => seen.push(l),
            Err(_) => break,
        }
    }
    // A moment more, so that a second warning or the SDK's own would show.
    while let Ok(l) = rx.recv_timeout(std::time::Duration::from_millis(1500)) {
        seen.push(l);
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let all = seen.join("\n");
    let warnings: Vec<&String> = seen
        .iter()
        .filter(|l| l.contains("no AWS credentials"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning at start:\n{all}");
    for source in [
        "environment (AWS_ACCESS_KEY_ID",
        "~/.aws/credentials",
        "web identity",
        "container credentials",
        "EC2 instance metadata (disabled by AWS_EC2_METADATA_DISABLED)",
        "none answered",
        "record_ttl_ms",
    ] {
        assert!(
            warnings[0].contains(source),
            "{source:?} missing: {}",
            warnings[0]
        );
    }
    assert!(
        !all.contains("aws_config::meta::credentials::chain"),
        "the SDK's own per-provider warning is not shown:\n{all}"
    );
    assert_eq!(status.code(), Some(0), "{all}");
}
