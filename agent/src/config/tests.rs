use super::*;

fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    Config::parse(
        text,
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
}

#[test]
fn defaults_match_spire_agent_names() {
    let c = parse("", &[]).unwrap();
    assert_eq!(c.sds.default_svid_name, "default");
    assert_eq!(c.sds.default_bundle_name, "ROOTCA");
    assert_eq!(c.sds.default_all_bundles_name, "ALL");
    assert_eq!(c.sds.socket_mode, 0o600);
    assert_eq!(
        c.workload_api.socket,
        PathBuf::from("/tmp/spire-agent/public/api.sock")
    );
}

#[test]
fn every_bad_key_is_named() {
    let text = r#"
        [sds]
        socket_mode = "999"
        bogus = 1
        max_resource_names = -3
        [log]
        format = "xml"
        [nope]
        [[jwt_svids]]
        resource_name = "x"
    "#;
    let errors = parse(text, &[("STEEPLE_SDS_COLOUR", "red")]).unwrap_err().0;
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    for expected in [
        "sds.socket_mode",
        "sds.bogus",
        "sds.max_resource_names",
        "log.format",
        "nope",
        "jwt_svids[0].audience",
        "STEEPLE_SDS_COLOUR",
    ] {
        assert!(keys.contains(&expected), "{expected} missing from {keys:?}");
    }
}

#[test]
fn environment_overrides_the_file_and_errors_name_the_variable() {
    let c = parse(
        "[sds]\nsocket = \"/a.sock\"",
        &[
            ("STEEPLE_SDS_SOCKET", "/b.sock"),
            ("STEEPLE_WORKLOAD_API_SOCKET", "unix:///w.sock"),
        ],
    )
    .unwrap();
    assert_eq!(c.sds.socket, PathBuf::from("/b.sock"));
    assert_eq!(c.workload_api.socket, PathBuf::from("/w.sock"));
    let errors = parse("", &[("STEEPLE_SDS_SOCKET_MODE", "abc")])
        .unwrap_err()
        .0;
    assert_eq!(errors[0].key, "STEEPLE_SDS_SOCKET_MODE");
}

#[test]
fn spiffe_endpoint_socket_is_the_workload_api_default() {
    let c = parse(
        "",
        &[("SPIFFE_ENDPOINT_SOCKET", "unix:///run/spire/agent.sock")],
    )
    .unwrap();
    assert_eq!(
        c.workload_api.socket,
        PathBuf::from("/run/spire/agent.sock")
    );
}

#[test]
fn jwt_svids_get_default_resource_names() {
    let c = parse("[[jwt_svids]]\naudience = \"upstream\"", &[]).unwrap();
    assert_eq!(c.jwt_svids[0].resource_name, "jwt-svid:upstream");
}

#[test]
fn durations_parse() {
    assert_eq!(
        reader::parse_duration("250ms"),
        Some(Duration::from_millis(250))
    );
    assert_eq!(reader::parse_duration("5m"), Some(Duration::from_secs(300)));
    assert_eq!(reader::parse_duration("5"), None);
    assert_eq!(reader::parse_duration("x5s"), None);
}

#[test]
fn garbage_toml_is_refused() {
    assert!(parse("[sds\nsocket=", &[]).is_err());
}

#[test]
fn the_shipped_example_holds_exactly_the_defaults() {
    let text = include_str!("../../../deploy/steeple.toml");
    assert_eq!(parse(text, &[]).unwrap(), parse("", &[]).unwrap());
}

#[test]
fn dev_lifetimes_are_bounded() {
    let errors = parse("[dev]\nx509_svid_ttl = \"1s\"\njwt_svid_ttl = \"48h\"", &[])
        .unwrap_err()
        .0;
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["dev.x509_svid_ttl", "dev.jwt_svid_ttl"]);
}

