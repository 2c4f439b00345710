//! The conformance checks, written once against [`Subject`] and run for every provider:
//! each seals its own rows, presents them the way the agent's registry does (validate
//! under a size limit, check the logical-path binding, resolve) and compares the error
//! class with what the subject declares in its [`Expected`].

use std::time::Duration;

use base64::Engine as _;
use ring::rand::{SecureRandom as _, SystemRandom};
use steeple_plugin_api::{
    BoxFuture, EncryptionContext, EnvelopeResolver, EnvelopeRow, PATH_CONTEXT_KEY, ResolveError,
    check_path_binding, format_aad, parse_aad,
};

/// Size limit the agent applies by default (`envelopes.max_ciphertext_bytes`), generous
/// enough for every data-key payload sealed here.
pub const MAX_CIPHERTEXT: usize = 64 * 1024;
/// Bound on one presentation: a hang is a failure, not a stuck test.
const RESOLVE_BOUND: Duration = Duration::from_secs(30);

/// The class of a [`ResolveError`], the part of it the contract fixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// [`ResolveError::Refused`]: local policy or validation, before any upstream call.
    Refused,
    /// [`ResolveError::Undecryptable`]: the ciphertext does not open as presented.
    Undecryptable,
    /// [`ResolveError::Upstream`]: a permanent upstream answer.
    Upstream,
    /// [`ResolveError::Unavailable`]: retry later.
    Unavailable,
}

/// What a provider answers to each hostile presentation; `None` marks a check that does
/// not apply to it (the subject's constructor says why).
#[derive(Debug, Clone)]
pub struct Expected {
    /// A context value changed, the logical-path binding kept.
    pub wrong_context: Option<Class>,
    /// The row copied under another logical path, `aad` as sealed.
    pub moved: Option<Class>,
    /// Copied under another path with the binding in `aad` rewritten to match it.
    pub relabelled: Option<Class>,
    /// Plaintexts above this many bytes are sealed with a data key (`None`: no such
    /// layer; the large plaintext must still round-trip, as one sealed payload).
    pub data_key_above: Option<usize>,
    /// Whether rows carry a ciphertext the size limit applies to.
    pub has_ciphertext: bool,
    /// A row whose ciphertext (or, with a data key, wrapped key or payload) is garbage:
    /// random bytes as long as the sealed ones, or the sealed ones cut short. `Err` says
    /// why the check does not apply; the suite prints it.
    pub garbage: Result<Class, &'static str>,
}

/// One provider under test: its resolver, how to seal for it, how to take its upstream
/// away.
pub trait Subject {
    /// The provider's wire name, for failure messages.
    fn name(&self) -> &'static str;
    /// The resolver under test.
    fn resolver(&self) -> &dyn EnvelopeResolver;
    /// Seals `plaintext` for `logical_path` and `context` as the provider's sealing tool
    /// does (for KV: writes the secret and returns a row naming it).
    fn seal<'a>(
        &'a self,
        logical_path: &'a str,
        context: &'a EncryptionContext,
        plaintext: &'a [u8],
    ) -> BoxFuture<'a, anyhow::Result<EnvelopeRow>>;
    /// Stops the upstream for good; `false` when there is none.
    fn stop_upstream(&mut self) -> anyhow::Result<bool>;
    /// What the upstream logged (empty when there is none).
    fn peer_logs(&self) -> String;
    /// The declared answers.
    fn expected(&self) -> Expected;
}

/// The class of `error`.
pub fn class(error: &ResolveError) -> anyhow::Result<Class> {
    Ok(match error {
        ResolveError::Refused(_) => Class::Refused,
        ResolveError::Undecryptable(_) => Class::Undecryptable,
        ResolveError::Upstream(_) => Class::Upstream,
        ResolveError::Unavailable(_) => Class::Unavailable,
        other => anyhow::bail!("a ResolveError class this suite does not know: {other}"),
    })
}

/// Presents `row` as the agent's registry does: validated under `max` bytes, the path
/// binding required, then resolved. Refusals before the resolver come back as
/// [`ResolveError::Refused`], the class the registry reports them under.
pub async fn present(
    resolver: &dyn EnvelopeResolver,
    row: &EnvelopeRow,
    max: usize,
) -> anyhow::Result<Result<Vec<u8>, ResolveError>> {
    let sealed = match row.validate(max) {
        Ok(sealed) => sealed,
        Err(e) => return Ok(Err(ResolveError::Refused(e.to_string()))),
    };
    if let Err(problem) = check_path_binding(&sealed, true) {
        return Ok(Err(ResolveError::Refused(problem)));
    }
    let outcome = tokio::time::timeout(RESOLVE_BOUND, resolver.resolve(&sealed))
        .await
        .map_err(|_| anyhow::anyhow!("{}: no answer within {RESOLVE_BOUND:?}", row.logical_path))?;
    Ok(outcome.map(|r| r.plaintext.expose().to_vec()))
}

