//! The Java harness (tests/java/KplHarness.java) against the real kpld and
//! the double: built with Debian's javac, protoc and libprotobuf-java only
//! (.ci/run installs them), it launches kpld as the KPL's Java wrapper does
//! and checks results, flush, metrics, a credentials refresh, end of input,
//! SIGTERM with records in flight, and kpld killed under load (the
//! outstanding futures fail, a new child serves). This test then finds every
//! record the harness saw land in the double's stream, where it said.

mod common;

use kpld_kinesis_double::{FakeKinesis, FakeOptions};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const PROTOBUF_JAR: &str = "/usr/share/java/protobuf.jar";

fn tool(name: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{name} is missing: apt-get install openjdk-17-jdk-headless protobuf-compiler libprotobuf-java (.ci/run does)"
    );
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_java_harness_drives_kpld_as_the_kpl_wrapper_does() {
    for t in ["javac", "java", "protoc"] {
        tool(t);
    }
    assert!(
        Path::new(PROTOBUF_JAR).exists(),
        "{PROTOBUF_JAR} is missing: apt-get install libprotobuf-java (.ci/run does)"
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let build = tempfile::tempdir().unwrap();
    let gen = build.path().join("gen");
    let classes = build.path().join("classes");
    std::fs::create_dir_all(&gen).unwrap();
    run(
        Command::new("protoc")
            .arg(format!("--java_out={}", gen.display()))
            .arg(format!("-I{}", root.join("proto").display()))
            .arg(root.join("proto/kpl.proto")),
        "protoc",
    );
    run(
        Command::new("javac")
            .args(["-nowarn", "-cp", PROTOBUF_JAR, "-d"])
            .arg(&classes)
            .arg(gen.join("kpld/kpl_native/Kpl.java"))
            .arg(root.join("tests/java/KplHarness.java")),
        "javac",
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeKinesis::start(FakeOptions::default().stream("s", 2)));
    let work = tempfile::tempdir().unwrap();
    let mut child = Command::new("java")
        .arg("-cp")
        .arg(format!("{}:{PROTOBUF_JAR}", classes.display()))
        .arg("KplHarness")
        .arg(env!("CARGO_BIN_EXE_kpld"))
        .arg(fake.endpoint())
        .arg(work.path())
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: the harness bounds each of its waits; this bounds the whole.
    let mut status = None;
    for _ in 0..6000 {
        if let Some(st) = child.try_wait().unwrap() {
            status = Some(st);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if status.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        status.is_some_and(|s| s.success()),
        "the harness failed ({status:?}):\n{stderr}"
    );
    let checks: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("check "))
        .collect();
    assert_eq!(
        checks,
        [
            "results",
            "credentials",
            "metrics",
            "end-of-input",
            "sigterm",
            "restart-after-kill"
        ]
    );
    assert!(stderr.contains("failed by the exit"), "{stderr}");
    for l in stderr
        .lines()
        .filter(|l| l.starts_with("sigterm: ") || l.starts_with("killed: "))
    {
        eprintln!("harness: {l}");
    }

    let (found, mixed) = common::verify::user_records(&fake, &fake.log());
    assert_eq!(mixed, 0);
    let mut landed = 0;
    for l in stdout.lines().filter_map(|l| l.strip_prefix("ok ")) {
        let mut f = l.split(' ');
        let (n, shard, seq) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        let n: u64 = n.parse().unwrap();
        let copies = found
            .get(&n)
            .unwrap_or_else(|| panic!("record {n} not in the stream"));
        assert!(
            copies
                .iter()
                .any(|c| c.shard_id == shard && c.sequence_number == seq),
            "record {n}: {shard} {seq} vs {copies:?}"
        );
        landed += 1;
    }
    // 100 + 10 before SIGTERM, 10 after the kill; of the 300 sent just
    // before SIGTERM, those kpld had read (at least the first).
    let refused: usize = stderr
        .lines()
        .find_map(|l| l.strip_prefix("sigterm: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the harness reports the SIGTERM phase");
    assert!(refused < 300);
    assert_eq!(landed, 120 + 300 - refused);
    let keys = fake.access_key_ids();
    assert!(
        keys.iter().any(|k| k == "AKIDJAVAROTATED"),
        "the refreshed credentials never signed: {keys:?}"
    );
}
