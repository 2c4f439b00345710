//! Envelope documents (JSON and YAML) and the `k=v,k=v` AAD they carry.

use steeple::envelopes::parse::{Format, parse_document};
use steeple_plugin_api::{EnvelopeRow, format_aad, parse_aad};

/// The ciphertext bound the agent uses by default (`envelopes.max_ciphertext_bytes`).
const MAX_CIPHERTEXT_BYTES: usize = 64 * 1024;

/// What one input gave.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EnvelopeOutcome {
    /// Rows read from the input as JSON.
    pub json_rows: usize,
    /// Rows read from the input as YAML.
    pub yaml_rows: usize,
    /// Rows that passed validation (either format).
    pub valid_rows: usize,
    /// Whether the whole input is a valid AAD string.
    pub aad_valid: bool,
}

/// Parses `data` as a JSON and as a YAML document, validates every row (which parses its
/// AAD), and parses `data` itself as an AAD string.
pub fn run(data: &[u8]) -> EnvelopeOutcome {
    let mut outcome = EnvelopeOutcome::default();
    for format in [Format::Json, Format::Yaml] {
        let Ok(rows) = parse_document(data, format) else {
            continue;
        };
        match format {
            Format::Json => outcome.json_rows = rows.len(),
            Format::Yaml => outcome.yaml_rows = rows.len(),
        }
        for row in &rows {
            outcome.valid_rows += usize::from(check_row(row));
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        outcome.aad_valid = check_aad(text);
    }
    outcome
}

/// Validates one row; its errors and `Debug` never show the ciphertext.
fn check_row(row: &EnvelopeRow) -> bool {
    check_aad(&row.aad);
    let ciphertext = row.ciphertext_ref.as_str();
    // Only a long run of base64 characters tells: no fixed text of a message or of
    // `Debug` has one, and it cannot straddle a quoted field. A ciphertext that a printed
    // field also contains proves nothing.
    let telling = ciphertext.len() >= 64
        && ciphertext
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
        && ![&row.logical_path, &row.provider, &row.key_id, &row.aad]
            .iter()
            .any(|field| format!("{field:?}").contains(ciphertext));
    if telling {
        assert!(
            !format!("{row:?}").contains(ciphertext),
            "EnvelopeRow's Debug shows the ciphertext"
        );
    }
    match row.validate(MAX_CIPHERTEXT_BYTES) {
        Ok(sealed) => {
            assert_eq!(sealed.logical_path, row.logical_path);
            assert_eq!(sealed.key_id, row.key_id);
            assert!(sealed.ciphertext.len() <= MAX_CIPHERTEXT_BYTES);
            assert!(
                sealed
                    .data_key
                    .as_ref()
                    .is_none_or(|k| k.len() <= MAX_CIPHERTEXT_BYTES)
            );
            assert_eq!(parse_aad(&row.aad).ok(), Some(sealed.context));
            true
        }
        Err(error) => {
            if telling {
                assert!(
                    !error.problem.contains(ciphertext),
                    "an envelope error shows the ciphertext: {}",
                    error.problem
                );
            }
            false
        }
    }
}

/// Parses `text` as AAD; a context that parses formats back to text that parses to it.
fn check_aad(text: &str) -> bool {
    let Ok(context) = parse_aad(text) else {
        return false;
    };
    let formatted = format_aad(&context);
    assert_eq!(
        parse_aad(&formatted).as_ref(),
        Ok(&context),
        "format_aad output does not parse back: {formatted:?}"
    );
    true
}
