//! Encryption at rest: AES-256-GCM envelopes. Each value gets its own data
//! key, wrapped by a key-encryption key (KEK) named by an id, so KEKs can
//! rotate: new values are sealed with the current KEK, old ones opened by id.
//! Associated data binds a ciphertext to its row, so rows cannot be swapped.

use std::{collections::HashMap, fmt, path::Path};

use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::Error;

const FORMAT_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;

/// A 256-bit key-encryption key and its id (derived from the key, so the
/// same key always has the same id).
#[derive(Clone)]
pub struct Kek {
    id: String,
    key: [u8; KEY_LEN],
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kek({})", self.id)
    }
}

impl Kek {
    pub fn generate() -> Self {
        let mut key = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self::from_bytes(key)
    }

    pub fn from_bytes(key: [u8; KEY_LEN]) -> Self {
        let id = hex_prefix(&Sha256::digest(key));
        Kek { id, key }
    }

    /// Reads a base64-encoded 32-byte key.
    pub fn from_base64(text: &str) -> Result<Self, Error> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| Error::internal("reading the key-encryption key", "not base64"))?;
        let key: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| Error::internal("reading the key-encryption key", "must be 32 bytes"))?;
        Ok(Self::from_bytes(key))
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.key)
    }

    /// A key for another use (e.g. signing page cursors), derived from this
    /// one so it is shared by every replica that holds the KEK, and never
    /// the KEK itself.
    pub fn derive(&self, label: &str) -> [u8; KEY_LEN] {
        use hmac::{Hmac, Mac};
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&self.key) else {
            unreachable!("HMAC takes a key of any length")
        };
        mac.update(b"sharedcare.derive/");
        mac.update(label.as_bytes());
        mac.finalize().into_bytes().into()
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key kept at `path`, created (readable by this user only) if absent.
    pub fn load_or_create(path: &Path) -> Result<Self, Error> {
        load_or_create_key(path).map(Self::from_bytes)
    }
}

/// A 32-byte key kept base64-encoded at `path`, generated if absent.
fn load_or_create_key(path: &Path) -> Result<[u8; KEY_LEN], Error> {
    if path.exists() {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::internal("reading a key in the data dir", e))?;
        return decode_key(&text);
    }
    let mut key = [0u8; KEY_LEN];
    rand::rngs::OsRng.fill_bytes(&mut key);
    crate::files::write_private(path, &base64::engine::general_purpose::STANDARD.encode(key))?;
    Ok(key)
}

/// Reads a key given as base64 of 32 bytes (every key this module takes).
pub fn decode_key(text: &str) -> Result<[u8; KEY_LEN], Error> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| Error::internal("reading a key", "not base64"))?;
    bytes
        .try_into()
        .map_err(|_| Error::internal("reading a key", "must be 32 bytes"))
}

/// A keyed hash (HMAC-SHA-256) for finding encrypted values by equality
/// (a "blind index"): the same input always gives the same index, and
/// without the key the index reveals nothing. Its key is not a KEK and does
/// not rotate with one: changing it means re-indexing.
#[derive(Clone)]
pub struct BlindIndex {
    key: [u8; KEY_LEN],
}

impl fmt::Debug for BlindIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlindIndex([redacted])")
    }
}

impl BlindIndex {
    pub fn from_base64(text: &str) -> Result<Self, Error> {
        decode_key(text).map(|key| BlindIndex { key })
    }

    pub fn generate() -> Self {
        let mut key = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut key);
        BlindIndex { key }
    }

    pub fn load_or_create(path: &Path) -> Result<Self, Error> {
        load_or_create_key(path).map(|key| BlindIndex { key })
    }

    /// The index of `value` within `domain` (so equal values in different
    /// fields do not share an index), as hex.
    pub fn index(&self, domain: &str, value: &[u8]) -> Result<String, Error> {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .map_err(|e| Error::internal("computing a blind index", e))?;
        mac.update(domain.as_bytes());
        mac.update(&[0]);
        mac.update(value);
        Ok(mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect())
    }
}