#[test]
fn production_profile_refuses_the_local_provider_and_insecure_endpoints() {
    let text = "[agent]\nprofile = \"production\"\n[envelopes]\nlocal_master_key_env = \"K\"\n\
                [aws]\nsts_endpoint = \"http://127.0.0.1:5000\"\nkms_endpoint = \"https://kms.example.com\"";
    let errors = parse(text, &[]).unwrap_err().0;
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["envelopes.local_master_key_env", "aws.sts_endpoint"]);
    let allowed = format!("{text}\nallow_insecure_endpoints = true");
    let errors = parse(&allowed, &[]).unwrap_err().0;
    assert_eq!(errors.len(), 1);
}

#[test]
fn production_profile_checks_the_aws_sdks_endpoint_variables_too() {
    let text = "[agent]\nprofile = \"production\"\n\
                [aws]\nenabled = true\nrole_arn = \"arn:aws:iam::111122223333:role/app\"";
    let keys = |text: &str, env: &[(&str, &str)]| -> Vec<String> {
        match parse(text, env) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.0.into_iter().map(|e| e.key).collect(),
        }
    };
    let plain = [
        ("AWS_ENDPOINT_URL_STS", "http://sts.example.com"),
        ("AWS_ENDPOINT_URL", "https://127.0.0.1:4566"),
    ];
    assert_eq!(
        keys(text, &plain),
        ["AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL"],
        "STS from its own variable, KMS from the global one"
    );
    let explicit = format!(
        "{text}\nsts_endpoint = \"https://sts.example.com\"\nkms_endpoint = \"https://kms.example.com\""
    );
    assert!(keys(&explicit, &plain).is_empty(), "explicit keys win");
    let allowed = format!("{text}\nallow_insecure_endpoints = true");
    assert!(keys(&allowed, &plain).is_empty());
    let ignored = [
        plain[0],
        plain[1],
        ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true"),
    ];
    assert!(keys(text, &ignored).is_empty());
    let disabled = "[agent]\nprofile = \"production\"";
    assert!(
        keys(disabled, &plain).is_empty(),
        "not Steeple's when [aws] is off"
    );
}

#[test]
fn aws_and_envelope_sections_are_checked_and_overridable() {
    let errors = parse(
        "[aws]\nenabled = true\nsession_duration = \"13h\"\ncontainer_credentials_listen = \"0.0.0.0:1\"\n\
         [envelopes]\npaths = [1]\n[envelope_aliases]\n\"a/b\" = 3",
        &[],
    )
    .unwrap_err()
    .0;
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "envelope_aliases",
            "envelopes.paths",
            "aws.container_credentials_listen",
            "aws.session_duration",
            "aws.role_arn"
        ]
    );
    let config = parse(
        "[envelope_aliases]\n\"a/b\" = \"ab\"",
        &[
            (
                "STEEPLE_AWS_KEY_ARN_ALLOWLIST",
                "arn:aws:kms:us-east-1:111122223333:, arn:aws:kms:eu-west-1:111122223333:",
            ),
            ("STEEPLE_ENVELOPES_ENABLED", "true"),
        ],
    )
    .unwrap();
    assert_eq!(config.aws.key_arn_allowlist.len(), 2);
    assert!(config.envelopes.enabled);
    assert_eq!(config.envelopes.aliases["a/b"], "ab");
}

#[test]
fn aws_region_and_endpoints_are_left_to_the_sdk_unless_set() {
    let aws = parse("", &[]).unwrap().aws;
    assert_eq!(
        (aws.region, aws.sts_endpoint, aws.kms_endpoint),
        (None, None, None)
    );
    let aws = parse("[aws]\nregion = \"eu-west-1\"", &[]).unwrap().aws;
    assert_eq!(aws.region.as_deref(), Some("eu-west-1"));
}

#[test]
fn the_shipped_aws_example_is_valid() {
    let text = include_str!("../../../deploy/steeple-aws.toml");
    let config = parse(text, &[]).unwrap();
    assert!(config.aws.enabled && config.envelopes.enabled);
    assert_eq!(config.agent.profile, crate::config::Profile::Production);
}

