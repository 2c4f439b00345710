use super::*;

fn rule(namespace: Option<&str>, mount: &str, paths: &[&str]) -> VaultAllowRule {
    VaultAllowRule {
        namespace: namespace.map(str::to_owned),
        mount: mount.to_owned(),
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    }
}

fn target<'a>(namespace: Option<&'a str>, mount: &'a str, path: &'a str) -> VaultTarget<'a> {
    VaultTarget {
        namespace,
        mount,
        path,
    }
}

#[test]
fn an_empty_list_allows_nothing() {
    let list = VaultAllowlist::new(Vec::new()).unwrap();
    assert!(list.is_empty());
    let err = list.check(&target(None, "secret", "app/db")).unwrap_err();
    assert!(err.contains("[[vault.allow]] is empty"), "{err}");
}

#[test]
fn prefixes_match_whole_segments() {
    let list =
        VaultAllowlist::new(vec![rule(None, "secret", &["payments/", "shared/db"])]).unwrap();
    assert!(list.check(&target(None, "secret", "payments")).is_ok());
    assert!(list.check(&target(None, "secret", "payments/db")).is_ok());
    assert!(list.check(&target(None, "secret", "shared/db")).is_ok());
    assert!(list.check(&target(None, "/secret/", "shared/db/x")).is_ok());
    for outside in ["payments-old/db", "shared/dbx", "shared", "other"] {
        let err = list.check(&target(None, "secret", outside)).unwrap_err();
        assert!(err.contains("outside every"), "{outside}: {err}");
    }
    assert!(list.check(&target(None, "kv", "payments/db")).is_err());
}

#[test]
fn a_star_allows_the_whole_mount() {
    let list = VaultAllowlist::new(vec![rule(None, "transit", &["*"])]).unwrap();
    assert!(list.check(&target(None, "transit", "any-key")).is_ok());
    assert!(list.check(&target(None, "secret", "any-key")).is_err());
}

#[test]
fn namespaces_must_match_exactly() {
    let list = VaultAllowlist::new(vec![rule(Some("team-a/"), "secret", &["*"])]).unwrap();
    assert!(list.check(&target(Some("team-a"), "secret", "x")).is_ok());
    assert!(list.check(&target(Some("/team-a/"), "secret", "x")).is_ok());
    assert!(list.check(&target(None, "secret", "x")).is_err());
    assert!(list.check(&target(Some("team-b"), "secret", "x")).is_err());
    assert!(
        list.check(&target(Some("team-a/child"), "secret", "x"))
            .is_err()
    );
    let root = VaultAllowlist::new(vec![rule(Some(""), "secret", &["*"])]).unwrap();
    assert!(root.check(&target(None, "secret", "x")).is_ok());
    assert!(root.check(&target(Some(""), "secret", "x")).is_ok());
}

#[test]
fn reserved_mounts_are_refused_even_when_listed() {
    for mount in ["auth", "auth/token", "sys", "identity/", "cubbyhole"] {
        let err = VaultAllowlist::new(vec![rule(None, mount, &["*"])]).unwrap_err();
        assert_eq!(err.index, 1);
        assert!(err.problem.contains("is refused"), "{mount}: {err}");
    }
    let list = VaultAllowlist::new(vec![rule(None, "secret", &["*"])]).unwrap();
    let err = list
        .check(&target(None, "auth/token", "lookup-self"))
        .unwrap_err();
    assert!(err.contains("is refused"), "{err}");
    // A mount that merely starts with the same letters is an ordinary mount.
    assert!(VaultAllowlist::new(vec![rule(None, "authors", &["*"])]).is_ok());
}

#[test]
fn dot_and_empty_segments_are_refused_everywhere() {
    let list = VaultAllowlist::new(vec![rule(None, "secret", &["*"])]).unwrap();
    for (namespace, mount, path) in [
        (None, "secret/..", "x"),
        (None, "..", "x"),
        (None, "secret", "../sys/x"),
        (None, "secret", "a/./b"),
        (None, "secret", "a//b"),
        (None, "secret", ""),
        (Some("../x"), "secret", "a"),
        (Some("team a"), "secret", "a"),
        (None, "secret", "a\nb"),
    ] {
        let err = list.check(&target(namespace, mount, path)).unwrap_err();
        assert!(
            err.contains("the Vault"),
            "{namespace:?} {mount} {path}: {err}"
        );
    }
    let err = VaultAllowlist::new(vec![rule(None, "secret", &["a/../b"])]).unwrap_err();
    assert!(err.problem.contains("segment"), "{err}");
}

#[test]
fn an_entry_needs_paths() {
    let err =
        VaultAllowlist::new(vec![rule(None, "secret", &["*"]), rule(None, "kv", &[])]).unwrap_err();
    assert_eq!(err.index, 2);
    assert!(err.problem.contains("paths is empty"), "{err}");
}

#[test]
fn the_target_is_named_in_refusals() {
    let list = VaultAllowlist::new(vec![rule(None, "secret", &["a"])]).unwrap();
    let err = list
        .check(&target(Some("ns1"), "secret", "b/c"))
        .unwrap_err();
    assert!(err.contains("namespace ns1: secret/b/c"), "{err}");
}
