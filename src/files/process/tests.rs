//! The chain against tests/golden/files (lines written from each format's
//! specification, with the expected JSON; README.md there describes the
//! files) and the chain's own rules: config errors, skip, held records and
//! record ids.

use super::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

/// 2026-12-03T12:00:00.000Z: the goldens' add_metadata timestamp.
fn noon() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_796_299_200)
}

const HOST: &str = "host-1";
const FILE_ID: &str = "803:1234:9f86d081";

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/files")
}

fn chain(toml_text: &str) -> Result<Chain, String> {
    let t: toml::Table = toml::from_str(toml_text).expect("test TOML");
    let on = match t.get("on_parse_error").and_then(|v| v.as_str()) {
        None | Some("send_raw") => OnParseError::SendRaw,
        Some("skip") => OnParseError::Skip,
        Some(o) => panic!("on_parse_error {o}"),
    };
    Chain::from_toml(t.get("processing"), on, HOST).map(|c| c.with_clock(noon))
}

/// What one outcome looks like in NAME.expected.jsonl.
fn outcome(p: &Processed, e: &Option<ParseError>) -> serde_json::Value {
    let mut v = match p {
        Processed::Record(r) => match serde_json::from_slice::<serde_json::Value>(r) {
            Ok(j) if j.is_object() => serde_json::json!({ "json": j }),
            _ => serde_json::json!({ "text": String::from_utf8(r.clone()).expect("UTF-8 record") }),
        },
        Processed::Held => serde_json::json!({ "held": true }),
        Processed::Skipped => serde_json::json!({ "skipped": true }),
    };
    if let Some(e) = e {
        v["error"] = serde_json::Value::String(e.to_string());
    }
    v
}

fn run_golden(name: &str) -> usize {
    let dir = golden_dir();
    let read = |ext: &str| {
        let p = dir.join(format!("{name}.{ext}"));
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let conf = read("toml");
    let json_strings = conf.contains("input = \"json_strings\"");
    let mut c = chain(&conf).unwrap_or_else(|e| panic!("{name}.toml: {e}"));
    let input = read("input");
    let expected: Vec<serde_json::Value> = read("expected.jsonl")
        .lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{name}.expected.jsonl:{}: {e}", i + 1))
        })
        .collect();
    let mut got = Vec::new();
    let mut offset = 0u64;
    let path = format!("/var/log/{name}.log");
    for line in input.split_inclusive('\n') {
        let text = line.strip_suffix('\n').unwrap_or(line);
        let record: Vec<u8> = if json_strings {
            serde_json::from_str::<String>(text)
                .expect("a JSON string per line")
                .into_bytes()
        } else {
            text.as_bytes().to_vec()
        };
        let ctx = LineContext {
            path: &path,
            file_id: FILE_ID,
            offset,
        };
        let (p, e) = c.apply(&record, &ctx);
        got.push(outcome(&p, &e));
        offset += line.len() as u64;
    }
    while let Some((r, e)) = c.take_held_checked() {
        got.push(outcome(&Processed::Record(r), &e));
    }
    for (i, (g, x)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(
            g,
            x,
            "{name}: line {} of {name}.input (or a held record after them)",
            i + 1
        );
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "{name}: outcomes (lines + held records) vs expected lines"
    );
    got.len()
}

#[test]
fn every_golden_file_is_checked() {
    let mut names: Vec<String> = std::fs::read_dir(golden_dir())
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter_map(|f| f.strip_suffix(".toml").map(str::to_string))
        .collect();
    names.sort();
    for k in KINDS_AND_FORMATS {
        assert!(names.iter().any(|n| n.starts_with(k)), "no golden for {k}");
    }
    for n in &names {
        assert!(run_golden(n) > 0, "{n} is empty");
    }
}

/// Each processor (and each log_to_json format) has at least one golden.
const KINDS_AND_FORMATS: [&str; 9] = [
    "single_line",
    "csv_to_json",
    "common_apache",
    "combined_apache",
    "apache_error",
    "syslog",
    "rfc5424",
    "cri",
    "add_metadata",
];

