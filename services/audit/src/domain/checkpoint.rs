//! Signed tree heads as C2SP checkpoints in signed notes
//! (<https://c2sp.org/tlog-checkpoint>, <https://c2sp.org/signed-note>).
//!
//! ```text
//! <origin>\n                 the log's name
//! <tree size>\n              decimal
//! <base64 root hash>\n       standard base64, padded
//! \n
//! — <key name> <base64(key id || Ed25519 signature over the lines above)>\n
//! ```
//!
//! The key id is the first four bytes of SHA-256(key name || "\n" || 0x01
//! || public key), and the verifier key an auditor is given out of band is
//! `<key name>+<hex key id>+<base64(0x01 || public key)>`. The log's key
//! name is its origin.

use std::fmt;

use base64::{Engine, engine::general_purpose::STANDARD};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use super::Hash;

/// The signature algorithm byte of Ed25519 in signed notes.
const ED25519: u8 = 0x01;
/// Starts every signature line.
const SIGNATURE_PREFIX: &str = "\u{2014} ";
/// Longest note we read: a checkpoint is a few hundred bytes.
const MAX_NOTE_BYTES: usize = 16 * 1024;

/// A tree head: which log, how many entries, and the root over them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeHead {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl TreeHead {
    /// The checkpoint body that is signed.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root.as_bytes())
        )
    }
}

/// A head with its signature and the whole note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHead {
    pub head: TreeHead,
    pub key_id: [u8; 4],
    pub signature: [u8; 64],
    pub note: String,
}

/// Why a key name, verifier key or note is refused. Says what, never echoes
/// key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("the key name must be non-empty and hold no spaces, newlines or '+'")]
    BadKeyName,
    #[error(
        "the verifier key is not <name>+<hex key id>+<base64 of 0x01 and a 32-byte Ed25519 key>: {0}"
    )]
    BadVerifierKey(&'static str),
    #[error("the note is malformed: {0}")]
    Malformed(&'static str),
    #[error("the note has no signature by key {0}")]
    NotSigned(String),
    #[error("the signature by key {0} does not verify")]
    BadSignature(String),
    #[error("the checkpoint is for log {found}, not {expected}")]
    WrongOrigin { expected: String, found: String },
}

/// A key name (and so a log's origin) must be non-empty and hold no white
/// space or '+': the note and verifier key formats split on them.
pub fn check_key_name(name: &str) -> Result<(), CheckpointError> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+') {
        return Err(CheckpointError::BadKeyName);
    }
    Ok(())
}

fn key_id(name: &str, public: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ED25519]);
    h.update(public.as_bytes());
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// The log's signing key, named.
pub struct LogSigner {
    name: String,
    id: [u8; 4],
    key: SigningKey,
}

impl LogSigner {
    pub fn new(name: &str, key: SigningKey) -> Result<Self, CheckpointError> {
        check_key_name(name)?;
        Ok(LogSigner {
            name: name.to_owned(),
            id: key_id(name, &key.verifying_key()),
            key,
        })
    }

    /// What an auditor is given to check this signer's heads.
    pub fn verifier(&self) -> LogVerifierKey {
        LogVerifierKey {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// Signs the head of a tree of `size` entries with root `root`.
    pub fn sign(&self, size: u64, root: Hash) -> SignedHead {
        let head = TreeHead {
            origin: self.name.clone(),
            size,
            root,
        };
        let body = head.body();
        let signature = self.key.sign(body.as_bytes()).to_bytes();
        let mut sig = self.id.to_vec();
        sig.extend_from_slice(&signature);
        let note = format!(
            "{body}\n{SIGNATURE_PREFIX}{} {}\n",
            self.name,
            STANDARD.encode(sig)
        );
        SignedHead {
            head,
            key_id: self.id,
            signature,
            note,
        }
    }
}

/// A verifier key: checks the notes of one log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogVerifierKey {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

impl fmt::Display for LogVerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut public = vec![ED25519];
        public.extend_from_slice(self.key.as_bytes());
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex::encode(self.id),
            STANDARD.encode(public)
        )
    }
}

