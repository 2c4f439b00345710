//! KMS key and alias ARNs, and the allowlist every envelope key must pass before any call
//! to KMS.

use std::fmt;

use steeple_plugin_api::ResolveError;

/// What a KMS ARN names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KmsResource {
    /// `key/<id>` (a key id such as a UUID or `mrk-…`).
    Key(String),
    /// `alias/<name>` (the name without the `alias/` prefix).
    Alias(String),
}

/// A parsed `arn:<partition>:kms:<region>:<account>:key/<id>` or `…:alias/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KmsArn {
    text: String,
    partition: String,
    region: String,
    account: String,
    resource: KmsResource,
}

impl KmsArn {
    /// Parses a full KMS key or alias ARN. Bare key ids and alias names are refused: the
    /// region and the allowlist can only be checked on a full ARN.
    pub fn parse(text: &str) -> Result<Self, String> {
        let refuse = |why: &str| {
            format!(
                "key_id {text:?} is not a KMS key or alias ARN ({why}); key_id must be a full \
                 KMS ARN so the region and allowlist can be checked"
            )
        };
        let mut parts = text.splitn(6, ':');
        let fields: [Option<&str>; 6] = std::array::from_fn(|_| parts.next());
        let [
            Some("arn"),
            Some(partition),
            Some(service),
            Some(region),
            Some(account),
            Some(res),
        ] = fields
        else {
            return Err(refuse(
                "expected arn:<partition>:kms:<region>:<account>:key/<id>",
            ));
        };
        if !partition.starts_with("aws") || !is_token(partition, |c| c.is_ascii_lowercase()) {
            return Err(refuse("unknown partition"));
        }
        if service != "kms" {
            return Err(refuse("not a kms ARN"));
        }
        if !is_token(region, |c| c.is_ascii_lowercase() || c.is_ascii_digit()) {
            return Err(refuse("no region"));
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(refuse("the account is not 12 digits"));
        }
        let resource =
            parse_resource(res).ok_or_else(|| refuse("expected key/<id> or alias/<name>"))?;
        Ok(Self {
            text: text.to_owned(),
            partition: partition.to_owned(),
            region: region.to_owned(),
            account: account.to_owned(),
            resource,
        })
    }

    /// The ARN as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `aws`, `aws-cn`, `aws-us-gov`, …
    pub fn partition(&self) -> &str {
        &self.partition
    }

    /// The key's region, which is also the region requests about it are signed for.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The 12-digit account id.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The key or alias it names.
    pub fn resource(&self) -> &KmsResource {
        &self.resource
    }

    /// Whether it names an alias (which must be resolved to a key ARN to be checked).
    pub fn is_alias(&self) -> bool {
        matches!(self.resource, KmsResource::Alias(_))
    }
}

impl fmt::Display for KmsArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `[a-z-]`-style tokens: non-empty, made of `allowed` characters and `-`.
fn is_token(text: &str, allowed: impl Fn(char) -> bool) -> bool {
    !text.is_empty() && text.chars().all(|c| c == '-' || allowed(c))
}

fn parse_resource(resource: &str) -> Option<KmsResource> {
    if let Some(id) = resource.strip_prefix("key/") {
        let ok = !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        return ok.then(|| KmsResource::Key(id.to_owned()));
    }
    let name = resource.strip_prefix("alias/")?;
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-'));
    ok.then(|| KmsResource::Alias(name.to_owned()))
}

/// Whether `prefix` reads `arn:<partition>:kms:<region>:<12 digits>:…`.
fn pins_an_account(prefix: &str) -> bool {
    let parts: Vec<&str> = prefix.splitn(6, ':').collect();
    matches!(
        parts.as_slice(),
        ["arn", partition, "kms", region, account, _]
            if !partition.is_empty()
                && !region.is_empty()
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
    )
}

/// The key ARN prefixes envelopes may use. An empty list refuses every key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyArnAllowlist {
    prefixes: Vec<String>,
}

impl KeyArnAllowlist {
    /// An allowlist of ARN prefixes such as `arn:aws:kms:eu-west-1:111122223333:key/`.
    /// Every prefix must name at least a KMS partition, region and 12-digit account
    /// (`arn:<partition>:kms:<region>:<account>:`): anything shorter would let envelopes
    /// name keys in accounts nobody chose.
    pub fn new(prefixes: Vec<String>) -> Result<Self, crate::ConfigError> {
        if let Some(bad) = prefixes.iter().find(|p| !pins_an_account(p)) {
            return Err(crate::ConfigError::new(
                "key_arn_allowlist",
                format!(
                    "{bad:?} is not a KMS ARN prefix down to the account \
                     (arn:<partition>:kms:<region>:<account>:…)"
                ),
            ));
        }
        Ok(Self { prefixes })
    }

    /// The prefixes.
    pub fn prefixes(&self) -> &[String] {
        &self.prefixes
    }

