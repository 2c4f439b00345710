//! Every committed seed runs through its harness and gets past the input checks, so the
//! fuzzer starts from inputs that reach the interesting code (a seed the code no longer
//! accepts fails here, not silently in a weaker fuzz run).

use std::path::PathBuf;

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

#[test]
fn envelope_seeds_are_valid_rows_or_aad() {
    for (name, bytes) in seeds("envelope") {
        let outcome = crate::envelope::run(&bytes);
        if name.starts_with("aad") {
            assert!(outcome.aad_valid, "{name}: {outcome:?}");
        } else if name.starts_with("bad") {
            assert!(outcome.json_rows > 0, "{name}: {outcome:?}");
            assert_eq!(outcome.valid_rows, 0, "{name}: {outcome:?}");
        } else {
            assert!(outcome.yaml_rows > 0, "{name}: {outcome:?}");
            assert_eq!(
                outcome.valid_rows,
                outcome.json_rows + outcome.yaml_rows,
                "{name}: {outcome:?}"
            );
        }
    }
}

/// The first long run's only crash: a ciphertext that is also a word of the error
/// message ("ciphertext_ref is not valid base64") is no leak.
#[test]
fn a_ciphertext_spelled_like_the_message_is_not_a_leak() {
    let row = br#"{"logical_path":"a","provider":"local","key_id":"k","ciphertext_ref":"ciphertext_ref"}"#;
    assert_eq!(crate::envelope::run(row).valid_rows, 0);
}

#[test]
fn config_seeds_are_valid_configurations() {
    for (name, bytes) in seeds("config") {
        assert!(crate::config::run(&bytes), "{name} is not a valid config");
    }
}

#[test]
fn sds_seeds_get_responses() {
    for (name, bytes) in seeds("sds_request") {
        let outcome = crate::sds_request::run(&bytes);
        assert!(
            outcome.sotw_responses + outcome.delta_responses > 0 && outcome.fetches > 0
                || name.starts_with("delta") && outcome.delta_responses > 0,
            "{name}: {outcome:?}"
        );
    }
}

#[test]
fn svid_seeds_are_valid_svids() {
    for (name, bytes) in seeds("svid") {
        let expected = if name.starts_with("bare") {
            crate::svid::SvidOutcome::Unframed
        } else {
            crate::svid::SvidOutcome::Valid
        };
        assert_eq!(crate::svid::run(&bytes), expected, "{name}");
        assert!(steeple::svid::split_der_certificates(&bytes).is_ok() || !name.starts_with("bare"));
    }
}

#[test]
fn framing_takes_the_rest_when_a_length_runs_past_the_end() {
    assert_eq!(
        crate::sds_request::frames(&[2, 7, 7, 9, 1]),
        [&[7, 7][..], &[1]]
    );
    assert_eq!(
        crate::svid::take_prefixed(&[0, 1, 5, 6]),
        Some((&[5][..], &[6][..]))
    );
    assert_eq!(crate::svid::take_prefixed(&[0, 3, 5]), None);
}
