//! ns per line of each processor chain and partition-key rule, release.
//! One core, best of 5 rounds of 200,000 lines each (noisy shared machine:
//! the best round is the least disturbed).

// src/files itself, through a symlink, so what is timed is what ships: the
// processors and the key rules only (pure; the reader needs the daemon).
#[allow(dead_code)]
mod files {
    pub mod key;
    pub mod process;
}

use files::key::PartitionKeyRule;
use files::process::{Chain, LineContext, OnParseError, Processed};
use std::hint::black_box;
use std::time::Instant;

/// Lines per round; `BENCH_LINES` lowers it for a run under valgrind.
fn lines() -> usize {
    std::env::var("BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

fn best_ns(mut f: impl FnMut(usize)) -> f64 {
    let n = lines();
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for i in 0..n {
                f(i);
            }
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn chain(p: &str) -> Chain {
    let t: toml::Table = toml::from_str(&format!("processing = {p}")).unwrap();
    Chain::from_toml(t.get("processing"), OnParseError::SendRaw, "host-1").unwrap()
}

fn main() {
    // An argument runs only the cases whose name contains it, for counting
    // instructions per line under valgrind (counts the machine's load does
    // not change): see docs/files.md, "Cost".
    let only = std::env::args().nth(1).unwrap_or_default();
    let cases: [(&str, &str, &str); 9] = [
        ("none", "[]", "2026-12-03 16:00:00.123 INFO request served in 12 ms path=/api/v1/items status=200 x=0123456"),
        ("single_line (no \\n)", r#"[{ kind = "single_line" }]"#, "2026-12-03 16:00:00.123 INFO request served in 12 ms path=/api/v1/items status=200 x=0123456"),
        ("csv_to_json 5 fields", r#"[{ kind = "csv_to_json", fields = ["a", "b", "c", "d", "e"] }]"#, "2026-12-03T16:00:00Z,web-1,\"GET /api/v1/items\",200,\"Mozilla/5.0 (X11; Linux x86_64)\""),
        ("common_apache", r#"[{ kind = "log_to_json", format = "common_apache" }]"#, "127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] \"GET /apache_pb.gif HTTP/1.0\" 200 2326"),
        ("combined_apache", r#"[{ kind = "log_to_json", format = "combined_apache" }]"#, "127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] \"GET /apache_pb.gif HTTP/1.0\" 200 2326 \"http://www.example.com/start.html\" \"Mozilla/4.08 [en] (Win98; I ;Nav)\""),
        ("apache_error", r#"[{ kind = "log_to_json", format = "apache_error" }]"#, "[Fri Sep 09 10:42:29.902022 2011] [core:error] [pid 35708:tid 4328636416] [client 72.15.99.187] File does not exist: /usr/local/apache2/htdocs/favicon.ico"),
        ("syslog", r#"[{ kind = "log_to_json", format = "syslog" }]"#, "Dec  3 16:00:00 web-1 sshd[4242]: Accepted publickey for admin from 192.0.2.5 port 50022 ssh2"),
        ("rfc5424 with SD", r#"[{ kind = "log_to_json", format = "rfc5424" }]"#, "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"] An application event log entry"),
        ("cri F + add_metadata", r#"[{ kind = "cri" }, { kind = "add_metadata" }]"#, "2016-10-06T00:17:09.669794202Z stdout F 2026-12-03 16:00:00.123 INFO request served in 12 ms path=/api/v1/items"),
    ];
    println!("{:<24} {:>6} {:>8}", "chain", "bytes", "ns/line");
    for (name, p, line) in cases {
        if !name.contains(&only) {
            continue;
        }
        let mut c = chain(p);
        let ctx = LineContext {
            path: "/var/log/app/access.log",
            file_id: "803:1234:9f86d081",
            offset: 0,
        };
        // Every line must parse, or the figure would time the error path.
        match c.apply(line.as_bytes(), &ctx) {
            (Processed::Record(_), None) => {}
            other => panic!("{name}: {other:?}"),
        }
        let ns = best_ns(|i| {
            let ctx = LineContext {
                offset: i as u64,
                ..ctx
            };
            black_box(c.apply(black_box(line.as_bytes()), &ctx));
        });
        println!("{name:<24} {:>6} {ns:>8.0}", line.len());
    }
    let record = br#"{"time":"2026-12-03T16:00:00Z","user":{"id":"u-42","name":"Ada"},"status":200,"path":"/api/v1/items"}"#;
    let rules = [
        ("key random", PartitionKeyRule::Random),
        ("key line_hash", PartitionKeyRule::LineHash),
        ("key path", PartitionKeyRule::Path),
        (
            "key json_field user.id",
            PartitionKeyRule::JsonField(vec!["user".into(), "id".into()]),
        ),
    ];
    for (name, r) in rules {
        if !name.contains(&only) {
            continue;
        }
        let ns = best_ns(|_| {
            black_box(r.key(black_box(record), "/var/log/app/access.log"));
        });
        println!("{name:<24} {:>6} {ns:>8.0}", record.len());
    }
    // What a file reader uses for `random`: its own key stream.
    let name = "key random_stream";
    if name.contains(&only) {
        let mut keys = files::key::RandomKeys::new(7);
        let ns = best_ns(|_| {
            black_box(keys.next_key());
        });
        println!("{name:<24} {:>6} {ns:>8.0}", record.len());
    }
}
