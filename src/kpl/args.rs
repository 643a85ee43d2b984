//! The command line the Java KPL gives its native process (pure):
//! `-o PIPE -i PIPE -c HEX -k HEX [-w HEX] [-t] [-l LEVEL] [-a PATH]`, and
//! how `main` tells it from kpld's own command line.
//!
//! `-c`, `-k` and `-w` are hex-encoded `Message`s (a `Configuration`, and
//! `SetCredentials` for Kinesis and for CloudWatch). `-o` is the pipe the
//! parent writes (kpld reads it), `-i` the one it reads (kpld writes it).

use super::wire::{message, Configuration, Message, SetCredentials};
use prost::Message as _;
use std::path::PathBuf;

/// The parsed command line.
#[derive(Debug, Clone, PartialEq)]
pub struct KplArgs {
    /// `-o`: kpld reads requests here.
    pub read_pipe: PathBuf,
    /// `-i`: kpld writes answers here.
    pub write_pipe: PathBuf,
    pub configuration: Configuration,
    pub kinesis_credentials: SetCredentials,
    /// `-w`; None: the Kinesis credentials are used.
    pub metrics_credentials: Option<SetCredentials>,
    /// `-l`, as given.
    pub log_level: Option<String>,
}

/// What is wrong with the command line; the text names the option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error("{0} is required (the Java KPL always passes it)")]
    Missing(&'static str),
    #[error("{0} needs a value")]
    NoValue(String),
    #[error("unknown option {0:?} for the KPL's native process (-o, -i, -c, -k, -w, -l, -t, -a)")]
    Unknown(String),
    #[error("{option}: not valid hexadecimal ({why})")]
    Hex { option: &'static str, why: String },
    #[error("{option}: not a KPL Message ({why}); this needs KPL 0.12 or later")]
    Decode { option: &'static str, why: String },
    #[error("{option}: the Message holds no {want}")]
    WrongMessage {
        option: &'static str,
        want: &'static str,
    },
}

/// True when `argv` is the KPL's native-process command line: started as
/// `kinesis_producer` (a symlink), or with an option only that command line
/// has (`-o`, `-i`, `-k`, `-w`, `-t` or their long forms). kpld's own
/// `-c FILE` alone stays kpld's.
pub fn is_kpl_command_line(argv: &[String]) -> bool {
    let named = argv.first().is_some_and(|a0| {
        std::path::Path::new(a0)
            .file_name()
            .is_some_and(|n| n == "kinesis_producer")
    });
    named
        || argv.iter().skip(1).any(|a| {
            matches!(
                a.as_str(),
                "-o" | "-i"
                    | "-k"
                    | "-w"
                    | "-t"
                    | "--output-pipe"
                    | "--input-pipe"
                    | "--kinesis-credentials"
                    | "--cloudwatch-credentials"
                    | "--enable-stack-trace"
            )
        })
}

/// Parses the command line (without `argv[0]`).
pub fn parse(args: &[String]) -> Result<KplArgs, ArgsError> {
    let mut read_pipe = None;
    let mut write_pipe = None;
    let mut config = None;
    let mut kinesis = None;
    let mut metrics = None;
    let mut log_level = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        // `--opt=value` as getopt_long allows.
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let slot: &mut Option<String> = match name {
            "-o" | "--output-pipe" => &mut read_pipe,
            "-i" | "--input-pipe" => &mut write_pipe,
            "-c" | "--configuration" => &mut config,
            "-k" | "--kinesis-credentials" => &mut kinesis,
            "-w" | "--cloudwatch-credentials" => &mut metrics,
            "-l" | "--log-level" => &mut log_level,
            // Stack traces on crashes: Rust prints a panic's location anyway.
            "-t" | "--enable-stack-trace" => continue,
            // CA certificates: kpld uses its built-in roots.
            "-a" | "--ca-path" => {
                if inline.is_none() && it.next().is_none() {
                    return Err(ArgsError::NoValue(name.into()));
                }
                continue;
            }
            _ => return Err(ArgsError::Unknown(a.clone())),
        };
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| ArgsError::NoValue(name.into()))?,
        };
        *slot = Some(value);
    }
    let read_pipe = read_pipe.ok_or(ArgsError::Missing("-o (the pipe kpld reads)"))?;
    let write_pipe = write_pipe.ok_or(ArgsError::Missing("-i (the pipe kpld writes)"))?;
    let config = config.ok_or(ArgsError::Missing("-c (the configuration)"))?;
    let kinesis = kinesis.ok_or(ArgsError::Missing("-k (the Kinesis credentials)"))?;
    let configuration = match decode("-c", &config)?.body {
        Some(message::Body::Configuration(c)) => c,
        _ => {
            return Err(ArgsError::WrongMessage {
                option: "-c",
                want: "Configuration",
            })
        }
    };
    Ok(KplArgs {
        read_pipe: read_pipe.into(),
        write_pipe: write_pipe.into(),
        configuration: *configuration,
        kinesis_credentials: credentials("-k", &kinesis)?,
        metrics_credentials: metrics.map(|m| credentials("-w", &m)).transpose()?,
        log_level,
    })
}

