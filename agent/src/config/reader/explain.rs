//! `steeple check-config --explain`: every key, the `STEEPLE_*` environment variable that
//! overrides it, and where its value came from — so operators can find the variable
//! names without reading the source.

use std::collections::HashMap;
use std::fmt::Write as _;

use toml::{Table, Value};

use super::VAULT_ENV_DEFAULTS;
use super::keys::{SECTIONS, TABLE_ARRAYS};

/// Keys the environment cannot set: their values are arrays of tables.
const FILE_ONLY: &[&str] = &["vault.allow"];

/// Where a key's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Not set: the documented default.
    Default,
    /// The configuration file.
    File,
    /// This environment variable.
    Env(String),
}

/// One key as `--explain` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOrigin {
    /// The dotted key (`sds.socket`), or `name[].key` for arrays of tables.
    pub key: String,
    /// The variable that overrides it (`STEEPLE_SDS_SOCKET`), plus any other variable
    /// read as its default (`VAULT_ADDR`); `None` when only the file can set it.
    pub env_vars: Option<String>,
    /// Where its value came from.
    pub origin: Origin,
}

/// `STEEPLE_<SECTION>_<KEY>`, the variable that overrides `section.key`.
pub fn env_var(section: &str, key: &str) -> String {
    format!("STEEPLE_{section}_{key}").to_ascii_uppercase()
}

/// Every key of the configuration `text` (already checked to be valid TOML) with `env`
/// applied: its variable(s) and its origin.
pub fn explain(text: &str, env: impl IntoIterator<Item = (String, String)>) -> Vec<KeyOrigin> {
    let root: Table = text.parse().unwrap_or_default();
    let env: HashMap<String, String> = env.into_iter().collect();
    let in_file = |section: &str, key: &str| {
        root.get(section)
            .and_then(Value::as_table)
            .is_some_and(|t| t.contains_key(key))
    };
    let mut keys = Vec::new();
    for (section, names) in SECTIONS {
        for key in names.iter().copied() {
            let dotted = format!("{section}.{key}");
            if FILE_ONLY.contains(&dotted.as_str()) {
                let origin = file_or_default(in_file(section, key));
                keys.push(file_only(dotted, origin));
                continue;
            }
            let variable = env_var(section, key);
            let fallback = fallback_var(section, key);
            let origin = if env.contains_key(&variable) {
                Origin::Env(variable.clone())
            } else if in_file(section, key) {
                Origin::File
            } else {
                fallback
                    .filter(|v| env.contains_key(*v))
                    .map_or(Origin::Default, |v| Origin::Env(v.to_owned()))
            };
            let env_vars = match fallback {
                Some(fallback) => format!("{variable} (else {fallback})"),
                None => variable,
            };
            keys.push(KeyOrigin {
                key: dotted,
                env_vars: Some(env_vars),
                origin,
            });
        }
    }
    for (array, names) in TABLE_ARRAYS {
        let origin = file_or_default(root.contains_key(*array));
        keys.extend(
            names
                .iter()
                .map(|key| file_only(format!("{array}[].{key}"), origin.clone())),
        );
    }
    let aliases = file_or_default(root.contains_key("envelope_aliases"));
    keys.push(file_only("envelope_aliases".to_owned(), aliases));
    keys
}

/// The table `--explain` prints: key, variable(s), origin; one line each.
pub fn render(keys: &[KeyOrigin]) -> String {
    let width = keys.iter().map(|k| k.key.len()).max().unwrap_or(0);
    let vars = |k: &KeyOrigin| {
        k.env_vars
            .clone()
            .unwrap_or_else(|| "(file only)".to_owned())
    };
    let var_width = keys.iter().map(|k| vars(k).len()).max().unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:width$}  {:var_width$}  SET BY",
        "KEY", "ENVIRONMENT VARIABLE"
    );
    for key in keys {
        let origin = match &key.origin {
            Origin::Default => "default".to_owned(),
            Origin::File => "file".to_owned(),
            Origin::Env(name) => format!("env {name}"),
        };
        let _ = writeln!(
            out,
            "{:width$}  {:var_width$}  {origin}",
            key.key,
            vars(key)
        );
    }
    out
}

/// The non-`STEEPLE_` variable read as `section.key`'s default, if there is one.
fn fallback_var(section: &str, key: &str) -> Option<&'static str> {
    match (section, key) {
        ("workload_api", "socket") => Some("SPIFFE_ENDPOINT_SOCKET"),
        ("vault", _) => VAULT_ENV_DEFAULTS
            .iter()
            .find(|(_, k)| *k == key)
            .map(|(var, _)| *var),
        _ => None,
    }
}

