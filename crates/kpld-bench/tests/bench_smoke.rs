//! The benchmark runs: `kpld-bench` drives the real `kpld` binary for about
//! three seconds at a small paced load against the count-only double. Checks
//! only that it ran and that every record sent got a successful result; no
//! timing figure is asserted (the machine is shared and noisy).

use std::path::PathBuf;
use std::process::Command;

/// The daemon under test: `KPLD_BIN` if set (scripts/test.sh sets it), else the `kpld`
/// beside `kpld-bench` in this profile's target directory. Cargo builds another package's
/// binary only for that package's own tests, so `cargo test -p kpld-bench` alone may find
/// none; the workspace-wide `cargo test` (and scripts/test.sh, which runs `cargo build`
/// first) has it.
fn kpld_bin() -> PathBuf {
    let bin = match std::env::var_os("KPLD_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_BIN_EXE_kpld-bench")).with_file_name("kpld"),
    };
    assert!(
        bin.is_file(),
        "the kpld binary {} does not exist: run `cargo build` (or `cargo test` for the whole \
         workspace), or set KPLD_BIN",
        bin.display()
    );
    bin
}

fn figure(stdout: &str, name: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no `{name}:` line in:\n{stdout}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("`{name}` is not a number ({e}) in:\n{stdout}"))
}

#[test]
fn bench_runs_and_every_record_is_acknowledged() {
    let out = Command::new(env!("CARGO_BIN_EXE_kpld-bench"))
        .arg("--kpld")
        .arg(kpld_bin())
        .args(["--duration", "3", "--rate", "3000", "--connections", "2"])
        .args([
            "--shards",
            "4",
            "--keys",
            "100",
            "--no-floor",
            "--timeout",
            "60",
        ])
        .output()
        .expect("kpld-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kpld-bench failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let sent = figure(&stdout, "records_sent");
    assert!(sent > 0, "nothing was sent:\n{stdout}");
    assert_eq!(figure(&stdout, "records_acknowledged"), sent, "{stdout}");
    assert_eq!(figure(&stdout, "records_succeeded"), sent, "{stdout}");
    assert_eq!(figure(&stdout, "records_failed"), 0, "{stdout}");
    assert!(
        stdout.contains("daemon_exit: 0"),
        "kpld did not drain and exit 0:\n{stdout}"
    );
}