#[test]
fn the_shipped_vault_example_is_valid() {
    let text = include_str!("../../../deploy/steeple-vault.toml");
    let config = parse(text, &[]).unwrap();
    assert!(config.vault.enabled && config.envelopes.enabled);
    assert_eq!(config.vault.addr, "https://vault.example.org:8200");
    assert_eq!(config.vault.role, "payments-api");
    assert_eq!(config.agent.profile, crate::config::Profile::Production);
    let mounts: Vec<&str> = config
        .vault
        .allow
        .iter()
        .map(|r| r.mount.as_str())
        .collect();
    assert_eq!(mounts, ["secret", "transit"]);
}

#[test]
fn vault_allow_entries_are_read_and_checked() {
    let text = r#"
        [vault]
        namespace = "team-a"
        [[vault.allow]]
        mount = "secret"
        paths = ["payments-api"]
        [[vault.allow]]
        namespace = ""
        mount = "transit"
        paths = ["*"]
    "#;
    let allow = parse(text, &[]).unwrap().vault.allow;
    assert_eq!(allow.len(), 2);
    assert_eq!(
        allow[0].namespace.as_deref(),
        Some("team-a"),
        "the [vault] namespace"
    );
    assert_eq!(
        allow[1].namespace.as_deref(),
        Some(""),
        "the root namespace"
    );
    assert!(parse("", &[]).unwrap().vault.allow.is_empty());

    let bad = r#"
        [[vault.allow]]
        mount = "auth/token"
        paths = ["*"]
        [[vault.allow]]
        mount = "secret"
        [[vault.allow]]
        mount = "secret/.."
        paths = ["a"]
        [[vault.allow]]
        mount = "secret"
        paths = []
        [[vault.allow]]
        paths = ["a"]
        colour = 1
    "#;
    let errors = parse(bad, &[]).unwrap_err().0;
    let named: Vec<(&str, &str)> = errors
        .iter()
        .map(|e| (e.key.as_str(), e.message.as_str()))
        .collect();
    let expect = [
        ("vault.allow[0]", "is refused"),
        ("vault.allow[1].paths", "required"),
        ("vault.allow[2]", ". or .. segment"),
        ("vault.allow[3]", "paths is empty"),
        ("vault.allow[4].colour", "unknown key"),
        ("vault.allow[4].mount", "required"),
    ];
    assert_eq!(named.len(), expect.len(), "{named:?}");
    for ((key, message), (want_key, want)) in named.iter().zip(expect) {
        assert_eq!(*key, want_key);
        assert!(message.contains(want), "{key}: {message}");
    }
}

#[test]
fn vault_defaults_and_overrides() {
    let c = parse("", &[]).unwrap().vault;
    assert!(!c.enabled && c.revoke_on_shutdown && !c.allow_insecure);
    assert_eq!(
        (
            c.auth_mount.as_str(),
            c.audience.as_str(),
            c.transit_mount.as_str()
        ),
        ("jwt", "vault", "transit")
    );
    assert_eq!(
        (c.kv_version, c.kv_refresh_interval),
        (2, Duration::from_secs(60))
    );
    assert!(c.namespace.is_none() && c.ca_file.is_none() && c.token_resource_name.is_none());
    let c = parse(
        "[vault]\nenabled = true\nrole = \"web\"",
        &[
            ("STEEPLE_VAULT_ADDR", "https://vault:8200"),
            ("STEEPLE_VAULT_KV_VERSION", "1"),
            ("STEEPLE_VAULT_KV_REFRESH_INTERVAL", "5s"),
            ("STEEPLE_VAULT_TOKEN_RESOURCE_NAME", "vault-token"),
            ("STEEPLE_VAULT_CA_SPIFFE_BUNDLE", "spiffe://example.org"),
        ],
    )
    .unwrap()
    .vault;
    assert_eq!(c.addr, "https://vault:8200");
    assert_eq!(c.kv_version, 1);
    assert_eq!(c.kv_refresh_interval, Duration::from_secs(5));
    assert_eq!(c.token_resource_name.as_deref(), Some("vault-token"));
    assert_eq!(c.ca_spiffe_bundle.as_deref(), Some("example.org"));
    assert!(c.ca_file.is_none());
}