fn credentials(option: &'static str, hex: &str) -> Result<SetCredentials, ArgsError> {
    match decode(option, hex)?.body {
        Some(message::Body::SetCredentials(c)) => Ok(c),
        _ => Err(ArgsError::WrongMessage {
            option,
            want: "SetCredentials",
        }),
    }
}

fn decode(option: &'static str, hex: &str) -> Result<Message, ArgsError> {
    let bytes = from_hex(hex).map_err(|why| ArgsError::Hex { option, why })?;
    Message::decode(bytes.as_slice()).map_err(|e| ArgsError::Decode {
        option,
        why: e.to_string(),
    })
}

/// Hex digits of either case (the Java side writes upper case) to bytes.
pub fn from_hex(s: &str) -> Result<Vec<u8>, String> {
    if s.len() % 2 != 0 {
        return Err(format!("odd number of digits ({})", s.len()));
    }
    let digit = |c: u8, at: usize| {
        (c as char)
            .to_digit(16)
            .map(|d| d as u8)
            .ok_or_else(|| format!("{:?} at position {at}", c as char))
    };
    s.as_bytes()
        .chunks(2)
        .enumerate()
        .map(|(i, p)| Ok(digit(p[0], 2 * i)? << 4 | digit(p[1], 2 * i + 1)?))
        .collect()
}

/// The id the Java wrapper gives the `SetCredentials` messages of `-k` and
/// `-w` (and of every refresh).
pub const CREDENTIALS_ID: u64 = i64::MAX as u64;

/// A `Message` as the wrapper passes `-c`, `-k` and `-w`: encoded, in hex
/// (tests and the benchmark play the wrapper with it).
pub fn message_hex(id: u64, body: message::Body) -> String {
    to_hex(
        &Message {
            id,
            source_id: None,
            body: Some(body),
        }
        .encode_to_vec(),
    )
}

/// `SetCredentials` with a static key pair, as `-k` (Kinesis) or, with
/// `for_metrics`, `-w` (CloudWatch) carry them.
pub fn static_credentials(access_key_id: &str, secret: &str, for_metrics: bool) -> message::Body {
    message::Body::SetCredentials(SetCredentials {
        for_metrics: Some(for_metrics),
        credentials: super::wire::Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret.into(),
            session_token: None,
        },
    })
}

