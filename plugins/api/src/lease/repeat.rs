//! Log-noise control for upstreams that stay down: the first occurrence of an error is
//! logged at its level, identical repeats at DEBUG, and the recovery once.

/// Logs the first occurrence of an error at WARN and identical repeats at DEBUG, so an
/// upstream that stays down does not flood the log.
#[derive(Debug, Default)]
pub struct RepeatFilter {
    last: Option<String>,
}

impl RepeatFilter {
    /// Whether `message` repeats the last error; remembers it either way.
    pub fn repeats(&mut self, message: &str) -> bool {
        if self.last.as_deref() == Some(message) {
            return true;
        }
        self.last = Some(message.to_owned());
        false
    }

    /// Logs `message` about `what`.
    pub fn warn(&mut self, what: &str, message: &str) {
        if self.repeats(message) {
            tracing::debug!(%what, error = %message, "still failing");
        } else {
            tracing::warn!(%what, error = %message, "upstream call failed; retrying with backoff");
        }
    }

    /// Forgets the last error (call on success); whether there was one.
    pub fn clear(&mut self) -> bool {
        self.last.take().is_some()
    }

    /// Forgets the last error (call on success) and says so if there was one.
    pub fn recovered(&mut self, what: &str) {
        if self.clear() {
            tracing::info!(%what, "recovered");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_is_the_same_message_as_the_last_until_cleared() {
        let mut filter = RepeatFilter::default();
        assert!(!filter.repeats("down"));
        assert!(filter.repeats("down"));
        assert!(!filter.repeats("refused"));
        assert!(filter.clear());
        assert!(!filter.clear());
        assert!(!filter.repeats("refused"), "a new outage logs again");
    }
}
