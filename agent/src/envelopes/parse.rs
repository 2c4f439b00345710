//! Envelope documents: JSON or YAML holding a list of envelope rows, one row, or the
//! control plane's list response (an object with the rows under `items`,
//! `envelope_secrets` or `data`).

use std::path::Path;

use steeple_plugin_api::EnvelopeRow;

/// Field names a list response may keep its rows under.
const LIST_FIELDS: &[&str] = &["items", "envelope_secrets", "data"];

/// How a document is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON.
    Json,
    /// YAML (a superset of JSON, so either reads).
    Yaml,
}

impl Format {
    /// The format of an envelope file by extension (`.json`, `.yaml`, `.yml`), if it is one.
    pub fn of_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "json" => Some(Self::Json),
            "yaml" | "yml" => Some(Self::Yaml),
            _ => None,
        }
    }
}

/// Parses a document into rows. Errors describe the document's shape, never its values.
pub fn parse_document(bytes: &[u8], format: Format) -> Result<Vec<EnvelopeRow>, String> {
    let value: serde_json::Value = match format {
        Format::Json => serde_json::from_slice(bytes)
            .map_err(|e| format!("not valid JSON (line {}, column {})", e.line(), e.column()))?,
        Format::Yaml => serde_yaml_ng::from_slice(bytes).map_err(|e| match e.location() {
            Some(at) => format!(
                "not valid YAML (line {}, column {})",
                at.line(),
                at.column()
            ),
            None => "not valid YAML".to_owned(),
        })?,
    };
    let items = match value {
        serde_json::Value::Null => Vec::new(),
        serde_json::Value::Array(items) => items,
        serde_json::Value::Object(mut object) => {
            match LIST_FIELDS.iter().find_map(|f| object.remove(*f)) {
                Some(serde_json::Value::Array(items)) => items,
                Some(_) => return Err("the row list is not an array".into()),
                None => vec![serde_json::Value::Object(object)],
            }
        }
        _ => return Err("expected a list of envelope rows or one row".into()),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            serde_json::from_value(item).map_err(|e| format!("row {i}: {}", field_problem(&e)))
        })
        .collect()
}

/// Names the missing field, but never echoes a value from the document.
fn field_problem(error: &serde_json::Error) -> String {
    let text = error.to_string();
    if text.starts_with("missing field") {
        text
    } else {
        "a field has the wrong type (every envelope field is a string)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROW: &str =
        r#"{"logical_path":"a/b","provider":"local","key_id":"k","ciphertext_ref":"AQID"}"#;

    #[test]
    fn reads_lists_single_rows_and_list_responses() {
        let list = format!("[{ROW},{ROW}]");
        assert_eq!(
            parse_document(list.as_bytes(), Format::Json).unwrap().len(),
            2
        );
        assert_eq!(
            parse_document(ROW.as_bytes(), Format::Json).unwrap().len(),
            1
        );
        let response = format!(r#"{{"envelope_secrets":[{ROW}],"total":1}}"#);
        assert_eq!(
            parse_document(response.as_bytes(), Format::Json)
                .unwrap()
                .len(),
            1
        );
        let yaml = "- logical_path: a/b\n  provider: kms_envelope\n  key_id: arn:aws:kms:x\n  ciphertext_ref: AQID\n  aad: env=prod\n";
        let rows = parse_document(yaml.as_bytes(), Format::Yaml).unwrap();
        assert_eq!(rows[0].aad, "env=prod");
        assert!(parse_document(b"", Format::Yaml).unwrap().is_empty());
    }

    #[test]
    fn shape_errors_are_clear() {
        let err = parse_document(b"{\"logical_path\": ", Format::Json).unwrap_err();
        assert!(err.contains("not valid JSON"), "{err}");
        let err = parse_document(b"[{\"provider\":\"local\"}]", Format::Json).unwrap_err();
        assert!(
            err.contains("row 0") && err.contains("logical_path"),
            "{err}"
        );
        assert!(parse_document(b"5", Format::Json).is_err());
        assert!(parse_document(b"{\"items\": 5}", Format::Json).is_err());
        assert!(
            parse_document(b"a: [", Format::Yaml)
                .unwrap_err()
                .contains("YAML")
        );
    }

    #[test]
    fn knows_envelope_files_by_extension() {
        assert_eq!(Format::of_path(Path::new("x/a.yml")), Some(Format::Yaml));
        assert_eq!(Format::of_path(Path::new("a.json")), Some(Format::Json));
        assert_eq!(Format::of_path(Path::new("a.txt")), None);
    }
}