/// Bytes to upper-case hex, as the Java side encodes them.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex_of(body: message::Body, id: u64) -> String {
        message_hex(id, body)
    }

    fn creds(for_metrics: bool) -> message::Body {
        static_credentials("AKID", "SECRET", for_metrics)
    }

    fn java_argv() -> Vec<String> {
        let cfg = message::Body::Configuration(Box::new(Configuration {
            region: Some("us-east-1".into()),
            ..Default::default()
        }));
        [
            "-o",
            "/tmp/out",
            "-i",
            "/tmp/in",
            "-c",
            &hex_of(cfg, 0),
            "-k",
            &hex_of(creds(false), CREDENTIALS_ID),
            "-t",
            "-w",
            &hex_of(creds(true), CREDENTIALS_ID),
            "-l",
            "info",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    #[test]
    fn the_wrappers_command_line_parses() {
        let a = parse(&java_argv()).unwrap();
        assert_eq!(a.read_pipe, PathBuf::from("/tmp/out"));
        assert_eq!(a.write_pipe, PathBuf::from("/tmp/in"));
        assert_eq!(a.configuration.region.as_deref(), Some("us-east-1"));
        assert_eq!(a.kinesis_credentials.credentials.access_key_id, "AKID");
        assert_eq!(a.metrics_credentials.unwrap().for_metrics, Some(true));
        assert_eq!(a.log_level.as_deref(), Some("info"));
    }

    #[test]
    fn kpl_mode_is_told_from_kplds_own_command_line() {
        let mut argv = vec!["/usr/bin/kpld".to_string()];
        argv.extend(java_argv());
        assert!(is_kpl_command_line(&argv));
        assert!(is_kpl_command_line(&[
            "/tmp/x/kinesis_producer".into(),
            "--help".into()
        ]));
        assert!(!is_kpl_command_line(&[
            "kpld".into(),
            "-c".into(),
            "/etc/kpld/kpld.toml".into()
        ]));
        assert!(!is_kpl_command_line(&["kpld".into(), "stats".into()]));
    }

    #[test]
    fn missing_and_bad_options_are_named() {
        let mut a = java_argv();
        a.drain(4..6); // -c HEX
        assert_eq!(
            parse(&a).unwrap_err(),
            ArgsError::Missing("-c (the configuration)")
        );
        let mut a = java_argv();
        a[5] = "XYZ".into();
        assert!(matches!(
            parse(&a).unwrap_err(),
            ArgsError::Hex { option: "-c", .. }
        ));
        let mut a = java_argv();
        a[5] = a[7].clone(); // credentials where the configuration goes
        assert_eq!(
            parse(&a).unwrap_err(),
            ArgsError::WrongMessage {
                option: "-c",
                want: "Configuration"
            }
        );
        let mut a = java_argv();
        a.push("-x".into());
        assert_eq!(parse(&a).unwrap_err(), ArgsError::Unknown("-x".into()));
        let mut a = java_argv();
        a.push("-l".into());
        assert_eq!(parse(&a).unwrap_err(), ArgsError::NoValue("-l".into()));
    }

    /// KPL 0.10's Java side, encoded as it does: every field of its
    /// `Configuration` set, numbered as its config.proto numbers them
    /// (0.12 renumbered them; messages.proto did not change).
    fn kpl_0_10_configuration_hex() -> String {
        use prost::encoding::{bool as b, encode_key, encode_varint, string as st, uint64 as u};
        let mut c = Vec::new();
        b::encode(1, &true, &mut c);
        for (tag, v) in [
            (2, 4294967295u64),
            (3, 51200),
            (4, 500),
            (5, 5242880),
            (6, 6000),
        ] {
            u::encode(tag, &v, &mut c);
        }
        st::encode(7, &String::new(), &mut c); // custom_endpoint
        b::encode(8, &false, &mut c);
        st::encode(9, &"info".to_string(), &mut c); // log_level
        u::encode(10, &24, &mut c);
        st::encode(11, &"shard".to_string(), &mut c);
        st::encode(12, &"detailed".to_string(), &mut c);
        st::encode(13, &"KinesisProducerLibrary".to_string(), &mut c);
        for (tag, v) in [
            (14, 60000u64),
            (15, 1),
            (16, 443),
            (17, 150),
            (18, 100),
            (19, 30000),
        ] {
            u::encode(tag, &v, &mut c);
        }
        st::encode(20, &"us-east-1".to_string(), &mut c);
        u::encode(21, &6000, &mut c);
        b::encode(22, &true, &mut c);
        let mut m = Vec::new();
        u::encode(1, &0, &mut m);
        encode_key(6, prost::encoding::WireType::LengthDelimited, &mut m);
        encode_varint(c.len() as u64, &mut m);
        m.extend_from_slice(&c);
        to_hex(&m)
    }

    #[test]
    fn a_kpl_before_0_12_is_refused_with_the_version_it_needs() {
        let mut a = java_argv();
        a[5] = kpl_0_10_configuration_hex();
        let e = parse(&a).unwrap_err();
        assert!(matches!(e, ArgsError::Decode { option: "-c", .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.starts_with("-c: not a KPL Message"), "{text}");
        assert!(text.contains("KPL 0.12 or later"), "{text}");
    }

    #[test]
    fn hex_round_trips_in_either_case() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(from_hex(&to_hex(&bytes)).unwrap(), bytes);
        assert_eq!(from_hex("0aFf").unwrap(), vec![0x0a, 0xff]);
        assert!(from_hex("abc").is_err());
    }
}