impl LogVerifierKey {
    /// Reads `<name>+<hex key id>+<base64(0x01 || key)>`.
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let bad = CheckpointError::BadVerifierKey;
        let mut parts = text.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("it does not have three parts"));
        };
        check_key_name(name).map_err(|_| bad("the name is empty or holds spaces"))?;
        let id: [u8; 4] = hex::decode(id)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(bad("the key id is not 8 hex digits"))?;
        let key = STANDARD
            .decode(key)
            .map_err(|_| bad("the key is not base64"))?;
        let (&alg, key) = key.split_first().ok_or(bad("the key is empty"))?;
        if alg != ED25519 {
            return Err(bad("the key is not an Ed25519 key"));
        }
        let key: [u8; 32] = key.try_into().map_err(|_| bad("the key is not 32 bytes"))?;
        let key =
            VerifyingKey::from_bytes(&key).map_err(|_| bad("the key is not a valid point"))?;
        if key_id(name, &key) != id {
            return Err(bad("the key id does not match the name and key"));
        }
        Ok(LogVerifierKey {
            name: name.to_owned(),
            id,
            key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks `note` is a checkpoint of this log signed by this key, and
    /// returns its head.
    pub fn verify(&self, note: &str) -> Result<TreeHead, CheckpointError> {
        let malformed = CheckpointError::Malformed;
        if note.len() > MAX_NOTE_BYTES {
            return Err(malformed("it is longer than 16 KiB"));
        }
        let split = note
            .find("\n\n")
            .ok_or(malformed("there is no blank line before the signatures"))?;
        let (body, signatures) = (&note[..=split], &note[split + 2..]);
        let mut found = false;
        for line in signatures.split_terminator('\n') {
            let rest = line
                .strip_prefix(SIGNATURE_PREFIX)
                .ok_or(malformed("a signature line does not start with an em dash"))?;
            let (name, sig) = rest
                .split_once(' ')
                .ok_or(malformed("a signature line has no signature"))?;
            if name != self.name {
                continue;
            }
            let sig = STANDARD
                .decode(sig)
                .map_err(|_| malformed("a signature is not base64"))?;
            if sig.len() != 4 + 64 || sig[..4] != self.id {
                continue;
            }
            let signature = Signature::from_slice(&sig[4..])
                .map_err(|_| malformed("a signature is not 64 bytes"))?;
            self.key
                .verify(body.as_bytes(), &signature)
                .map_err(|_| CheckpointError::BadSignature(self.name.clone()))?;
            found = true;
        }
        if !found {
            return Err(CheckpointError::NotSigned(self.name.clone()));
        }
        if !note.ends_with('\n') {
            return Err(malformed("it does not end with a newline"));
        }
        let mut lines = body.split_terminator('\n');
        let origin = lines.next().ok_or(malformed("there is no origin line"))?;
        let size = lines
            .next()
            .ok_or(malformed("there is no tree size line"))?;
        let root = lines
            .next()
            .ok_or(malformed("there is no root hash line"))?;
        if origin != self.name {
            return Err(CheckpointError::WrongOrigin {
                expected: self.name.clone(),
                found: origin.to_owned(),
            });
        }
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(malformed("the tree size is not a decimal number"));
        }
        let size = size
            .parse()
            .map_err(|_| malformed("the tree size is out of range"))?;
        let root = STANDARD
            .decode(root)
            .ok()
            .and_then(|r| Hash::from_slice(&r))
            .ok_or(malformed("the root hash is not base64 of 32 bytes"))?;
        Ok(TreeHead {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::generate(&mut rand::rngs::OsRng)
    }

    fn signer(name: &str) -> LogSigner {
        LogSigner::new(name, key()).expect("signer")
    }

    #[test]
    fn a_signed_head_verifies_and_reads_back() {
        let s = signer("sharedcare.test/audit");
        let signed = s.sign(42, Hash([9; 32]));
        assert!(signed.note.starts_with("sharedcare.test/audit\n42\n"));
        assert!(signed.note.contains("\n\n\u{2014} sharedcare.test/audit "));
        let key = LogVerifierKey::parse(&s.verifier().to_string()).expect("parses");
        assert_eq!(key, s.verifier());
        let head = key.verify(&signed.note).expect("verifies");
        assert_eq!(head, signed.head);
        assert_eq!(head.size, 42);
    }

    #[test]
    fn the_empty_tree_signs_as_size_zero() {
        let s = signer("log");
        let signed = s.sign(0, crate::domain::merkle::EMPTY_ROOT);
        let head = s.verifier().verify(&signed.note).expect("verifies");
        assert_eq!(head.size, 0);
    }

    #[test]
    fn any_change_to_the_note_is_refused() {
        let s = signer("log");
        let key = s.verifier();
        let note = s.sign(5, Hash([1; 32])).note;
        let tampered = [
            note.replacen("\n5\n", "\n6\n", 1),
            note.replacen("log\n", "log2\n", 1),
            note.replacen("AQEB", "AQEC", 1),
        ];
        for t in tampered {
            assert_ne!(t, note);
            assert!(key.verify(&t).is_err(), "{t:?}");
        }
        // Signed by another key of the same name.
        let other = signer("log").sign(5, Hash([1; 32])).note;
        assert_eq!(
            key.verify(&other),
            Err(CheckpointError::NotSigned("log".into()))
        );
        // Garbage never panics.
        for junk in ["", "\n\n", "log\n5\n", "log\n5\nxx\n\n\u{2014} log AAAA\n"] {
            assert!(key.verify(junk).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn bad_verifier_keys_are_refused_saying_why() {
        let good = signer("log").verifier().to_string();
        assert!(LogVerifierKey::parse(&good).is_ok());
        for bad in [
            "",
            "log",
            "log+zz+AQ==",
            &good.replacen("log+", "other+", 1),
            "log+00000000+AgAAAA==",
        ] {
            assert!(
                matches!(
                    LogVerifierKey::parse(bad),
                    Err(CheckpointError::BadVerifierKey(_))
                ),
                "{bad:?}"
            );
        }
        assert!(LogSigner::new("has space", key()).is_err());
        assert!(LogSigner::new("a+b", key()).is_err());
    }
}
