//! What the user wrote: the config file's keys and the `KPLD_*` overrides,
//! each value with where it came from. Unknown keys, also in stream
//! tables, are refused here; the values are read and checked in
//! `resolve.rs`.

use super::keys::{self, STREAMS};
use super::ConfigError;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The config as written, before defaults and checks.
#[derive(Debug, Default, Clone)]
pub struct RawConfig {
    values: BTreeMap<&'static str, Written>,
}

/// One key's value as written.
#[derive(Debug, Clone)]
pub(super) struct Written {
    pub(super) value: toml::Value,
    /// The file's path, or `environment variable KPLD_...`.
    pub(super) origin: String,
}

impl RawConfig {
    /// Reads `path` (if any) and applies `KPLD_*` overrides from `env`.
    pub fn read(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<RawConfig, ConfigError> {
        match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?;
                RawConfig::parse(&text, p, env)
            }
            None => RawConfig::from_table(toml::Table::new(), "defaults", env),
        }
    }

    /// `text` as the contents of the file at `path` (which errors name; it is
    /// not read), then the `KPLD_*` overrides from `env`.
    pub fn parse(
        text: &str,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<RawConfig, ConfigError> {
        let table = text
            .parse::<toml::Table>()
            .map_err(|e| ConfigError::Syntax {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        RawConfig::from_table(table, &path.display().to_string(), env)
    }

    fn from_table(
        mut table: toml::Table,
        file_origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<RawConfig, ConfigError> {
        let mut origins: HashMap<String, String> = table
            .keys()
            .map(|k| (k.clone(), file_origin.to_string()))
            .collect();
        for (name, value) in env {
            let Some(key) = name.strip_prefix("KPLD_") else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            if keys::key(&key).is_none_or(|k| !k.is_global()) {
                // KPLD_SOCKET and the like belong to the clients.
                continue;
            }
            table.insert(key.clone(), env_value(&value));
            origins.insert(key, format!("environment variable {name}"));
        }
        let mut raw = RawConfig::default();
        for (key, value) in table {
            let origin = origins.remove(&key).unwrap_or_default();
            raw.set(&key, value, origin)?;
        }
        Ok(raw)
    }

    /// Sets `key` as written at `origin`, refusing keys kpld does not know.
    pub fn set(
        &mut self,
        key: &str,
        value: toml::Value,
        origin: impl Into<String>,
    ) -> Result<(), ConfigError> {
        let origin = origin.into();
        let Some(def) = keys::key(key).filter(|k| k.is_global()) else {
            return Err(ConfigError::UnknownKey {
                key: key.to_string(),
                origin,
            });
        };
        if def.name == STREAMS {
            check_stream_tables(&value, &origin)?;
        }
        self.values.insert(def.name, Written { value, origin });
        Ok(())
    }

    pub(super) fn get(&self, key: &str) -> Option<&Written> {
        self.values.get(key)
    }
}

/// `streams` must be tables of known stream keys; the error names the
/// stream and the key.
fn check_stream_tables(value: &toml::Value, origin: &str) -> Result<(), ConfigError> {
    let bad = |stream: &str, key: &str, message: String| ConfigError::InvalidStream {
        stream: stream.to_string(),
        key: key.to_string(),
        message: format!("{message} (from {origin})"),
    };
    let toml::Value::Table(streams) = value else {
        return Err(ConfigError::BadValue {
            key: STREAMS.into(),
            origin: origin.into(),
            message: "must be tables: [streams.\"NAME\"]".into(),
        });
    };
    for (name, table) in streams {
        let toml::Value::Table(table) = table else {
            return Err(bad(name, "-", "must be a table of settings".into()));
        };
        for key in table.keys() {
            if keys::key(key).is_none_or(|k| !k.in_streams()) {
                let known: Vec<&str> = keys::stream_keys().map(|k| k.name).collect();
                return Err(bad(
                    name,
                    key,
                    format!("unknown key; a stream table may hold {}", known.join(", ")),
                ));
            }
        }
    }
    Ok(())
}

/// An environment value is TOML when it parses as one (numbers, booleans),
/// else a plain string (paths, regions, URLs).
fn env_value(v: &str) -> toml::Value {
    format!("v = {v}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(v.to_string()))
}