#[test]
fn vault_ca_spiffe_bundle_takes_a_trust_domain() {
    let bundle = |value: &str| {
        parse(&format!("[vault]\nca_spiffe_bundle = \"{value}\""), &[])
            .map(|c| c.vault.ca_spiffe_bundle)
    };
    assert_eq!(
        bundle("example.org").unwrap().as_deref(),
        Some("example.org")
    );
    assert_eq!(
        bundle("spiffe://td-1_x").unwrap().as_deref(),
        Some("td-1_x")
    );
    assert_eq!(bundle("").unwrap(), None);
    for bad in [
        "spiffe://",
        "Example.org",
        "spiffe://example.org/vault",
        "a b",
    ] {
        let errors = bundle(bad).unwrap_err().0;
        assert_eq!(errors[0].key, "vault.ca_spiffe_bundle", "{bad}");
        assert!(errors[0].message.contains("trust domain"), "{bad}");
    }
}

#[test]
fn every_bad_vault_key_is_named() {
    let errors = parse(
        "[vault]\nenabled = true\naddr = \"vault:8200\"\nkv_version = 3\n\
         kv_refresh_interval = \"10ms\"\ntoken_resource_name = \"spiffe://x\"\ncolour = 1",
        &[],
    )
    .unwrap_err()
    .0;
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "vault.colour",
            "vault.kv_version",
            "vault.kv_refresh_interval",
            "vault.token_resource_name",
            "vault.addr",
            "vault.role"
        ]
    );
    assert!(errors[4].message.contains("https://"), "{}", errors[4]);
    let errors = parse("[vault]\nenabled = true", &[]).unwrap_err().0;
    assert!(errors[0].message.contains("required when vault.enabled"));
}

#[test]
fn production_profile_refuses_a_plain_http_vault_unless_allowed() {
    let text = "[agent]\nprofile = \"production\"\n\
                [vault]\nenabled = true\naddr = \"http://vault:8200\"\nrole = \"web\"";
    let errors = parse(text, &[]).unwrap_err().0;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].key, "vault.addr");
    assert!(errors[0].message.contains("allow_insecure"));
    assert!(parse(&format!("{text}\nallow_insecure = true"), &[]).is_ok());
    assert!(parse(&text.replace("production", "standard"), &[]).is_ok());
}

#[test]
fn production_profile_refuses_a_plain_http_control_plane_unless_allowed() {
    let text = "[agent]\nprofile = \"production\"\n\
                [control_plane]\nurl = \"http://cp.example.org\"\ntoken_file = \"/t\"";
    let errors = parse(text, &[]).unwrap_err().0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].key, "control_plane.url");
    assert!(errors[0].message.contains("control_plane.allow_insecure"));
    assert!(parse(&format!("{text}\nallow_insecure = true"), &[]).is_ok());
    assert!(parse(&text.replace("production", "standard"), &[]).is_ok());
    assert!(parse(&text.replace("http://", "https://"), &[]).is_ok());
}

#[test]
fn admin_listen_is_an_address_or_nothing() {
    assert_eq!(parse("", &[]).unwrap().admin.listen, None);
    let c = parse("[admin]\nlisten = \"127.0.0.1:9464\"", &[]).unwrap();
    assert_eq!(c.admin.listen, Some("127.0.0.1:9464".parse().unwrap()));
    let errors = parse("[admin]\nlisten = \"localhost\"", &[]).unwrap_err().0;
    assert_eq!(errors[0].key, "admin.listen");
    assert!(
        errors[0].message.contains("127.0.0.1:9464"),
        "{}",
        errors[0]
    );
}

