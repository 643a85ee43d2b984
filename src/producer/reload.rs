//! What a SIGHUP changes: [`Reload`], the report of
//! [`Producer::reconfigure`](super::Producer::reconfigure). Which keys apply
//! live and which wait for a restart comes from the key table
//! (`config::keys`, each key's `sighup`), for the global keys and for the
//! keys of each `[streams."NAME"]` table alike.

use crate::config::{keys, Config, Sighup};
use std::collections::BTreeSet;

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reload {
    /// Applied now: `key: old -> new`, or `streams.NAME`.
    pub changed: Vec<String>,
    /// Changed in the file but kept until a restart.
    pub restart_needed: Vec<String>,
}

impl Reload {
    /// Compares the running configuration with the re-read one, key by key
    /// as `--check` prints them.
    pub fn between(old_cfg: &Config, new: &Config) -> Reload {
        let mut report = Reload::default();
        let (old, fresh) = (old_cfg.table(), new.table());
        let names: BTreeSet<&String> = old.keys().chain(fresh.keys()).collect();
        for k in names {
            let (o, f) = (old.get(k), fresh.get(k));
            if o == f {
                continue;
            }
            if k == keys::STREAMS {
                report.streams(o, f, old_cfg, new);
                continue;
            }
            let change = format!("{k}: {} -> {}", shown(o), shown(f));
            if keys::key(k).is_some_and(|d| d.sighup == Sighup::Live) {
                report.changed.push(change);
            } else {
                report.restart_needed.push(change);
            }
        }
        report
    }

    /// A stream whose table changed has its new settings at once; if a key
    /// that needs a restart (those that choose its Kinesis client) changed
    /// too, that part waits. A stream without a table runs with the global
    /// values, which its side is compared with.
    fn streams(
        &mut self,
        old: Option<&toml::Value>,
        new: Option<&toml::Value>,
        old_cfg: &Config,
        new_cfg: &Config,
    ) {
        let table = |v: Option<&toml::Value>| v.and_then(toml::Value::as_table).cloned();
        let (old, new) = (
            table(old).unwrap_or_default(),
            table(new).unwrap_or_default(),
        );
        let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
        for n in names {
            let (o, f) = (old.get(n), new.get(n));
            if o == f {
                continue;
            }
            let restart: Vec<&str> = keys::stream_keys()
                .filter(|k| k.sighup == Sighup::Restart)
                .map(|k| k.name)
                .collect();
            let global = |c: &Config| toml::Value::try_from(c.default_stream_settings()).ok();
            let (og, fg) = (global(old_cfg), global(new_cfg));
            let value = |s: Option<&toml::Value>, g: &Option<toml::Value>, k: &str| {
                s.or(g.as_ref()).and_then(|s| s.get(k)).cloned()
            };
            if restart.iter().any(|k| value(o, &og, k) != value(f, &fg, k)) {
                self.restart_needed
                    .push(format!("streams.{n} {}", restart.join("/")));
            }
            self.changed.push(format!("streams.{n}"));
        }
    }
}

fn shown(v: Option<&toml::Value>) -> String {
    v.map_or("unset".into(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Config {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        Config::load(Some(f.path()), []).unwrap()
    }

    #[test]
    fn access_lists_and_stream_settings_change_live_and_bounds_wait_for_a_restart() {
        let old = load("");
        let new = load(
            "allowed_uids = [1000]\nallowed_gids = [7]\nrecord_ttl_ms = 5000\n\
             log_level = \"debug\"\nstreams_allowed = [\"a\"]\nmax_connections = 3\n\
             socket_mode = \"0600\"\nmetrics_level = \"none\"",
        );
        let r = Reload::between(&old, &new);
        assert_eq!(
            r.changed,
            [
                "allowed_gids: [] -> [7]",
                "allowed_uids: [] -> [1000]",
                "log_level: \"info\" -> \"debug\"",
                "record_ttl_ms: 30000 -> 5000",
                "streams_allowed: unset -> [\"a\"]",
            ]
        );
        assert_eq!(
            r.restart_needed,
            [
                "max_connections: 24 -> 3",
                "metrics_level: \"detailed\" -> \"none\"",
                "socket_mode: \"0660\" -> \"0600\"",
            ]
        );
    }

    #[test]
    fn a_stream_changing_its_kinesis_client_needs_a_restart_for_that_part() {
        let old = load("[streams.a]\nrecord_ttl_ms = 1000\n[streams.b]\nrate_limit = 10\n");
        let new = load(
            "[streams.a]\nrecord_ttl_ms = 2000\nregion = \"eu-west-1\"\n\
             [streams.c]\nrate_limit = 10\n",
        );
        let r = Reload::between(&old, &new);
        assert_eq!(r.changed, ["streams.a", "streams.b", "streams.c"]);
        // b and c have no client of their own before or after: nothing waits.
        assert_eq!(
            r.restart_needed,
            ["streams.a region/kinesis_endpoint/ordered/role_arn"]
        );
    }

    #[test]
    fn an_unchanged_config_reports_nothing() {
        let c = load("record_ttl_ms = 5000\n[streams.a]\nregion = \"eu-west-1\"\n");
        assert_eq!(Reload::between(&c, &c.clone()), Reload::default());
    }
}
