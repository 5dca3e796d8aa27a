//! A create's idempotency key: scoped to the caller who sent it (two callers
//! may pick the same key), and remembered with a digest of the request it
//! answered, so the same key with a different request is refused rather
//! than answered with the wrong record.

use sha2::{Digest, Sha256};
use sharedcare_kit::Error;

const FIELD: &str = "idempotency_key";
const MAX_CHARS: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    scoped: String,
    request_hash: String,
}

fn digest(parts: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        // Length-prefixed, so no two part lists hash alike.
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hex::encode(hash.finalize())
}

impl IdempotencyKey {
    /// `None` when no key was sent. `caller` identifies the principal;
    /// `request` is everything that shapes the create.
    pub fn parse(key: &str, caller: &str, request: &[&[u8]]) -> Result<Option<Self>, Error> {
        if key.is_empty() {
            return Ok(None);
        }
        if key.len() > MAX_CHARS || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::invalid(
                FIELD,
                format!("must be 1 to {MAX_CHARS} printable ASCII characters"),
            ));
        }
        Ok(Some(IdempotencyKey {
            scoped: digest(&[caller.as_bytes(), key.as_bytes()]),
            request_hash: digest(request),
        }))
    }

    /// The key as stored: the caller's and theirs, hashed.
    pub fn scoped(&self) -> &str {
        &self.scoped
    }

    pub fn request_hash(&self) -> &str {
        &self.request_hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_scoped_to_their_caller_and_bound_to_their_request() {
        let a = IdempotencyKey::parse("k-1", "alice", &[b"p", b"{}"]).expect("ok");
        let b = IdempotencyKey::parse("k-1", "bob", &[b"p", b"{}"]).expect("ok");
        let a2 = IdempotencyKey::parse("k-1", "alice", &[b"p", b"{ }"]).expect("ok");
        let (a, b, a2) = (a.expect("some"), b.expect("some"), a2.expect("some"));
        assert_ne!(a.scoped(), b.scoped());
        assert_eq!(a.scoped(), a2.scoped());
        assert_ne!(a.request_hash(), a2.request_hash());
        assert_eq!(IdempotencyKey::parse("", "alice", &[]).expect("ok"), None);
        for bad in ["has space", "é", &"k".repeat(129)] {
            let err = IdempotencyKey::parse(bad, "alice", &[]).expect_err(bad);
            assert_eq!(err.field.as_deref(), Some(FIELD));
        }
    }
}