#[test]
fn audit_sink_defaults_to_stderr_and_bad_values_are_named() {
    use crate::audit::AuditSink;
    assert_eq!(parse("", &[]).unwrap().audit, AuditSink::Stderr);
    let c = parse("[audit]\nsink = \"file:/var/log/steeple/audit.jsonl\"", &[]).unwrap();
    assert_eq!(
        c.audit,
        AuditSink::File("/var/log/steeple/audit.jsonl".into())
    );
    let errors = parse("[audit]\nsink = \"journald\"", &[]).unwrap_err().0;
    assert_eq!(errors[0].key, "audit.sink");
}

#[test]
fn two_paths_may_not_alias_one_name() {
    let text = "[envelope_aliases]\n\"app/db\" = \"db\"\n\"other/db\" = \"db\"\n";
    let errors = parse(text, &[]).unwrap_err().0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].key, "envelope_aliases");
    assert!(
        errors[0].message.contains("both map to \"db\""),
        "{}",
        errors[0]
    );
    let c = parse("", &[]).unwrap();
    assert!(c.envelopes.require_path_binding, "bound by default");
    assert!(c.control_plane.logical_path_prefixes.is_empty());
}

#[test]
fn every_callers_rule_names_its_uids() {
    let text = "[[callers]]\nexe = \"/usr/bin/envoy\"\nresources = [\"default\"]\n\
                [[callers]]\ngids = [101]\nresources = [\"default\"]\n\
                [[callers]]\nuids = [101]\nexe = \"/usr/bin/envoy\"\nresources = [\"default\"]\n";
    let errors = parse(text, &[]).unwrap_err().0;
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["callers[0].uids", "callers[1].uids"]);
    assert!(errors[0].message.contains("only narrow"), "{}", errors[0]);
}

#[test]
fn sds_connection_limits_have_defaults_and_are_checked() {
    let sds = parse("", &[]).unwrap().sds;
    assert_eq!(
        (
            sds.max_connections,
            sds.max_connections_per_uid,
            sds.max_streams
        ),
        (4096, 512, 16384)
    );
    assert_eq!(sds.max_streams_per_connection, 1024);
    assert_eq!(sds.handshake_timeout, Duration::from_secs(10));
    assert_eq!(sds.idle_timeout, Duration::from_secs(60));
    assert!(!sds.require_caller_pid);
    let errors = parse(
        "[sds]\nmax_connections = 0\nhandshake_timeout = \"soon\"\nidle_timeout = 5",
        &[],
    )
    .unwrap_err()
    .0;
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "sds.max_connections",
            "sds.handshake_timeout",
            "sds.idle_timeout"
        ]
    );
    let strict = parse("[sds]\nrequire_caller_pid = true", &[]).unwrap().sds;
    assert!(strict.require_caller_pid);
    // A zero idle timeout would close every connection between its requests.
    let zero = parse("[sds]\nidle_timeout = \"0s\"", &[]).unwrap_err().0;
    assert_eq!(zero[0].key, "sds.idle_timeout");
}

#[test]
fn vault_spiffe_id_pins_an_svid_of_the_named_bundle() {
    let c = parse(
        "[vault]\nca_spiffe_bundle = \"example.org\"\nspiffe_id = \"spiffe://example.org/vault\"",
        &[],
    )
    .unwrap();
    assert_eq!(
        c.vault.spiffe_id.as_deref(),
        Some("spiffe://example.org/vault")
    );
    for bad in [
        "spiffe_id = \"spiffe://example.org/vault\"",
        "ca_spiffe_bundle = \"example.org\"\nspiffe_id = \"spiffe://other.org/vault\"",
        "ca_spiffe_bundle = \"example.org\"\nspiffe_id = \"spiffe://example.org/\"",
    ] {
        let errors = parse(&format!("[vault]\n{bad}"), &[]).unwrap_err().0;
        assert_eq!(errors[0].key, "vault.spiffe_id", "{bad}");
    }
}

