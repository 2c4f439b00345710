//! What a SIGHUP reload may change on a running agent: `[[callers]]`, `[log] level`,
//! `[[jwt_svids]]`, `[envelopes]` (with `[envelope_aliases]`) and `[control_plane]`. Every
//! other section is read only at start; a new configuration that changes one is refused
//! as a whole, naming the sections, and the running configuration stays.

use crate::config::Config;

/// How a new configuration differs from the running one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConfigChange {
    /// `[[callers]]` changed: the new policy applies to new and open SDS streams.
    pub callers: bool,
    /// `[log] level` changed.
    pub log_level: bool,
    /// `[[jwt_svids]]` changed: their tasks restart.
    pub jwt_svids: bool,
    /// The envelope sources or registry settings changed (`[envelopes]`,
    /// `[envelope_aliases]`, `[control_plane]`, or the names `[[jwt_svids]]` reserves):
    /// the envelope tasks restart.
    pub envelopes: bool,
    /// Sections that changed but are applied only at start.
    pub needs_restart: Vec<&'static str>,
}

impl ConfigChange {
    /// Compares every section of `old` and `new`.
    pub fn between(old: &Config, new: &Config) -> Self {
        // Destructured without `..`: a new section must be sorted into one kind or the
        // other here before the agent compiles.
        let Config {
            agent,
            envelopes,
            control_plane,
            aws,
            vault,
            workload_api,
            sds,
            jwt_svids,
            callers,
            workloads,
            dev,
            log,
            admin,
            audit,
        } = new;
        let mut needs_restart = Vec::new();
        let fixed = [
            ("[agent]", old.agent == *agent),
            ("[aws]", old.aws == *aws),
            ("[vault]", old.vault == *vault),
            ("[workload_api]", old.workload_api == *workload_api),
            ("[sds]", old.sds == *sds),
            ("[[workloads]]", old.workloads == *workloads),
            ("[dev]", old.dev == *dev),
            ("[log] format", old.log.format == log.format),
            ("[admin]", old.admin == *admin),
            ("[audit]", old.audit == *audit),
        ];
        for (section, same) in fixed {
            if !same {
                needs_restart.push(section);
            }
        }
        let jwt_changed = old.jwt_svids != *jwt_svids;
        Self {
            callers: old.callers != *callers,
            log_level: old.log.level != log.level,
            jwt_svids: jwt_changed,
            envelopes: jwt_changed
                || old.envelopes != *envelopes
                || old.control_plane != *control_plane,
            needs_restart,
        }
    }

    /// The reloadable sections that changed, for the log.
    pub fn applied(&self) -> Vec<&'static str> {
        [
            ("[[callers]]", self.callers),
            ("[log] level", self.log_level),
            ("[[jwt_svids]]", self.jwt_svids),
            ("[envelopes]/[control_plane]", self.envelopes),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> Config {
        Config::parse(toml, Vec::new()).expect("valid test config")
    }

    #[test]
    fn the_same_configuration_changes_nothing() {
        let base = config("[envelopes]\nenabled = true\n");
        let change = ConfigChange::between(&base, &base.clone());
        assert_eq!(change, ConfigChange::default());
        assert!(change.applied().is_empty());
    }

    #[test]
    fn callers_log_level_and_envelopes_are_reloadable() {
        let old = config("");
        let new = config(
            "[log]\nlevel = \"debug\"\n[envelopes]\nenabled = true\n\
             [[callers]]\nuids = [0]\nresources = [\"*\"]\n",
        );
        let change = ConfigChange::between(&old, &new);
        assert!(change.callers && change.log_level && change.envelopes);
        assert!(!change.jwt_svids);
        assert!(
            change.needs_restart.is_empty(),
            "{:?}",
            change.needs_restart
        );
    }

    #[test]
    fn a_jwt_svid_change_also_restarts_the_envelopes_that_avoid_its_name() {
        let old = config("");
        let new = config("[[jwt_svids]]\naudience = \"vault\"\n");
        let change = ConfigChange::between(&old, &new);
        assert!(change.jwt_svids && change.envelopes);
    }

    #[test]
    fn start_only_sections_are_named() {
        let old = config("");
        let new = config(
            "[sds]\nsocket_mode = 0o660\n[log]\nformat = \"json\"\n\
             [admin]\nlisten = \"127.0.0.1:9464\"\n",
        );
        let change = ConfigChange::between(&old, &new);
        assert_eq!(change.needs_restart, ["[sds]", "[log] format", "[admin]"]);
    }
}