/// Runs every check against `subject`, the outage last. Every plaintext starts with
/// `canary`, so the caller finds any of them in a log by that prefix.
pub async fn run(subject: &mut dyn Subject, canary: &str) -> anyhow::Result<()> {
    round_trip(subject, canary).await?;
    wrong_context(subject, canary).await?;
    data_key_layer(subject, canary).await?;
    oversized(subject, canary).await?;
    garbage(subject, canary).await?;
    outage(subject, canary).await
}

fn context() -> EncryptionContext {
    [("app".to_owned(), "payments".to_owned())].into()
}

async fn round_trip(subject: &dyn Subject, canary: &str) -> anyhow::Result<()> {
    let plaintext = format!("{canary}-round-trip").into_bytes();
    let row = subject
        .seal("conformance/round-trip", &context(), &plaintext)
        .await?;
    let resolved = present(subject.resolver(), &row, MAX_CIPHERTEXT)
        .await?
        .map_err(|e| anyhow::anyhow!("{}: round trip: {e}", subject.name()))?;
    anyhow::ensure!(
        resolved == plaintext,
        "{}: round trip: the bytes differ",
        subject.name()
    );
    Ok(())
}

/// A row shown with another context or under another name never yields the plaintext;
/// each provider answers with the class it declares.
async fn wrong_context(subject: &dyn Subject, canary: &str) -> anyhow::Result<()> {
    let expected = subject.expected();
    let plaintext = format!("{canary}-context").into_bytes();
    let row = subject
        .seal("conformance/context", &context(), &plaintext)
        .await?;
    let with_aad = |aad: &str| -> anyhow::Result<String> {
        let mut pairs = parse_aad(aad).map_err(anyhow::Error::msg)?;
        pairs.insert("app".into(), "billing".into());
        Ok(format_aad(&pairs))
    };
    let relabel = |aad: &str| -> anyhow::Result<String> {
        let mut pairs = parse_aad(aad).map_err(anyhow::Error::msg)?;
        pairs.insert(PATH_CONTEXT_KEY.into(), "conformance/other".into());
        Ok(format_aad(&pairs))
    };
    let cases = [
        (
            "wrong context",
            expected.wrong_context,
            EnvelopeRow {
                aad: with_aad(&row.aad)?,
                ..row.clone()
            },
        ),
        (
            "moved",
            expected.moved,
            EnvelopeRow {
                logical_path: "conformance/other".into(),
                ..row.clone()
            },
        ),
        (
            "relabelled",
            expected.relabelled,
            EnvelopeRow {
                logical_path: "conformance/other".into(),
                aad: relabel(&row.aad)?,
                ..row.clone()
            },
        ),
    ];
    for (case, expected, hostile) in cases {
        let Some(expected) = expected else { continue };
        let outcome = present(subject.resolver(), &hostile, MAX_CIPHERTEXT).await?;
        let Err(error) = outcome else {
            anyhow::bail!("{}: {case}: the plaintext came back", subject.name());
        };
        let got = class(&error)?;
        anyhow::ensure!(
            got == expected,
            "{}: {case}: expected {expected:?}, got {error}",
            subject.name()
        );
    }
    Ok(())
}

/// A plaintext past the provider's direct limit goes through the data-key layer (where it
/// has one) and round-trips.
async fn data_key_layer(subject: &dyn Subject, canary: &str) -> anyhow::Result<()> {
    let expected = subject.expected();
    let size = expected.data_key_above.unwrap_or(32 * 1024) + 8 * 1024;
    let plaintext: Vec<u8> = format!("{canary}-large-")
        .bytes()
        .cycle()
        .take(size)
        .collect();
    let row = subject
        .seal("conformance/large", &context(), &plaintext)
        .await?;
    anyhow::ensure!(
        row.data_key_ciphertext.is_some() == expected.data_key_above.is_some(),
        "{}: whether {size} bytes use a data key",
        subject.name()
    );
    let resolved = present(subject.resolver(), &row, MAX_CIPHERTEXT)
        .await?
        .map_err(|e| anyhow::anyhow!("{}: large: {e}", subject.name()))?;
    anyhow::ensure!(
        resolved == plaintext,
        "{}: the large plaintext differs",
        subject.name()
    );
    Ok(())
}

/// A row whose ciphertext is over the limit is refused by name and size before any
/// upstream call.
async fn oversized(subject: &dyn Subject, canary: &str) -> anyhow::Result<()> {
    if !subject.expected().has_ciphertext {
        return Ok(());
    }
    let plaintext = format!("{canary}-oversized").into_bytes();
    let row = subject
        .seal("conformance/oversized", &context(), &plaintext)
        .await?;
    let limit = 16;
    let outcome = present(subject.resolver(), &row, limit).await?;
    let Err(ResolveError::Refused(message)) = outcome else {
        anyhow::bail!(
            "{}: an oversized row was not refused: {outcome:?}",
            subject.name()
        );
    };
    anyhow::ensure!(
        message.contains("\"conformance/oversized\"")
            && message.contains(&format!("larger than {limit} bytes")),
        "{}: {message}",
        subject.name()
    );
    Ok(())
}

