//! CPU time and memory from /proc: the daemon's (utime + stime, VmRSS,
//! VmHWM), this process's threads split into generator and double, and the
//! whole machine's busy share.

use std::path::Path;
use std::time::Duration;

/// Clock ticks per second for /proc/*/stat times (`getconf CLK_TCK`, else 100).
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// utime + stime in ticks from a /proc stat file (process or thread).
fn stat_ticks(path: &Path) -> Option<u64> {
    let s = std::fs::read_to_string(path).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// CPU time used by a process so far (all its threads, dead ones included).
pub fn process_cpu(pid: u32, tck: u64) -> Option<Duration> {
    stat_ticks(Path::new(&format!("/proc/{pid}/stat")))
        .map(|t| Duration::from_secs_f64(t as f64 / tck as f64))
}

/// A `Vm*` line of /proc/PID/status, in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU time of this process's live threads, split by thread name: those of
/// the Kinesis double (named `fake-kinesis*`) and all others (the load
/// generator, the main thread).
pub fn own_threads_cpu(tck: u64) -> (Duration, Duration) {
    let mut double = 0u64;
    let mut other = 0u64;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for t in dir.flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            let ticks = stat_ticks(&t.path().join("stat")).unwrap_or(0);
            if comm.starts_with("fake-kinesis") {
                double += ticks;
            } else {
                other += ticks;
            }
        }
    }
    let d = |t: u64| Duration::from_secs_f64(t as f64 / tck as f64);
    (d(other), d(double))
}

/// (busy, total) jiffies of the whole machine, from /proc/stat.
pub fn machine_jiffies() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest counted in user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// `model name` from /proc/cpuinfo.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or_else(|| "unknown".into(), |s| s.trim().to_string())
}

/// MemTotal from /proc/meminfo, in KiB.
pub fn status_kib_meminfo() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
