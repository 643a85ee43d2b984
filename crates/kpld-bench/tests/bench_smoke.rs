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

/// Runs kpld-bench with `args` against the built kpld; checks that it exited
/// 0 and that every record sent was acknowledged once and succeeded.
/// Returns its output and the records sent.
fn run_and_check_every_record_succeeded(args: &[&str]) -> (String, u64) {
    let out = Command::new(env!("CARGO_BIN_EXE_kpld-bench"))
        .arg("--kpld")
        .arg(kpld_bin())
        .args(args)
        .output()
        .expect("kpld-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kpld-bench {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let sent = figure(&stdout, "records_sent");
    assert_eq!(figure(&stdout, "records_acknowledged"), sent, "{stdout}");
    assert_eq!(figure(&stdout, "records_succeeded"), sent, "{stdout}");
    (stdout, sent)
}

#[test]
fn bench_runs_and_every_record_is_acknowledged() {
    let (stdout, sent) = run_and_check_every_record_succeeded(&[
        "--duration",
        "3",
        "--rate",
        "3000",
        "--connections",
        "2",
        "--shards",
        "4",
        "--keys",
        "100",
        "--no-floor",
        "--timeout",
        "60",
    ]);
    assert!(sent > 0, "nothing was sent:\n{stdout}");
    assert_eq!(figure(&stdout, "records_failed"), 0, "{stdout}");
    assert!(
        stdout.contains("daemon_exit: 0"),
        "kpld did not drain and exit 0:\n{stdout}"
    );
}

/// The soak mode, short (issue 13): 20 s against the limits-enforcing double with faults
/// (30% throttling, HTTP 5xx, resets, dropped answers), RSS and CPU sampled every 2 s. Checks
/// the invariants only (every record one result, all succeeded, none missing from the
/// double's log), not flatness or speed: CI builds debug, and the machine is shared.
#[test]
fn soak_under_faults_accounts_for_every_record_and_loses_none() {
    let (stdout, sent) = run_and_check_every_record_succeeded(&[
        "--limits",
        "--faults",
        "soak",
        "--check-landed",
        "--duration",
        "20",
        "--sample-every",
        "2",
        "--warmup",
        "4",
        "--rate",
        "2000",
        "--frame-interval-ms",
        "20",
        "--connections",
        "2",
        "--shards",
        "2",
        "--keys",
        "200",
        "--no-floor",
        "--timeout",
        "120",
    ]);
    assert!(sent > 10_000, "too few records for a soak:\n{stdout}");
    let lost = stdout
        .lines()
        .find_map(|l| l.strip_prefix("results_lost: "))
        .unwrap_or_else(|| panic!("no results_lost line:\n{stdout}"));
    assert!(lost.starts_with("0 "), "records lost: {lost}\n{stdout}");
    assert!(
        figure(&stdout, "soak_samples_after_warmup") >= 5,
        "the samples were not taken:\n{stdout}"
    );
    assert!(stdout.contains("# faults: "), "{stdout}");
    // 1,000 records/s per connection, a frame every 20 ms.
    assert!(stdout.contains("frames of 20 records"), "{stdout}");
    assert!(stdout.contains("daemon_exit: 0"), "{stdout}");
}