/// A row whose ciphertext is garbage is refused with the class the subject declares,
/// never as `Unavailable` (no retry can open it), never with the plaintext, in the error
/// text either. A panic in the resolver fails the test with it.
async fn garbage(subject: &dyn Subject, canary: &str) -> anyhow::Result<()> {
    let expected = match subject.expected().garbage {
        Ok(class) => class,
        Err(why) => {
            eprintln!(
                "{}: garbage ciphertext: does not apply: {why}",
                subject.name()
            );
            return Ok(());
        }
    };
    for (case, hostile) in garbage_rows(subject, canary).await? {
        let outcome = present(subject.resolver(), &hostile, MAX_CIPHERTEXT).await?;
        let Err(error) = outcome else {
            anyhow::bail!("{}: {case}: the plaintext came back", subject.name());
        };
        let got = class(&error)?;
        anyhow::ensure!(
            got == expected && got != Class::Unavailable && !error.is_retryable(),
            "{}: {case}: expected {expected:?}, got {error}",
            subject.name()
        );
        anyhow::ensure!(
            !error.to_string().contains(canary),
            "{}: {case}: the error shows the plaintext",
            subject.name()
        );
    }
    Ok(())
}

/// The garbled rows: a direct row's ciphertext made random and cut short; with a
/// data-key layer, a large row's wrapped key made random and its payload cut short.
async fn garbage_rows(
    subject: &dyn Subject,
    canary: &str,
) -> anyhow::Result<Vec<(&'static str, EnvelopeRow)>> {
    let plaintext = format!("{canary}-garbage").into_bytes();
    let row = subject
        .seal("conformance/garbage", &context(), &plaintext)
        .await?;
    let mut rows = vec![
        (
            "random ciphertext",
            EnvelopeRow {
                ciphertext_ref: garble(&row.ciphertext_ref, Garble::Random)?,
                ..row.clone()
            },
        ),
        (
            "truncated ciphertext",
            EnvelopeRow {
                ciphertext_ref: garble(&row.ciphertext_ref, Garble::Truncate)?,
                ..row
            },
        ),
    ];
    let Some(above) = subject.expected().data_key_above else {
        return Ok(rows);
    };
    let plaintext: Vec<u8> = format!("{canary}-garbage-large-")
        .bytes()
        .cycle()
        .take(above + 1024)
        .collect();
    let large = subject
        .seal("conformance/garbage-large", &context(), &plaintext)
        .await?;
    let data_key = large
        .data_key_ciphertext
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("{}: no data key above {above}", subject.name()))?;
    rows.push((
        "random data key",
        EnvelopeRow {
            data_key_ciphertext: Some(garble(data_key, Garble::Random)?),
            ..large.clone()
        },
    ));
    rows.push((
        "truncated payload",
        EnvelopeRow {
            ciphertext_ref: garble(&large.ciphertext_ref, Garble::Truncate)?,
            ..large
        },
    ));
    Ok(rows)
}

/// How [`garble`] spoils a ciphertext.
#[derive(Debug, Clone, Copy)]
enum Garble {
    /// Random bytes, as many as the sealed ones.
    Random,
    /// The sealed bytes, cut to half.
    Truncate,
}

/// `text` (base64, or a transit `vault:v<N>:<base64>`) with its bytes spoiled, still
/// well-formed, so it passes validation and reaches the resolver.
fn garble(text: &str, how: Garble) -> anyhow::Result<String> {
    let (prefix, body) = match text.strip_prefix("vault:v") {
        Some(rest) => {
            let (version, body) = rest
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("a transit ciphertext without its version"))?;
            (format!("vault:v{version}:"), body)
        }
        None => (String::new(), text),
    };
    let engine = base64::engine::general_purpose::STANDARD;
    let mut bytes = engine.decode(body)?;
    match how {
        Garble::Random => SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| anyhow::anyhow!("no randomness"))?,
        Garble::Truncate => bytes.truncate(bytes.len() / 2),
    }
    Ok(format!("{prefix}{}", engine.encode(bytes)))
}

/// With the upstream gone, a row that resolved before is retryable `Unavailable`.
async fn outage(subject: &mut dyn Subject, canary: &str) -> anyhow::Result<()> {
    let plaintext = format!("{canary}-outage").into_bytes();
    let row = subject
        .seal("conformance/outage", &context(), &plaintext)
        .await?;
    present(subject.resolver(), &row, MAX_CIPHERTEXT)
        .await?
        .map_err(|e| anyhow::anyhow!("{}: before the outage: {e}", subject.name()))?;
    if !subject.stop_upstream()? {
        return Ok(());
    }
    let outcome = present(subject.resolver(), &row, MAX_CIPHERTEXT).await?;
    let Err(error) = outcome else {
        anyhow::bail!("{}: resolved with the upstream down", subject.name());
    };
    anyhow::ensure!(
        class(&error)? == Class::Unavailable && error.is_retryable(),
        "{}: outage: expected Unavailable, got {error}",
        subject.name()
    );
    Ok(())
}