fn file_or_default(in_file: bool) -> Origin {
    if in_file {
        Origin::File
    } else {
        Origin::Default
    }
}

fn file_only(key: String, origin: Origin) -> KeyOrigin {
    KeyOrigin {
        key,
        env_vars: None,
        origin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn find<'a>(keys: &'a [KeyOrigin], key: &str) -> &'a KeyOrigin {
        keys.iter()
            .find(|k| k.key == key)
            .unwrap_or_else(|| panic!("{key} not explained"))
    }

    #[test]
    fn every_key_names_the_variable_the_reader_applies() {
        let keys = explain("", Vec::new());
        let default = Config::parse("", Vec::new()).unwrap();
        let settable: Vec<_> = SECTIONS
            .iter()
            .flat_map(|(s, names)| names.iter().map(move |k| format!("{s}.{k}")))
            .collect();
        for dotted in &settable {
            let explained = find(&keys, dotted);
            let Some(vars) = &explained.env_vars else {
                assert!(FILE_ONLY.contains(&dotted.as_str()), "{dotted}");
                continue;
            };
            let (section, key) = dotted.split_once('.').unwrap();
            let variable = env_var(section, key);
            assert!(vars.starts_with(&variable), "{dotted}: {vars}");
            // The reader applies the variable: it either changes the key or is refused
            // as a bad value, naming the variable (never an unknown key, never ignored).
            match Config::parse("", env(&[(&variable, "[")])) {
                Err(errors) => assert!(
                    errors.0.iter().any(|e| e.key == variable)
                        && !errors
                            .0
                            .iter()
                            .any(|e| e.message.starts_with("unknown key")),
                    "{dotted}: {errors}"
                ),
                Ok(config) => assert_ne!(config, default, "{variable} changed nothing"),
            }
        }
        assert_eq!(
            find(&keys, "sds.socket").env_vars.as_deref(),
            Some("STEEPLE_SDS_SOCKET")
        );
        assert_eq!(
            find(&keys, "vault.addr").env_vars.as_deref(),
            Some("STEEPLE_VAULT_ADDR (else VAULT_ADDR)")
        );
        assert_eq!(find(&keys, "jwt_svids[].audience").env_vars, None);
        assert_eq!(find(&keys, "vault.allow").env_vars, None);
        assert!(keys.iter().all(|k| k.origin == Origin::Default));
    }

    #[test]
    fn the_origin_is_the_file_a_variable_or_the_default() {
        let text = "[sds]\nsocket = \"/a\"\nsocket_mode = 0o660\n\
                    [[jwt_svids]]\naudience = \"x\"\n[vault]\naddr = \"https://v\"\n";
        let keys = explain(
            text,
            env(&[
                ("STEEPLE_SDS_SOCKET", "/b"),
                ("SPIFFE_ENDPOINT_SOCKET", "/spire.sock"),
                ("VAULT_ADDR", "https://ignored"),
                ("VAULT_NAMESPACE", "team-a"),
            ]),
        );
        let origin = |key| find(&keys, key).origin.clone();
        assert_eq!(
            origin("sds.socket"),
            Origin::Env("STEEPLE_SDS_SOCKET".into())
        );
        assert_eq!(origin("sds.socket_mode"), Origin::File);
        assert_eq!(origin("sds.max_streams"), Origin::Default);
        assert_eq!(
            origin("workload_api.socket"),
            Origin::Env("SPIFFE_ENDPOINT_SOCKET".into())
        );
        assert_eq!(
            origin("vault.addr"),
            Origin::File,
            "the file wins over VAULT_ADDR"
        );
        assert_eq!(
            origin("vault.namespace"),
            Origin::Env("VAULT_NAMESPACE".into())
        );
        assert_eq!(origin("jwt_svids[].audience"), Origin::File);
        assert_eq!(origin("callers[].uids"), Origin::Default);
        let table = render(&keys);
        let line = table
            .lines()
            .find(|l| l.starts_with("sds.socket "))
            .unwrap();
        assert!(
            line.contains("STEEPLE_SDS_SOCKET") && line.ends_with("env STEEPLE_SDS_SOCKET"),
            "{line}"
        );
        assert!(table.starts_with("KEY "), "{table}");
        assert_eq!(table.lines().count(), keys.len() + 1);
    }
}
