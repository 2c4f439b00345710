//! The exposition text: names, labels, histogram buckets, store-derived series.

use std::time::{Duration, SystemTime};

use super::*;
use crate::store::{Certificate, SecretStore, Source};
use steeple_plugin_api::SecretBytes;

fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines().find(|l| l.starts_with(prefix))
}

#[test]
fn counters_gauges_and_the_stream_guard() {
    let metrics = Metrics::default();
    let store = SecretStore::new();
    {
        let _open = metrics.sds_stream_opened(SdsFlavour::Delta);
        metrics.sds_response_sent(SdsFlavour::Delta);
        metrics.sds_response_sent(SdsFlavour::Delta);
        metrics.sds_nack(SdsFlavour::StateOfTheWorld);
        let text = metrics.render(&store.snapshot(), SystemTime::now());
        assert_eq!(
            line(&text, "steeple_sds_streams{protocol=\"delta\"}"),
            Some("steeple_sds_streams{protocol=\"delta\"} 1")
        );
    }
    metrics.sds_request_refused();
    metrics.svid_rotated();
    metrics.set_envelopes(3, 1);
    metrics.config_reload(true);
    metrics.config_reload(false);
    metrics.config_reload(false);
    let text = metrics.render(&store.snapshot(), SystemTime::now());
    for expected in [
        "steeple_sds_streams{protocol=\"delta\"} 0",
        "steeple_sds_responses_total{protocol=\"delta\"} 2",
        "steeple_sds_nacks_total{protocol=\"sotw\"} 1",
        "steeple_sds_requests_refused_total 1",
        "steeple_svid_rotations_total 1",
        "steeple_config_reloads_total{outcome=\"applied\"} 1",
        "steeple_config_reloads_total{outcome=\"refused\"} 2",
        "steeple_envelopes{state=\"served\"} 3",
        "steeple_envelopes{state=\"unserved\"} 1",
        "# TYPE steeple_envelope_cache_hits_total counter",
    ] {
        assert!(text.lines().any(|l| l == expected), "{expected} in\n{text}");
    }
    assert_eq!(metrics.envelopes_unserved(), 1);
}

#[test]
fn histograms_are_cumulative_with_sum_and_count() {
    let metrics = Metrics::default();
    metrics.envelope_resolved("kms_envelope", "ok", Duration::from_millis(3));
    metrics.envelope_resolved("kms_envelope", "ok", Duration::from_millis(30));
    metrics.exchanged("aws-sts", "transient", Duration::from_secs(20));
    let text = metrics.render(&SecretStore::new().snapshot(), SystemTime::now());
    let series =
        "steeple_envelope_resolve_duration_seconds_bucket{provider=\"kms_envelope\",outcome=\"ok\"";
    for (le, count) in [
        ("0.0025", 0),
        ("0.005", 1),
        ("0.025", 1),
        ("0.05", 2),
        ("+Inf", 2),
    ] {
        let expected = format!("{series},le=\"{le}\"}} {count}");
        assert!(text.lines().any(|l| l == expected), "{expected} in\n{text}");
    }
    assert!(text.contains(
        "steeple_envelope_resolve_duration_seconds_count{provider=\"kms_envelope\",outcome=\"ok\"} 2"
    ));
    // Over the last bound: only +Inf counts it.
    assert!(text.contains(
        "steeple_exchange_duration_seconds_bucket{exchange=\"aws-sts\",outcome=\"transient\",le=\"10\"} 0"
    ));
    assert!(text.contains(
        "steeple_exchange_duration_seconds_bucket{exchange=\"aws-sts\",outcome=\"transient\",le=\"+Inf\"} 1"
    ));
}

#[test]
fn svid_expiry_comes_from_the_store_and_no_secret_value_is_rendered() {
    let store = SecretStore::new();
    let now = SystemTime::now();
    let not_after = now + Duration::from_secs(600);
    let cert = Certificate {
        spiffe_id: "spiffe://example.org/web".into(),
        chain_der: vec![vec![1, 2, 3]],
        key_pkcs8: SecretBytes::copy_from(b"private-key-canary"),
        not_before: now - Duration::from_secs(600),
        not_after,
    };
    store.sync_source(
        &Source::JwtSvid("test".into()),
        vec![
            ("default".into(), Secret::Certificate(cert.into())),
            (
                "token".into(),
                Secret::Generic(SecretBytes::copy_from(b"generic-canary")),
            ),
        ],
    );
    let text = Metrics::default().render(&store.snapshot(), now);
    let at = not_after
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(text.contains(&format!(
        "steeple_svid_expiry_timestamp_seconds{{spiffe_id=\"spiffe://example.org/web\"}} {at}"
    )));
    assert!(
        text.contains("steeple_svid_remaining_seconds 600"),
        "{text}"
    );
    // Halfway through its 20-minute life: not overdue; with 5 minutes left: overdue.
    assert!(
        text.contains("steeple_svid_rotation_overdue{spiffe_id=\"spiffe://example.org/web\"} 0")
    );
    let late = Metrics::default().render(&store.snapshot(), now + Duration::from_secs(300));
    assert!(
        late.contains("steeple_svid_rotation_overdue{spiffe_id=\"spiffe://example.org/web\"} 1")
    );
    assert!(text.contains("steeple_secrets{kind=\"tls_certificate\"} 1"));
    assert!(text.contains("steeple_secrets{kind=\"generic_secret\"} 1"));
    assert!(!text.contains("canary"));
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}
