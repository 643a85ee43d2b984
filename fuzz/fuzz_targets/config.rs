//! The config parser: TOML text and `KPLD_*` variables -> validated `Config`.
//!
//! Input: the TOML text, then NUL-separated `KEY=VALUE` overrides (each
//! becomes the variable `KPLD_<KEY upper-cased>`). Parsing must never panic;
//! a config it accepts must be usable everywhere the daemon uses one
//! (stream settings, access policy, socket permissions, intake pool,
//! `Producer::new`, a SIGHUP reload onto the defaults), and what
//! `kpld --check` prints for it (`Config::to_toml`) must parse back to the
//! same config.
#![no_main]

use kpld::config::RawConfig;
use kpld::intake::Intake;
use kpld::{Config, Producer};
use kpld_fuzz::FakeKinesis;
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::{Arc, OnceLock};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

fn parse(text: &str, env: &[(String, String)]) -> Result<Config, kpld::config::ConfigError> {
    Config::from_raw(RawConfig::parse(
        text,
        Path::new("fuzz.toml"),
        env.iter().cloned(),
    )?)
}

fuzz_target!(|input: &[u8]| {
    let mut parts = input.split(|&b| b == 0);
    let Ok(text) = std::str::from_utf8(parts.next().unwrap_or_default()) else {
        return;
    };
    let env: Vec<(String, String)> = parts
        .filter_map(|p| {
            let s = std::str::from_utf8(p).ok()?;
            let (k, v) = s.split_once('=')?;
            Some((format!("KPLD_{}", k.to_ascii_uppercase()), v.to_string()))
        })
        .collect();
    let Ok(cfg) = parse(text, &env) else {
        return;
    };
    // What --check prints is a config meaning the same.
    let shown = cfg.to_toml();
    let again = parse(&shown, &[])
        .unwrap_or_else(|e| panic!("`kpld --check` output is refused: {e}\n{shown}"));
    assert_eq!(again.to_toml(), shown, "the config changed through --check");
    // Everything the daemon builds from a config.
    let _ = cfg.default_stream_settings();
    for name in cfg.streams.keys() {
        let _ = cfg.stream_settings(name);
        let _ = cfg.stream_allowed(name);
    }
    let _ = cfg.stream_allowed(text);
    let _ = cfg.access_policy();
    let _ = cfg.socket_perms();
    let _ = Intake::new(cfg.max_frame_size);
    let _guard = runtime().enter();
    let defaults = Config::load(None, []).expect("the defaults are valid");
    let p = Producer::new(cfg.clone(), Arc::new(FakeKinesis::default()));
    let _ = p.stats_json();
    let base = Producer::new(defaults.clone(), Arc::new(FakeKinesis::default()));
    let _ = base.reconfigure(&defaults, &cfg);
});
