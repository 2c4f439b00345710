//! KMS failures as [`ResolveError`]s: what the envelope's owner must fix, what an operator
//! must fix upstream, and what is worth retrying.

use steeple_plugin_api::ResolveError;

use crate::sdk::{self, Failure};

/// Codes saying this ciphertext does not open under the key and context given.
const UNDECRYPTABLE: &[&str] = &["InvalidCiphertextException", "IncorrectKeyException"];

/// Server-side codes (HTTP 5xx) worth retrying.
const UNAVAILABLE: &[&str] = &[
    "KMSInternalException",
    "DependencyTimeoutException",
    "KeyUnavailableException",
    "InternalFailure",
    "ServiceUnavailable",
    "ServiceUnavailableException",
];

/// Codes saying the credentials we signed with have expired: the exchange loop publishes
/// fresh ones, so try again later.
const CREDENTIALS_EXPIRED: &[&str] = &["ExpiredTokenException", "ExpiredToken", "RequestExpired"];

/// How a KMS error is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Wrong key or context, or damaged ciphertext.
    Undecryptable,
    /// A permanent refusal (access denied, key missing, disabled, wrong state or usage).
    Upstream,
    /// Throttled, timed out, a server error, unreachable, or no credentials yet.
    Unavailable,
}

/// The class of a KMS error `code` answered with HTTP `status`.
pub(crate) fn class_of(code: Option<&str>, status: u16) -> Class {
    match code {
        Some(code) if UNDECRYPTABLE.contains(&code) => Class::Undecryptable,
        Some(code) if UNAVAILABLE.contains(&code) || CREDENTIALS_EXPIRED.contains(&code) => {
            Class::Unavailable
        }
        Some(code) if sdk::is_throttling_or_timeout(code) => Class::Unavailable,
        _ if status >= 500 => Class::Unavailable,
        _ => Class::Upstream,
    }
}

/// What a failed KMS call was about, for the message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call<'a> {
    /// `Decrypt`, `DescribeKey`, …
    pub operation: &'static str,
    /// The envelope's logical path, if the call resolves one.
    pub logical_path: Option<&'a str>,
    /// The key or alias ARN.
    pub key_arn: &'a str,
    /// The encryption context's keys (values are left out to keep messages short).
    pub context_keys: &'a [&'a str],
}

impl Call<'_> {
    fn subject(&self) -> String {
        match self.logical_path {
            Some(path) => format!(
                "envelope {path:?}: KMS {} with key {}",
                self.operation, self.key_arn
            ),
            None => format!("KMS {} with key {}", self.operation, self.key_arn),
        }
    }
}

/// Maps a failed KMS call to a [`ResolveError`] naming the envelope, key and AWS code.
pub(crate) fn resolve_error(call: &Call<'_>, failure: &Failure) -> ResolveError {
    let class = match failure {
        Failure::Service { code, status, .. } => class_of(code.as_deref(), *status),
        Failure::Timeout(_) | Failure::Dispatch(_) | Failure::Response(_) => Class::Unavailable,
        Failure::Construction(_) => Class::Upstream,
    };
    let detail = format!("{}: {}", failure.code(), failure.message());
    match class {
        Class::Undecryptable => ResolveError::Undecryptable(format!(
            "{} failed ({detail}); the encryption context (keys: [{}]) or the key may not match \
             what the ciphertext was sealed with",
            call.subject(),
            call.context_keys.join(", ")
        )),
        Class::Upstream => ResolveError::Upstream(format!("{} failed ({detail})", call.subject())),
        Class::Unavailable => {
            ResolveError::Unavailable(format!("{} failed ({detail})", call.subject()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_classes() {
        let cases = [
            ("InvalidCiphertextException", 400, Class::Undecryptable),
            ("IncorrectKeyException", 400, Class::Undecryptable),
            ("AccessDeniedException", 400, Class::Upstream),
            ("NotFoundException", 400, Class::Upstream),
            ("DisabledException", 400, Class::Upstream),
            ("KMSInvalidStateException", 400, Class::Upstream),
            ("InvalidKeyUsageException", 400, Class::Upstream),
            ("InvalidGrantTokenException", 400, Class::Upstream),
            ("UnrecognizedClientException", 400, Class::Upstream),
            ("ThrottlingException", 400, Class::Unavailable),
            ("RequestLimitExceeded", 400, Class::Unavailable),
            // A quota, not a refusal: the SDK retries it as throttling.
            ("LimitExceededException", 400, Class::Unavailable),
            ("TooManyRequestsException", 429, Class::Unavailable),
            ("RequestTimeoutException", 408, Class::Unavailable),
            ("KMSInternalException", 500, Class::Unavailable),
            ("DependencyTimeoutException", 503, Class::Unavailable),
            ("KeyUnavailableException", 500, Class::Unavailable),
            ("ExpiredTokenException", 400, Class::Unavailable),
            ("SomethingNew", 503, Class::Unavailable),
            ("SomethingNew", 400, Class::Upstream),
        ];
        for (code, status, class) in cases {
            assert_eq!(class_of(Some(code), status), class, "{code}");
        }
        assert_eq!(class_of(None, 500), Class::Unavailable);
        assert_eq!(class_of(None, 403), Class::Upstream);
    }

    #[test]
    fn messages_name_path_key_code_and_context_keys() {
        let call = Call {
            operation: "Decrypt",
            logical_path: Some("db/password"),
            key_arn: "arn:aws:kms:us-east-1:111122223333:key/k",
            context_keys: &["app", "env"],
        };
        let failure = Failure::Service {
            code: Some("InvalidCiphertextException".into()),
            message: None,
            status: 400,
        };
        let err = resolve_error(&call, &failure);
        let ResolveError::Undecryptable(message) = &err else {
            panic!("{err:?}");
        };
        for part in [
            "db/password",
            "key/k",
            "InvalidCiphertextException",
            "[app, env]",
            "may not match",
        ] {
            assert!(message.contains(part), "{part}: {message}");
        }

        let unreachable = resolve_error(&call, &Failure::Dispatch("connection refused".into()));
        assert!(
            matches!(&unreachable, ResolveError::Unavailable(m) if m.contains("connection refused")),
            "{unreachable:?}"
        );
        assert!(unreachable.is_retryable());
        let denied = Failure::Service {
            code: Some("AccessDeniedException".into()),
            message: Some("not allowed".into()),
            status: 400,
        };
        assert!(
            matches!(resolve_error(&call, &denied), ResolveError::Upstream(m) if m.contains("not allowed"))
        );
    }
}