#[test]
fn the_vault_cli_environment_fills_what_the_file_leaves_unset() {
    let env = [
        ("VAULT_ADDR", "https://from-env:8200"),
        ("VAULT_NAMESPACE", "team-a"),
        ("VAULT_CACERT", "/etc/vault/ca.pem"),
    ];
    let c = parse("[vault]\nenabled = true\nrole = \"web\"", &env)
        .unwrap()
        .vault;
    assert_eq!(c.addr, "https://from-env:8200");
    assert_eq!(c.namespace.as_deref(), Some("team-a"));
    assert_eq!(c.ca_file.as_deref(), Some(Path::new("/etc/vault/ca.pem")));

    // The file and STEEPLE_VAULT_* win, whatever order the environment comes in.
    let file = "[vault]\nenabled = true\nrole = \"web\"\nnamespace = \"from-file\"";
    let mut both = vec![("STEEPLE_VAULT_ADDR", "https://steeple:8200")];
    both.extend(env);
    let c = parse(file, &both).unwrap().vault;
    assert_eq!(c.addr, "https://steeple:8200");
    assert_eq!(c.namespace.as_deref(), Some("from-file"));

    // A bad value is named by the variable it came from.
    let errors = parse(
        "[vault]\nenabled = true\nrole = \"web\"",
        &[("VAULT_ADDR", "vault:8200")],
    )
    .unwrap_err()
    .0;
    assert_eq!(errors[0].key, "VAULT_ADDR");
}

#[test]
fn producers_claim_their_names_from_the_configuration() {
    let config = Config::parse(
        "[[jwt_svids]]\naudience = \"upstream\"\n\
         [[jwt_svids]]\naudience = \"db\"\nresource_name = \"db-token\"\n\
         [aws]\ncredentials_resource_name = \"aws-creds\"\n\
         [vault]\ntoken_resource_name = \"vault-token\"\n",
        Vec::new(),
    )
    .unwrap();
    let claimed = config.claimed_names();
    for name in [
        "default",
        "ROOTCA",
        "ALL",
        "jwt-svid:upstream",
        "db-token",
        "aws-creds",
        "vault-token",
        "spiffe://example.org/web",
        "jwt-bundle:spiffe://example.org",
        "jwt-svid:anything",
    ] {
        assert!(claimed.contains(name), "{name}");
    }
    assert!(!claimed.contains("app/db"));
}

#[test]
fn delegated_mode_needs_the_admin_socket_and_self_is_the_default() {
    assert_eq!(parse("", &[]).unwrap().workload_api.mode, IdentityMode::Own);
    let c = parse(
        "[workload_api]\nmode = \"delegated\"\nadmin_socket = \"unix:///run/spire/admin.sock\"\ndefault_svid_hint = \"internal\"",
        &[],
    )
    .unwrap();
    assert_eq!(
        c.workload_api.mode,
        IdentityMode::Delegated(DelegatedConfig {
            admin_socket: PathBuf::from("/run/spire/admin.sock"),
            default_svid_hint: Some("internal".into()),
            max_concurrent_attestations: 16,
        })
    );
    let missing = parse("[workload_api]\nmode = \"delegated\"", &[])
        .unwrap_err()
        .0;
    assert_eq!(missing[0].key, "workload_api.admin_socket");
    let bad = parse("", &[("STEEPLE_WORKLOAD_API_MODE", "node")])
        .unwrap_err()
        .0;
    assert_eq!(bad[0].key, "STEEPLE_WORKLOAD_API_MODE");
    assert!(bad[0].message.contains("\"delegated\""));
    let stray = parse("[workload_api]\nadmin_socket = \"/a.sock\"", &[])
        .unwrap_err()
        .0;
    assert_eq!(stray[0].key, "workload_api.admin_socket");
    let delegated = "[workload_api]\nmode = \"delegated\"\nadmin_socket = \"/a.sock\"\n";
    let queue = |n: &str| {
        parse(
            &format!("{delegated}max_concurrent_attestations = {n}"),
            &[],
        )
    };
    match queue("64").unwrap().workload_api.mode {
        IdentityMode::Delegated(d) => assert_eq!(d.max_concurrent_attestations, 64),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        queue("0").unwrap_err().0[0].key,
        "workload_api.max_concurrent_attestations"
    );
    let stray = parse("[workload_api]\nmax_concurrent_attestations = 8", &[])
        .unwrap_err()
        .0;
    assert_eq!(stray[0].key, "workload_api.max_concurrent_attestations");
}

