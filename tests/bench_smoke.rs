//! The benchmark runs: `kpld-bench` drives the real `kpld` binary for about
//! three seconds at a small paced load against the count-only double. Checks
//! only that it ran and that every record sent got a successful result; no
//! timing figure is asserted (the machine is shared and noisy).

use std::process::Command;

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
        .args(["--kpld", env!("CARGO_BIN_EXE_kpld")])
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
