//! The IMDSv2 session tokens handed out by `PUT /latest/api/token`: random, shown to the
//! caller once, kept only as SHA-256 digests (the table holds nothing a reader of memory
//! could present), each bound to the process that asked for it and valid for the TTL it
//! asked for.
//!
//! The table is bounded. Expired tokens go first; a caller already holding
//! [`PER_CALLER`] live tokens loses its own oldest one; and when the table still holds
//! [`CAPACITY`] tokens, the oldest token of all is dropped. A dropped token is answered
//! 401 like an unknown one, and the SDKs then ask for a new one. Only callers the policy
//! lets through may mint tokens, and no caller can push out more than its own share
//! before the global limit applies.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use steeple_plugin_api::SecretBytes;
use zeroize::Zeroizing;

use crate::authz::Caller;

/// Most live tokens in the table.
pub const CAPACITY: usize = 4096;
/// Most live tokens one caller holds; its next one replaces its oldest.
pub const PER_CALLER: usize = 16;
/// Random bytes per token (43 characters of URL-safe base64).
const TOKEN_BYTES: usize = 32;
/// Longest header value taken for a token; anything longer is not one of ours.
pub const MAX_TOKEN_LEN: usize = 128;

/// Who a token belongs to: the uid, and the process (pid and start time, so a reused pid
/// is another process) when the kernel named one. Without a process, a token binds to
/// the uid alone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenBinding {
    uid: u32,
    process: Option<(i32, u64)>,
}

impl TokenBinding {
    /// The binding of a token minted for `caller`.
    pub fn of(caller: &Caller) -> Self {
        Self {
            uid: caller.uid,
            process: caller.process_key(),
        }
    }
}

/// Why a presented token is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenRefusal {
    /// Not issued here, expired, or dropped to make room.
    #[error("unknown or expired session token")]
    Unknown,
    /// Issued to another caller.
    #[error("session token issued to another process")]
    OtherCaller,
}

/// Why no token could be minted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomnessError;

#[derive(Debug)]
struct Entry {
    binding: TokenBinding,
    expires: Instant,
    /// Issue order, for dropping the oldest.
    serial: u64,
}

/// The live session tokens, by SHA-256 digest.
#[derive(Debug)]
pub struct TokenTable {
    entries: HashMap<[u8; 32], Entry>,
    capacity: usize,
    per_caller: usize,
    next_serial: u64,
}

impl Default for TokenTable {
    fn default() -> Self {
        Self::with_limits(CAPACITY, PER_CALLER)
    }
}

impl TokenTable {
    /// A table holding at most `capacity` tokens, `per_caller` of them for one caller.
    pub fn with_limits(capacity: usize, per_caller: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity: capacity.max(1),
            per_caller: per_caller.max(1),
            next_serial: 0,
        }
    }

    /// A new token for `binding`, valid for `ttl` from `now`, making room as the module
    /// docs say.
    pub fn issue(
        &mut self,
        binding: TokenBinding,
        ttl: Duration,
        now: Instant,
    ) -> Result<SecretBytes, RandomnessError> {
        let token = random_token()?;
        self.entries.retain(|_, entry| entry.expires > now);
        if self.count(&binding) >= self.per_caller {
            self.remove(self.oldest(|entry| entry.binding == binding));
        }
        if self.entries.len() >= self.capacity {
            self.remove(self.oldest(|_| true));
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        let entry = Entry {
            binding,
            expires: now + ttl,
            serial,
        };
        self.entries.insert(digest(token.expose()), entry);
        Ok(token)
    }

    /// Whether `presented` is a live token of `binding` at `now`.
    pub fn check(
        &self,
        presented: &[u8],
        binding: &TokenBinding,
        now: Instant,
    ) -> Result<(), TokenRefusal> {
        match self.entries.get(&digest(presented)) {
            Some(entry) if entry.expires <= now => Err(TokenRefusal::Unknown),
            Some(entry) if entry.binding != *binding => Err(TokenRefusal::OtherCaller),
            Some(_) => Ok(()),
            None => Err(TokenRefusal::Unknown),
        }
    }

    fn count(&self, binding: &TokenBinding) -> usize {
        self.entries
            .values()
            .filter(|entry| entry.binding == *binding)
            .count()
    }

    fn oldest(&self, which: impl Fn(&Entry) -> bool) -> Option<[u8; 32]> {
        self.entries
            .iter()
            .filter(|(_, entry)| which(entry))
            .min_by_key(|(_, entry)| entry.serial)
            .map(|(key, _)| *key)
    }

    fn remove(&mut self, key: Option<[u8; 32]>) {
        if let Some(key) = key {
            self.entries.remove(&key);
        }
    }
}

/// 32 random bytes as URL-safe base64, built in place so no copy is left behind.
fn random_token() -> Result<SecretBytes, RandomnessError> {
    use ring::rand::SecureRandom as _;
    let mut bytes = Zeroizing::new([0u8; TOKEN_BYTES]);
    ring::rand::SystemRandom::new()
        .fill(bytes.as_mut())
        .map_err(|_| RandomnessError)?;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut text = vec![0u8; base64::encoded_len(TOKEN_BYTES, false).unwrap_or(64)];
    let written = engine
        .encode_slice(bytes.as_ref(), &mut text)
        .map_err(|_| RandomnessError)?;
    text.truncate(written);
    Ok(SecretBytes::new(text))
}