    /// Checks `key_id` with no I/O: it must be a full KMS key or alias ARN and start with
    /// one of the prefixes. Both failures are [`ResolveError::Refused`].
    pub fn check(&self, key_id: &str) -> Result<KmsArn, ResolveError> {
        let arn = KmsArn::parse(key_id).map_err(ResolveError::Refused)?;
        if self.prefixes.iter().any(|p| key_id.starts_with(p.as_str())) {
            return Ok(arn);
        }
        let why = if self.prefixes.is_empty() {
            "the KMS key allowlist is empty".to_owned()
        } else {
            format!("allowed prefixes: {}", self.prefixes.join(", "))
        };
        Err(ResolveError::Refused(format!(
            "key {key_id} is outside the KMS key allowlist ({why})"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn allow(prefixes: &[&str]) -> KeyArnAllowlist {
        KeyArnAllowlist::new(prefixes.iter().map(|p| (*p).to_owned()).collect()).unwrap()
    }

    #[test]
    fn parses_key_and_alias_arns_in_every_partition() {
        let key = KmsArn::parse(KEY).unwrap();
        assert_eq!(
            (key.partition(), key.region(), key.account()),
            ("aws", "us-east-1", "111122223333")
        );
        assert_eq!(
            key.resource(),
            &KmsResource::Key("1234abcd-12ab-34cd-56ef-1234567890ab".into())
        );
        assert!(!key.is_alias());

        let gov =
            KmsArn::parse("arn:aws-us-gov:kms:us-gov-west-1:111122223333:alias/app/db").unwrap();
        assert_eq!(
            (gov.partition(), gov.region()),
            ("aws-us-gov", "us-gov-west-1")
        );
        assert_eq!(gov.resource(), &KmsResource::Alias("app/db".into()));
        assert!(gov.is_alias());

        let cn = KmsArn::parse("arn:aws-cn:kms:cn-north-1:111122223333:key/mrk-1a2b").unwrap();
        assert_eq!((cn.partition(), cn.region()), ("aws-cn", "cn-north-1"));
        assert_eq!(
            cn.to_string(),
            "arn:aws-cn:kms:cn-north-1:111122223333:key/mrk-1a2b"
        );
    }

    #[test]
    fn refuses_bare_ids_alias_names_and_other_arns() {
        for bad in [
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "alias/app",
            "arn:aws:kms:us-east-1:111122223333:1234abcd",
            "arn:aws:kms::111122223333:key/1234",
            "arn:aws:kms:us-east-1:1111:key/1234",
            "arn:aws:kms:us-east-1:111122223333:key/",
            "arn:aws:kms:us-east-1:111122223333:alias/",
            "arn:aws:kms:us-east-1:111122223333:alias/a:b",
            "arn:aws:s3:::bucket/key",
            "arn:gcp:kms:us-east-1:111122223333:key/1234",
            "arn:aws:kms:US-EAST-1:111122223333:key/1234",
            "",
        ] {
            let err = KmsArn::parse(bad).unwrap_err();
            assert!(err.contains("must be a full KMS ARN"), "{bad}: {err}");
        }
    }

    #[test]
    fn bare_ids_are_refused_before_the_allowlist() {
        let err = allow(&["arn:aws:kms:us-east-1:111122223333:"])
            .check("1234abcd-12ab")
            .unwrap_err();
        assert!(
            matches!(&err, ResolveError::Refused(m) if m.contains("full KMS ARN")),
            "{err}"
        );
    }

    #[test]
    fn allowlist_is_a_prefix_match() {
        let list = allow(&[
            "arn:aws:kms:us-east-1:111122223333:key/",
            "arn:aws-us-gov:kms:us-gov-west-1:111122223333:alias/app/",
        ]);
        assert_eq!(list.check(KEY).unwrap().as_str(), KEY);
        list.check("arn:aws-us-gov:kms:us-gov-west-1:111122223333:alias/app/db")
            .unwrap();
        for outside in [
            "arn:aws:kms:us-east-2:111122223333:key/1234",
            "arn:aws:kms:us-east-1:444455556666:key/1234",
            "arn:aws:kms:us-east-1:111122223333:alias/app",
            "arn:aws-us-gov:kms:us-gov-west-1:111122223333:alias/other",
            "arn:aws-cn:kms:cn-north-1:111122223333:key/1234",
        ] {
            let err = list.check(outside).unwrap_err();
            assert!(
                matches!(&err, ResolveError::Refused(m) if m.contains(outside) && m.contains("allowlist")),
                "{outside}: {err}"
            );
        }
    }

    #[test]
    fn empty_allowlist_refuses_everything_and_prefixes_must_be_arns() {
        let err = KeyArnAllowlist::default().check(KEY).unwrap_err();
        assert!(
            matches!(&err, ResolveError::Refused(m) if m.contains("empty")),
            "{err}"
        );
        for bad in [
            "",
            "111122223333",
            " arn:aws:kms:",
            "arn:",
            "arn:aws:kms:",
            "arn:aws:kms:us-east-1:",
            "arn:aws:kms:us-east-1:1:",
            "arn:aws:s3:us-east-1:111122223333:",
            "arn:aws:kms:us-east-1:111122223333",
        ] {
            let err = KeyArnAllowlist::new(vec![bad.into()]).unwrap_err();
            assert_eq!(err.key, "key_arn_allowlist");
        }
    }
}
