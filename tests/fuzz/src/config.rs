//! The configuration file (TOML) with and without `STEEPLE_*` environment overrides.

use steeple::config::Config;

/// Overrides applied on top of the fuzzed file: valid values for keys of three sections.
const ENV: &[(&str, &str)] = &[
    ("STEEPLE_SDS_SOCKET_MODE", "0640"),
    ("STEEPLE_LOG_LEVEL", "debug"),
    ("SPIFFE_ENDPOINT_SOCKET", "unix:///run/fuzz/api.sock"),
];

/// Parses `data` (when UTF-8, as a config file must be) alone and with [`ENV`]. Returns
/// whether the file alone is a valid configuration.
pub fn run(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let plain = Config::parse(text, std::iter::empty());
    if let Err(errors) = &plain {
        assert!(!errors.0.is_empty(), "an error without a key");
        let _ = errors.to_string();
    }
    let env = ENV.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
    let overridden = Config::parse(text, env);
    match (&plain, &overridden) {
        (Ok(plain), Ok(overridden)) => {
            // Valid overrides change exactly their keys. The endpoint variable is only a
            // default for `workload_api.socket`, so that one may or may not change.
            let mut expected = plain.clone();
            expected.sds.socket_mode = 0o640;
            expected.log.level = "debug".to_owned();
            expected.workload_api = overridden.workload_api.clone();
            assert_eq!(&expected, overridden);
        }
        (Ok(_), Err(errors)) => panic!("valid overrides broke a valid file: {errors}"),
        (Err(_), Ok(overridden)) => {
            assert_eq!(overridden.sds.socket_mode, 0o640);
            assert_eq!(overridden.log.level, "debug");
        }
        (Err(_), Err(_)) => {}
    }
    plain.is_ok()
}