fn digest(token: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(pid: i32) -> TokenBinding {
        TokenBinding {
            uid: 1000,
            process: Some((pid, 42)),
        }
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn a_token_is_random_printable_and_valid_for_its_caller_until_its_ttl() {
        let mut table = TokenTable::default();
        let now = Instant::now();
        let token = table.issue(binding(1), MINUTE, now).unwrap();
        let other = table.issue(binding(1), MINUTE, now).unwrap();
        assert_ne!(token.expose(), other.expose());
        assert_eq!(token.len(), 43);
        assert!(token.expose().iter().all(u8::is_ascii_graphic));
        let shown = format!("{token:?}");
        assert!(
            !shown.contains(std::str::from_utf8(token.expose()).unwrap()),
            "{shown}"
        );
        assert_eq!(table.check(token.expose(), &binding(1), now), Ok(()));
        let later = now + MINUTE - Duration::from_millis(1);
        assert_eq!(table.check(token.expose(), &binding(1), later), Ok(()));
        assert_eq!(
            table.check(token.expose(), &binding(1), now + MINUTE),
            Err(TokenRefusal::Unknown)
        );
    }

    #[test]
    fn a_token_of_another_process_or_a_reused_pid_is_refused() {
        let mut table = TokenTable::default();
        let now = Instant::now();
        let token = table.issue(binding(1), MINUTE, now).unwrap();
        assert_eq!(
            table.check(token.expose(), &binding(2), now),
            Err(TokenRefusal::OtherCaller)
        );
        let reused = TokenBinding {
            uid: 1000,
            process: Some((1, 43)),
        };
        assert_eq!(
            table.check(token.expose(), &reused, now),
            Err(TokenRefusal::OtherCaller)
        );
        for junk in [&b""[..], b"x", &token.expose()[1..]] {
            assert_eq!(
                table.check(junk, &binding(1), now),
                Err(TokenRefusal::Unknown)
            );
        }
    }

    #[test]
    fn a_caller_over_its_share_loses_its_own_oldest_token() {
        let mut table = TokenTable::with_limits(100, 2);
        let now = Instant::now();
        let neighbour = table.issue(binding(9), MINUTE, now).unwrap();
        let first = table.issue(binding(1), MINUTE, now).unwrap();
        let second = table.issue(binding(1), MINUTE, now).unwrap();
        let third = table.issue(binding(1), MINUTE, now).unwrap();
        assert_eq!(table.entries.len(), 3);
        assert_eq!(
            table.check(first.expose(), &binding(1), now),
            Err(TokenRefusal::Unknown)
        );
        for live in [&second, &third] {
            assert_eq!(table.check(live.expose(), &binding(1), now), Ok(()));
        }
        assert_eq!(table.check(neighbour.expose(), &binding(9), now), Ok(()));
    }

    #[test]
    fn a_full_table_drops_expired_tokens_first_then_the_oldest() {
        let mut table = TokenTable::with_limits(3, 3);
        let now = Instant::now();
        let short = table
            .issue(binding(1), Duration::from_secs(1), now)
            .unwrap();
        let oldest = table.issue(binding(2), MINUTE, now).unwrap();
        let kept = table.issue(binding(3), MINUTE, now).unwrap();
        let later = now + Duration::from_secs(2);
        let fourth = table.issue(binding(4), MINUTE, later).unwrap();
        assert_eq!(table.entries.len(), 3, "the expired one made room");
        assert_eq!(table.check(oldest.expose(), &binding(2), later), Ok(()));
        let fifth = table.issue(binding(5), MINUTE, later).unwrap();
        assert_eq!(table.entries.len(), 3);
        assert_eq!(
            table.check(oldest.expose(), &binding(2), later),
            Err(TokenRefusal::Unknown),
            "full: the oldest went"
        );
        for (token, pid) in [(&kept, 3), (&fourth, 4), (&fifth, 5)] {
            assert_eq!(table.check(token.expose(), &binding(pid), later), Ok(()));
        }
        assert_eq!(
            table.check(short.expose(), &binding(1), later),
            Err(TokenRefusal::Unknown)
        );
    }

    #[test]
    fn the_default_limits_hold_under_a_flood() {
        let mut table = TokenTable::default();
        let now = Instant::now();
        for i in 0..(CAPACITY + 100) {
            table
                .issue(binding(i32::try_from(i).unwrap()), MINUTE, now)
                .unwrap();
        }
        assert_eq!(table.entries.len(), CAPACITY);
        for _ in 0..(PER_CALLER * 3) {
            table.issue(binding(-1), MINUTE, now).unwrap();
        }
        assert_eq!(table.count(&binding(-1)), PER_CALLER);
        assert_eq!(table.entries.len(), CAPACITY);
    }
}