#[test]
fn imds_listens_on_loopback_or_ipv4_link_local_only() {
    let listen = |addr: &str| parse(&format!("[aws]\nimds_listen = \"{addr}\""), &[]);
    for good in [
        "127.0.0.1:1338",
        "127.0.0.2:80",
        "[::1]:1338",
        "169.254.169.254:80",
    ] {
        let config = listen(good).unwrap_or_else(|e| panic!("{good}: {e:?}"));
        assert_eq!(config.aws.imds_listen, Some(good.parse().unwrap()));
    }
    assert_eq!(listen("").unwrap().aws.imds_listen, None, "empty: off");
    assert_eq!(
        parse("", &[]).unwrap().aws.imds_listen,
        None,
        "off by default"
    );
    for bad in [
        "0.0.0.0:1338",
        "10.0.0.1:1338",
        "[::]:1338",
        "[fe80::1]:80",
        "localhost:1338",
        "127.0.0.1",
    ] {
        let errors = listen(bad).unwrap_err().0;
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["aws.imds_listen"], "{bad}");
        assert!(
            errors[0].message.contains("169.254"),
            "{}",
            errors[0].message
        );
    }
}

#[test]
fn workload_roles_replace_the_single_roles_and_need_their_side() {
    let config = parse(
        "[aws]\nenabled = true\n[vault]\nenabled = true\naddr = \"https://vault:8200\"\ntoken_resource_name = \"vault-token\"\n\
         [[workloads]]\nspiffe_id = \"spiffe://td/payments/*\"\naws_role_arn = \"arn:aws:iam::1:role/payments\"\nvault_role = \"payments\"\n\
         [[workloads]]\nspiffe_id = \"spiffe://td/web\"\nvault_role = \"web\"\n",
        &[],
    )
    .expect("roles per workload stand in for [aws] role_arn and [vault] role");
    assert_eq!(
        config.workloads.aws_role("spiffe://td/payments/api"),
        Some("arn:aws:iam::1:role/payments")
    );
    assert_eq!(config.workloads.vault_role("spiffe://td/web"), Some("web"));
    assert_eq!(config.workloads.aws_role("spiffe://td/web"), None);

    let errors = parse(
        "[aws]\nenabled = true\n\
         [[workloads]]\nspiffe_id = \"payments\"\naws_role_arn = \"role/x\"\n\
         [[workloads]]\nspiffe_id = \"spiffe://td/a\"\n\
         [[workloads]]\nspiffe_id = \"spiffe://td/b\"\nvault_role = \"b\"\nrole = \"x\"\n",
        &[],
    )
    .unwrap_err()
    .0;
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "workloads[2].role",
            "workloads[0].spiffe_id",
            "workloads[0].aws_role_arn",
            "workloads[1].spiffe_id",
            "workloads[2].vault_role",
            "aws.role_arn",
        ],
        "{errors:?}"
    );
    assert!(errors[3].message.contains("names no role"));
    assert!(errors[4].message.contains("vault.enabled"));
}
