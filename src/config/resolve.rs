//! From what the user wrote to the validated [`Config`], driven by the key
//! table: every key is read (its value or its default) into its canonical
//! TOML form, derived defaults are computed, ranges checked, then each
//! `[streams."NAME"]` table the same way over the global values. The
//! result is the table `--check` prints, deserialised into `Config`.
//!
//! Errors come in that order (unknown keys were refused before, in
//! raw.rs): a key's type or value, in table order; then ranges, a key after
//! the keys its bounds name; then the stream tables one by one.

use super::keys::{self, KeyDef, Values, STREAMS};
use super::raw::RawConfig;
use super::values::Bad;
use super::{glob_match, Config, ConfigError};

pub(super) fn resolve(raw: &RawConfig) -> Result<Config, ConfigError> {
    let mut global = toml::Table::new();
    for k in keys::global_keys() {
        let read = match raw.get(k.name) {
            Some(w) => k.read(w.value.clone()).map_err(|e| match e {
                Bad::Type(message) => ConfigError::BadValue {
                    key: k.name.into(),
                    origin: w.origin.clone(),
                    message,
                },
                Bad::Value(message) => ConfigError::Invalid {
                    key: k.name,
                    message,
                },
            })?,
            None => k.default_value().map(|d| read_default(k, d)),
        };
        if let Some(v) = read {
            global.insert(k.name.into(), v);
        }
    }
    for k in keys::global_keys() {
        if raw.get(k.name).is_none() {
            let values = Values {
                own: &global,
                global: None,
            };
            if let Some(n) = k.derived(&values, false) {
                global.insert(k.name.into(), keys::int_value(n));
            }
        }
    }
    check_ranges(
        &Values {
            own: &global,
            global: None,
        },
        false,
    )
    .map_err(|(key, message)| ConfigError::Invalid { key, message })?;

    let mut streams = toml::Table::new();
    if let (Some(toml::Value::Table(tables)), Some(w)) = (global.remove(STREAMS), raw.get(STREAMS))
    {
        for (name, table) in tables {
            let toml::Value::Table(table) = table else {
                unreachable!("raw.rs lets only tables of settings through")
            };
            let s = resolve_stream(&global, &name, &table, &w.origin)?;
            streams.insert(name, toml::Value::Table(s));
        }
    }
    global.insert(STREAMS.into(), toml::Value::Table(streams));
    Ok(into_config(global))
}

/// A default that does not read is a mistake in the key table.
fn read_default(k: &KeyDef, d: toml::Value) -> toml::Value {
    match k.read(d) {
        Ok(Some(v)) => v,
        other => panic!("the default of `{}` does not read: {other:?}", k.name),
    }
}

/// The values a stream starts from: the global values of the keys it inherits.
pub(super) fn inherited(global: &toml::Table) -> toml::Table {
    keys::stream_keys()
        .filter(|k| k.inherited())
        .filter_map(|k| Some((k.name.to_string(), global.get(k.name)?.clone())))
        .collect()
}

fn resolve_stream(
    global: &toml::Table,
    name: &str,
    table: &toml::Table,
    origin: &str,
) -> Result<toml::Table, ConfigError> {
    let bad = |key: &str, message: String| ConfigError::InvalidStream {
        stream: name.to_string(),
        key: key.to_string(),
        message,
    };
    let mut s = inherited(global);
    for k in keys::stream_keys() {
        let Some(v) = table.get(k.name) else {
            continue;
        };
        match k.read(v.clone()) {
            Ok(Some(v)) => {
                s.insert(k.name.into(), v);
            }
            Ok(None) => {
                s.remove(k.name);
            }
            Err(Bad::Type(message)) => {
                return Err(bad(k.name, format!("{message} (from {origin})")))
            }
            Err(Bad::Value(message)) => return Err(bad(k.name, message)),
        }
    }
    for k in keys::stream_keys() {
        if !table.contains_key(k.name) {
            let values = Values {
                own: &s,
                global: Some(global),
            };
            if let Some(n) = k.derived(&values, true) {
                s.insert(k.name.into(), keys::int_value(n));
            }
        }
    }
    check_ranges(
        &Values {
            own: &s,
            global: Some(global),
        },
        true,
    )
    .map_err(|(key, message)| bad(key, message))?;
    let allowed = match global.get("streams_allowed") {
        None => true,
        Some(p) => p
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(toml::Value::as_str)
            .any(|p| glob_match(p, name)),
    };
    if !allowed {
        return Err(bad(
            "-",
            "the stream has settings but streams_allowed does not allow it".into(),
        ));
    }
    Ok(s)
}

fn check_ranges(values: &Values, in_stream: bool) -> Result<(), (&'static str, String)> {
    for k in keys::check_order(in_stream) {
        let Some((lo, hi)) = k.range(in_stream) else {
            continue;
        };
        let (v, lo, hi) = (values.int(k.name), values.bound(lo), values.bound(hi));
        if v < lo || v > hi {
            return Err((
                k.name,
                format!("{v} is outside the allowed range {lo}..={hi}"),
            ));
        }
    }
    Ok(())
}

/// The canonical table as the typed config. Every value was read by its
/// key's reader, so a failure here is a key without a field (or the reverse).
pub(super) fn into_config(table: toml::Table) -> Config {
    toml::Value::Table(table)
        .try_into()
        .unwrap_or_else(|e| panic!("the key table and Config disagree: {e}"))
}