fn ctx(offset: u64) -> LineContext<'static> {
    LineContext {
        path: "/var/log/app.log",
        file_id: FILE_ID,
        offset,
    }
}

fn record(p: (Processed, Option<ParseError>)) -> serde_json::Value {
    match p {
        (Processed::Record(r), None) => serde_json::from_slice(&r).expect("JSON record"),
        other => panic!("not a clean record: {other:?}"),
    }
}

#[test]
fn no_processing_sends_the_line_as_is() {
    let mut c = Chain::from_toml(None, OnParseError::SendRaw, HOST).unwrap();
    assert!(c.is_empty());
    assert_eq!(
        c.apply(b"\xff raw", &ctx(0)),
        (Processed::Record(b"\xff raw".to_vec()), None)
    );
    assert_eq!(c.take_held(), None);
    assert_eq!(c.held_offset(), None);
}

#[test]
fn skip_sends_nothing_but_still_reports_the_error() {
    let t: toml::Table =
        toml::from_str(r#"processing = [{ kind = "log_to_json", format = "syslog" }]"#).unwrap();
    let mut c = Chain::from_toml(t.get("processing"), OnParseError::Skip, HOST).unwrap();
    let (p, e) = c.apply(b"not syslog", &ctx(0));
    assert_eq!(p, Processed::Skipped);
    let e = e.expect("a parse error");
    assert_eq!(e.processor, "log_to_json(syslog)");
    assert_eq!(
        e.reason,
        "no timestamp at byte 0 (expected \"Mmm dd hh:mm:ss\" or RFC 3339)"
    );
    let (p, e) = c.apply(b"Dec  3 16:00:00 h app: ok", &ctx(11));
    assert!(matches!(p, Processed::Record(_)) && e.is_none());
}

#[test]
fn text_that_is_not_utf8_is_a_parse_error_for_json_processors() {
    let mut c = chain(r#"processing = [{ kind = "csv_to_json", fields = ["a"] }]"#).unwrap();
    let (p, e) = c.apply(b"ok,\xff", &ctx(0));
    assert_eq!(p, Processed::Record(b"ok,\xff".to_vec()));
    assert_eq!(e.unwrap().to_string(), "csv_to_json: not UTF-8 at byte 3");
}

#[test]
fn record_ids_depend_on_the_file_and_offset_only() {
    let conf = r#"processing = [{ kind = "add_metadata" }]"#;
    let first = record(chain(conf).unwrap().apply(b"hello", &ctx(4096)));
    // A restart: a new chain (new clock reading too) re-reads the same line.
    let again = record(
        Chain::from_toml(
            toml::from_str::<toml::Table>(conf)
                .unwrap()
                .get("processing"),
            OnParseError::SendRaw,
            HOST,
        )
        .unwrap()
        .apply(b"hello", &ctx(4096)),
    );
    assert_eq!(first["meta"]["record_id"], "803:1234:9f86d081:4096");
    assert_eq!(first["meta"]["record_id"], again["meta"]["record_id"]);
    let other = record(chain(conf).unwrap().apply(b"hello", &ctx(4097)));
    assert_ne!(first["meta"]["record_id"], other["meta"]["record_id"]);
}

#[test]
fn a_cri_join_keeps_its_first_lines_offset_and_is_held_until_final() {
    let mut c =
        chain(r#"processing = [{ kind = "cri" }, { kind = "add_metadata", timestamp = false }]"#)
            .unwrap();
    assert_eq!(
        c.apply(b"2026-12-03T16:00:00Z stdout P a", &ctx(100)),
        (Processed::Held, None)
    );
    assert_eq!(c.held_offset(), Some(100));
    assert_eq!(
        c.apply(b"2026-12-03T16:00:01Z stderr P x", &ctx(200)),
        (Processed::Held, None)
    );
    let r = record(c.apply(b"2026-12-03T16:00:02Z stdout F b", &ctx(300)));
    assert_eq!(r["message"], "ab");
    assert_eq!(r["meta"]["record_id"], "803:1234:9f86d081:100");
    assert_eq!(c.held_offset(), Some(200));
    // At rotation: stderr's partial goes out as a record of its own.
    let h: serde_json::Value = serde_json::from_slice(&c.take_held().unwrap()).unwrap();
    assert_eq!(h["message"], "x");
    assert_eq!(h["meta"]["record_id"], "803:1234:9f86d081:200");
    assert_eq!(c.take_held(), None);
    assert_eq!(c.held_offset(), None);
}

#[test]
fn a_cri_join_is_cut_at_max_bytes() {
    let mut c = chain(r#"processing = [{ kind = "cri", max_bytes = 4 }]"#).unwrap();
    assert_eq!(
        c.apply(b"2026-12-03T16:00:00Z stdout P abc", &ctx(0)),
        (Processed::Held, None)
    );
    assert_eq!(
        c.apply(b"2026-12-03T16:00:00Z stdout P de", &ctx(40)),
        (Processed::Record(b"abc".to_vec()), None)
    );
    assert_eq!(c.held_offset(), Some(40));
    assert_eq!(
        c.apply(b"2026-12-03T16:00:00Z stdout F fghij", &ctx(80)),
        (Processed::Record(b"defghij".to_vec()), None)
    );
}

#[test]
fn a_joined_record_that_fails_later_is_sent_as_joined() {
    let mut c =
        chain(r#"processing = [{ kind = "cri" }, { kind = "log_to_json", format = "syslog" }]"#)
            .unwrap();
    assert_eq!(
        c.apply(b"2026-12-03T16:00:00Z stdout P not ", &ctx(0)),
        (Processed::Held, None)
    );
    let (p, e) = c.apply(b"2026-12-03T16:00:00Z stdout F syslog", &ctx(40));
    assert_eq!(p, Processed::Record(b"not syslog".to_vec()));
    assert_eq!(e.unwrap().processor, "log_to_json(syslog)");
}

#[test]
fn bad_processing_is_refused_naming_the_entry() {
    let err = |p: &str| {
        chain(&format!("processing = {p}"))
            .err()
            .unwrap_or_else(|| panic!("accepted {p}"))
    };
    let cases = [
        ("{ kind = \"cri\" }", "processing must be an array of tables, not table"),
        ("[\"cri\"]", "processing[0] must be a table like { kind = \"single_line\" }, not string"),
        ("[{ format = \"syslog\" }]", "processing[0] has no kind (one of single_line, csv_to_json, log_to_json, cri, add_metadata)"),
        ("[{ kind = \"grok\" }]", "processing[0]: unknown kind \"grok\"; expected one of single_line, csv_to_json, log_to_json, cri, add_metadata"),
        ("[{ kind = \"log_to_json\" }]", "processing[0] (log_to_json): needs format (one of common_apache, combined_apache, apache_error, syslog, rfc5424)"),
        ("[{ kind = \"log_to_json\", format = \"nginx\" }]", "processing[0] (log_to_json): unknown format \"nginx\"; expected one of common_apache, combined_apache, apache_error, syslog, rfc5424"),
        ("[{ kind = \"single_line\", join = \" \" }]", "processing[0] (single_line): unknown key \"join\"; it takes no other key"),
        ("[{ kind = \"csv_to_json\" }]", "processing[0] (csv_to_json): needs fields, the column names in order"),
        ("[{ kind = \"csv_to_json\", fields = [] }]", "processing[0] (csv_to_json): fields is empty; name each column"),
        ("[{ kind = \"csv_to_json\", fields = [\"a\", \"a\"] }]", "processing[0] (csv_to_json): fields[1] \"a\" is named twice"),
        ("[{ kind = \"csv_to_json\", fields = [\"a\", 2] }]", "processing[0] (csv_to_json): fields[1] must be a string, not integer"),
        ("[{ kind = \"csv_to_json\", fields = [\"a\"], delimiter = \";;\" }]", "processing[0] (csv_to_json): delimiter \";;\" must be one character other than a quote or a line break"),
        ("[{ kind = \"csv_to_json\", fields = [\"a\"], delim = \";\" }]", "processing[0] (csv_to_json): unknown key \"delim\"; expected fields, delimiter"),
        ("[{ kind = \"cri\", output = \"text\" }]", "processing[0] (cri): unknown output \"text\"; expected message or json"),
        ("[{ kind = \"cri\" }, { kind = \"cri\" }]", "processing[1] (cri): cri may appear once"),
        ("[{ kind = \"cri\", max_bytes = 0 }]", "processing[0] (cri): max_bytes must be a positive integer, not 0"),
        ("[{ kind = \"add_metadata\", fields = { host = \"x\" } }]", "processing[0] (add_metadata): fields.host clashes with the host add_metadata adds; set host = false to use your own"),
        (
            "[{ kind = \"add_metadata\", fields = { deploy = { at = 2026-12-03T10:00:00Z } } }]",
            "processing[0] (add_metadata): fields.deploy.at is a TOML date-time; write it as a string",
        ),
        ("[{ kind = \"add_metadata\", path = \"yes\" }]", "processing[0] (add_metadata): path must be true or false, not string"),
        ("[{ kind = \"add_metadata\" }, { kind = \"add_metadata\" }]", "processing[1] (add_metadata): key \"meta\" is already added by an earlier add_metadata"),
        (
            "[{ kind = \"log_to_json\", format = \"syslog\" }, { kind = \"single_line\" }]",
            "processing[1] (single_line): reads text, but processing[0] (log_to_json) has already made the record JSON; put single_line before it",
        ),
    ];
    for (p, want) in cases {
        assert_eq!(err(p), want, "{p}");
    }
    // The orders that make sense are accepted.
    for ok in [
        "[{ kind = \"cri\" }, { kind = \"single_line\" }, { kind = \"log_to_json\", format = \"rfc5424\" }, { kind = \"add_metadata\" }]",
        "[{ kind = \"cri\", output = \"json\" }, { kind = \"add_metadata\", key = \"k8s\" }, { kind = \"add_metadata\" }]",
        "[]",
    ] {
        chain(&format!("processing = {ok}")).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
}

#[test]
fn add_metadata_on_text_that_is_not_utf8_sends_it_raw() {
    let mut c = chain(r#"processing = [{ kind = "add_metadata" }]"#).unwrap();
    let (p, e) = c.apply(b"caf\xe9", &ctx(0));
    assert_eq!(p, Processed::Record(b"caf\xe9".to_vec()));
    assert_eq!(e.unwrap().to_string(), "add_metadata: not UTF-8 at byte 3");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Every chain worth having, one processor of each kind and format.
    const CHAINS: [&str; 9] = [
        r#"[{ kind = "single_line" }]"#,
        r#"[{ kind = "csv_to_json", fields = ["a", "b"] }]"#,
        r#"[{ kind = "log_to_json", format = "common_apache" }]"#,
        r#"[{ kind = "log_to_json", format = "combined_apache" }]"#,
        r#"[{ kind = "log_to_json", format = "apache_error" }]"#,
        r#"[{ kind = "log_to_json", format = "syslog" }]"#,
        r#"[{ kind = "log_to_json", format = "rfc5424" }]"#,
        r#"[{ kind = "cri", output = "json", max_bytes = 64 }, { kind = "add_metadata" }]"#,
        r#"[{ kind = "cri" }, { kind = "add_metadata", key = "k" }]"#,
    ];

    /// Lines close to each format, so the parsers get past their first
    /// check: fragments of real lines glued with arbitrary bytes.
    fn line() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"<34>".to_vec()),
            Just(b"<165>1 ".to_vec()),
            Just(b"2026-12-03T16:00:00.1Z ".to_vec()),
            Just(b"Oct 11 22:14:15 ".to_vec()),
            Just(b"stdout P ".to_vec()),
            Just(b"stderr F ".to_vec()),
            Just(b"[Fri Sep 09 10:42:29 2011] [core:error] [pid 1:tid 2] ".to_vec()),
            Just(b"127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] \"GET / HTTP/1.0\" 200 - ".to_vec()),
            Just(b"[x@1 a=\"\\\"\" b=\"\\]\"] ".to_vec()),
            Just(b"- ".to_vec()),
            Just(b"\"a,\"\"b\", ".to_vec()),
            Just(b"su[12]: ".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..12),
        ];
        proptest::collection::vec(piece, 0..8).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn no_line_panics_and_every_clean_json_record_is_an_object(lines in proptest::collection::vec(line(), 1..6)) {
            for p in CHAINS {
                let mut c = chain(&format!("processing = {p}")).unwrap();
                let mut off = 0u64;
                for l in &lines {
                    let (out, err) = c.apply(l, &ctx(off));
                    off += l.len() as u64 + 1;
                    // Only single_line makes text; every other chain makes JSON.
                    let json = !p.contains("single_line");
                    match (out, err) {
                        (Processed::Record(r), None) if json => {
                            let v: serde_json::Value = serde_json::from_slice(&r).map_err(|e| {
                                TestCaseError::fail(format!("{p}: {e}: {:?}", String::from_utf8_lossy(&r)))
                            })?;
                            prop_assert!(v.is_object(), "{}: {}", p, v);
                        }
                        // Raw is the line itself, except a CRI join's text.
                        (Processed::Record(r), Some(_)) if !p.contains("cri") => prop_assert_eq!(&r, l),
                        (Processed::Skipped, _) => prop_assert!(false, "skip is not configured"),
                        _ => {}
                    }
                }
                // A held record that cannot be made JSON (not UTF-8) comes
                // back as its text, with the error.
                while let Some((r, err)) = c.take_held_checked() {
                    if err.is_none() {
                        serde_json::from_slice::<serde_json::Value>(&r)
                            .map_err(|e| TestCaseError::fail(format!("{p}: held: {e}")))?;
                    }
                }
            }
        }

        #[test]
        fn csv_fields_written_per_rfc4180_read_back(values in proptest::collection::vec("[a-z,\" \\n;]{0,8}", 1..6)) {
            let names: Vec<String> = (0..values.len()).map(|i| format!("f{i}")).collect();
            let conf = format!("processing = [{{ kind = \"csv_to_json\", fields = {names:?} }}]");
            let line = values
                .iter()
                .map(|v| if v.contains([',', '"', '\n']) { format!("\"{}\"", v.replace('"', "\"\"")) } else { v.clone() })
                .collect::<Vec<_>>()
                .join(",");
            let r = record(chain(&conf).unwrap().apply(line.as_bytes(), &ctx(0)));
            for (n, v) in names.iter().zip(&values) {
                prop_assert_eq!(&r[n], v);
            }
        }
    }
}

#[test]
fn a_chain_can_move_to_a_files_task() {
    fn send<T: Send + 'static>() {}
    send::<Chain>();
    send::<crate::files::key::PartitionKeyRule>();
}

#[test]
fn a_huge_record_does_not_leave_huge_buffers_behind() {
    let mut c =
        chain(r#"processing = [{ kind = "single_line" }, { kind = "add_metadata" }]"#).unwrap();
    let big = "x".repeat(4 << 20);
    let r = record(c.apply(big.as_bytes(), &ctx(0)));
    assert_eq!(r["message"].as_str().map(str::len), Some(4 << 20));
    assert!(
        c.scratch_capacity() <= 2 * SCRATCH_KEEP_BYTES,
        "{}",
        c.scratch_capacity()
    );
    record(c.apply(b"small", &ctx(1)));
    assert!(c.scratch_capacity() > 0, "small lines keep their buffers");
}