fn hex_prefix(digest: &[u8]) -> String {
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// The current KEK and any earlier ones still needed to open old values.
#[derive(Debug, Clone)]
pub struct Keyring {
    current: Kek,
    all: HashMap<String, Kek>,
}

impl Keyring {
    pub fn new(current: Kek, previous: impl IntoIterator<Item = Kek>) -> Self {
        let mut all: HashMap<String, Kek> =
            previous.into_iter().map(|k| (k.id.clone(), k)).collect();
        all.insert(current.id.clone(), current.clone());
        Keyring { current, all }
    }

    /// Encrypts `plaintext` under a fresh data key wrapped by the current KEK.
    ///
    /// Layout: version, KEK id length, KEK id, wrap nonce, wrapped data key,
    /// data nonce, ciphertext.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, Error> {
        let mut data_key = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut data_key);
        let wrap_nonce = random_nonce();
        let data_nonce = random_nonce();
        let id = self.current.id.as_bytes();
        let wrapped = cipher(&self.current.key)
            .encrypt(
                &Nonce::from(wrap_nonce),
                Payload {
                    msg: &data_key,
                    aad: id,
                },
            )
            .map_err(|_| Error::internal("encrypting", "wrapping the data key failed"))?;
        let ciphertext = cipher(&data_key)
            .encrypt(
                &Nonce::from(data_nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| Error::internal("encrypting", "sealing the value failed"))?;
        let mut out =
            Vec::with_capacity(2 + id.len() + NONCE_LEN * 2 + wrapped.len() + ciphertext.len());
        out.push(FORMAT_VERSION);
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        out.extend_from_slice(&wrap_nonce);
        out.extend_from_slice(&wrapped);
        out.extend_from_slice(&data_nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Decrypts what `seal` produced with the same associated data.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, Error> {
        let corrupt = |what: &str| Error::internal("decrypting", what.to_owned());
        let (&version, rest) = sealed.split_first().ok_or_else(|| corrupt("empty"))?;
        if version != FORMAT_VERSION {
            return Err(corrupt("unknown envelope version"));
        }
        let (&id_len, rest) = rest.split_first().ok_or_else(|| corrupt("truncated"))?;
        let id_len = usize::from(id_len);
        let wrapped_len = KEY_LEN + TAG_LEN;
        if rest.len() < id_len + NONCE_LEN + wrapped_len + NONCE_LEN + TAG_LEN {
            return Err(corrupt("truncated"));
        }
        let (id, rest) = rest.split_at(id_len);
        let (wrap_nonce, rest) = rest.split_at(NONCE_LEN);
        let (wrapped, rest) = rest.split_at(wrapped_len);
        let (data_nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let id = std::str::from_utf8(id).map_err(|_| corrupt("bad key id"))?;
        let kek = self
            .all
            .get(id)
            .ok_or_else(|| Error::internal("decrypting", format!("loading key {id}: not found")))?;
        let data_key = cipher(&kek.key)
            .decrypt(
                &nonce(wrap_nonce)?,
                Payload {
                    msg: wrapped,
                    aad: id.as_bytes(),
                },
            )
            .map_err(|_| corrupt("the data key does not unwrap"))?;
        let data_key: [u8; KEY_LEN] = data_key
            .try_into()
            .map_err(|_| corrupt("the data key has the wrong length"))?;
        cipher(&data_key)
            .decrypt(
                &nonce(data_nonce)?,
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| corrupt("the value does not authenticate"))
    }
}

impl Keyring {
    /// The id of the KEK new values are sealed under.
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// `sealed` with its data key re-wrapped under the current KEK (the
    /// value's own ciphertext untouched), or `None` when it already is.
    /// Fails when the KEK it was sealed under is not in the ring.
    pub fn rewrap(&self, sealed: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let corrupt = |what: &str| Error::internal("re-wrapping", what.to_owned());
        let (&version, rest) = sealed.split_first().ok_or_else(|| corrupt("empty"))?;
        if version != FORMAT_VERSION {
            return Err(corrupt("unknown envelope version"));
        }
        let (&id_len, rest) = rest.split_first().ok_or_else(|| corrupt("truncated"))?;
        let id_len = usize::from(id_len);
        let wrapped_len = KEY_LEN + TAG_LEN;
        if rest.len() < id_len + NONCE_LEN + wrapped_len {
            return Err(corrupt("truncated"));
        }
        let (id, rest) = rest.split_at(id_len);
        let (wrap_nonce, rest) = rest.split_at(NONCE_LEN);
        let (wrapped, data) = rest.split_at(wrapped_len);
        let id = std::str::from_utf8(id).map_err(|_| corrupt("bad key id"))?;
        if id == self.current.id {
            return Ok(None);
        }
        let kek = self.all.get(id).ok_or_else(|| {
            Error::internal("re-wrapping", format!("loading key {id}: not found"))
        })?;
        let data_key = cipher(&kek.key)
            .decrypt(
                &nonce(wrap_nonce)?,
                Payload {
                    msg: wrapped,
                    aad: id.as_bytes(),
                },
            )
            .map_err(|_| corrupt("the data key does not unwrap"))?;
        let new_nonce = random_nonce();
        let current = self.current.id.as_bytes();
        let rewrapped = cipher(&self.current.key)
            .encrypt(
                &Nonce::from(new_nonce),
                Payload {
                    msg: &data_key,
                    aad: current,
                },
            )
            .map_err(|_| Error::internal("re-wrapping", "wrapping the data key failed"))?;
        let mut out =
            Vec::with_capacity(2 + current.len() + NONCE_LEN + rewrapped.len() + data.len());
        out.push(FORMAT_VERSION);
        out.push(current.len() as u8);
        out.extend_from_slice(current);
        out.extend_from_slice(&new_nonce);
        out.extend_from_slice(&rewrapped);
        out.extend_from_slice(data);
        Ok(Some(out))
    }
}

/// Keys kept in a file, one base64 key per line (blank lines and `#`
/// comments ignored): the previous KEKs of a rotation.
pub fn read_keys(path: &Path) -> Result<Vec<Kek>, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::internal(format!("reading {}", path.display()), e))?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .enumerate()
        .map(|(n, line)| {
            Kek::from_base64(line).map_err(|_| {
                Error::invalid(
                    path.display().to_string(),
                    format!("key {} is not the base64 encoding of 32 bytes", n + 1),
                )
            })
        })
        .collect()
}

fn cipher(key: &[u8; KEY_LEN]) -> Aes256Gcm {
    Aes256Gcm::new(key.into())
}

fn nonce(bytes: &[u8]) -> Result<Nonce<aes_gcm::aead::consts::U12>, Error> {
    let array: [u8; NONCE_LEN] = bytes
        .try_into()
        .map_err(|_| Error::internal("decrypting", "bad nonce"))?;
    Ok(Nonce::from(array))
}

fn random_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    nonce
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrapping_moves_a_value_to_the_current_key_and_keeps_it() {
        let old = Kek::generate();
        let before = Keyring::new(old.clone(), []);
        let sealed = before.seal(b"heart rate 72", b"aad").expect("seal");
        let after = Keyring::new(Kek::generate(), [old]);
        let rewrapped = after.rewrap(&sealed).expect("rewrap").expect("changed");
        assert_eq!(
            after.open(&rewrapped, b"aad").expect("open"),
            b"heart rate 72"
        );
        assert_eq!(
            after.rewrap(&rewrapped).expect("rewrap"),
            None,
            "already current"
        );
        let only_new = Keyring::new(after.current.clone(), []);
        assert!(
            only_new.open(&rewrapped, b"aad").is_ok(),
            "the old KEK is no longer needed"
        );
        assert!(
            only_new.rewrap(&sealed).is_err(),
            "an unknown KEK is an error"
        );
    }

    #[test]
    fn sealed_values_open_only_with_their_associated_data() {
        let ring = Keyring::new(Kek::generate(), []);
        let sealed = ring.seal(b"heart rate 72", b"record-1/1").expect("seal");
        assert!(
            !sealed.windows(5).any(|w| w == b"heart"),
            "no plaintext at rest"
        );
        assert_eq!(
            ring.open(&sealed, b"record-1/1").expect("open"),
            b"heart rate 72"
        );
        assert!(
            ring.open(&sealed, b"record-2/1").is_err(),
            "rows cannot be swapped"
        );
    }

    #[test]
    fn blind_indexes_are_stable_keyed_and_domain_separated() {
        let index = BlindIndex::generate();
        let a = index.index("nhs_number", b"9434765919").expect("index");
        assert_eq!(a, index.index("nhs_number", b"9434765919").expect("index"));
        assert_ne!(a, index.index("other", b"9434765919").expect("index"));
        let other_key = BlindIndex::generate();
        assert_ne!(
            a,
            other_key.index("nhs_number", b"9434765919").expect("index")
        );
        assert!(!a.contains("9434765919"));
    }

    #[test]
    fn any_flipped_byte_fails_to_open() {
        let ring = Keyring::new(Kek::generate(), []);
        let sealed = ring.seal(b"value", b"aad").expect("seal");
        for i in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 0x01;
            assert!(ring.open(&tampered, b"aad").is_err(), "byte {i}");
        }
    }

    #[test]
    fn old_values_open_after_rotation_and_unknown_keys_are_named() {
        let old = Kek::generate();
        let sealed = Keyring::new(old.clone(), [])
            .seal(b"v", b"a")
            .expect("seal");
        let rotated = Keyring::new(Kek::generate(), [old.clone()]);
        assert_eq!(rotated.open(&sealed, b"a").expect("open"), b"v");
        let err = Keyring::new(Kek::generate(), [])
            .open(&sealed, b"a")
            .expect_err("unknown key");
        assert!(err.message.contains("decrypting"));
        assert_eq!(
            Kek::from_base64(&old.to_base64()).expect("b64").id(),
            old.id()
        );
    }
}
