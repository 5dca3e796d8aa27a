//! Ed25519 signing keys for access tokens: generated, stored as PKCS#8 PEM,
//! published as JWKs. identity signs with them; tests mint with them.

use std::{future::Future, path::Path, pin::Pin};

use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sharedcare_proto::identity::v1::Jwk;

use crate::{
    Error,
    auth::{Claims, KeySource},
    config::SecretSource,
};

/// A private signing key with its key id.
pub struct SigningKey {
    kid: String,
    key: ed25519_dalek::SigningKey,
    encoding: EncodingKey,
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Self {
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        Self::from_dalek(key)
    }

    /// Reads a PKCS#8 PEM private key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, Error> {
        Ok(Self::from_dalek(ed25519_from_pem(pem)?))
    }

    /// The configured key, or the one kept at `path` (see [`configured_or_kept`]).
    pub fn configured_or_kept(
        source: &SecretSource,
        key: &str,
        path: &Path,
    ) -> Result<Self, Error> {
        Ok(Self::from_dalek(configured_or_kept(source, key, path)?))
    }

    /// Writes the private key as PKCS#8 PEM, for the data dir or a Secret.
    pub fn to_pkcs8_pem(&self) -> Result<String, Error> {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.to_string())
            .map_err(|e| Error::internal("encoding the signing key", e))
    }

    fn from_dalek(key: ed25519_dalek::SigningKey) -> Self {
        let kid = thumbprint(&key.verifying_key().to_bytes());
        // RFC 8410: an Ed25519 PKCS#8 key is this fixed prefix and the seed.
        let mut der = PKCS8_ED25519_PREFIX.to_vec();
        der.extend_from_slice(&key.to_bytes());
        let encoding = EncodingKey::from_ed_der(&der);
        SigningKey { kid, key, encoding }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half as a JWK.
    pub fn jwk(&self) -> Jwk {
        Jwk {
            kid: self.kid.clone(),
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(self.key.verifying_key().to_bytes()),
            alg: "EdDSA".into(),
            r#use: "sig".into(),
        }
    }

    /// Signs claims as a compact JWS.
    pub fn sign(&self, claims: &Claims) -> Result<String, Error> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| Error::internal("signing a token", e))
    }
}

fn ed25519_from_pem(pem: &str) -> Result<ed25519_dalek::SigningKey, Error> {
    ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
        .map_err(|_| Error::internal("reading a signing key", "not an Ed25519 PKCS#8 PEM"))
}

/// The Ed25519 key (PKCS#8 PEM) configured at `source` (`key` names it in
/// errors), or else the one kept at `path`: generated on first use and
/// written readable by this user only. What identity signs tokens with and
/// audit signs tree heads with.
pub fn configured_or_kept(
    source: &SecretSource,
    key: &str,
    path: &Path,
) -> Result<ed25519_dalek::SigningKey, Error> {
    if let Some(pem) = source
        .resolve(key)
        .map_err(|e| Error::invalid(key, e.to_string()))?
    {
        return ed25519_from_pem(pem.expose())
            .map_err(|_| Error::invalid(key, "is not an Ed25519 private key in PKCS#8 PEM"));
    }
    if path.exists() {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| Error::internal("reading a signing key in the data dir", e))?;
        return ed25519_from_pem(&pem);
    }
    let key_name = key;
    let generated = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = generated
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| Error::internal("encoding a signing key", e))?;
    crate::files::write_private(path, &pem)?;
    tracing::info!(%key_name, file = %path.display(), "generated a new signing key in the data dir");
    Ok(generated)
}

/// PrivateKeyInfo { version 0, algorithm 1.3.101.112, OCTET STRING { 32 bytes } }.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// RFC 7638 JWK thumbprint: the key id is stable across restarts and
/// different for every key.
fn thumbprint(public: &[u8; 32]) -> String {
    use sha2::Digest;
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public);
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(canonical))
}

/// A fixed set of public keys: identity verifying its own tokens, and tests.
pub struct StaticKeySource(pub Vec<Jwk>);

impl KeySource for StaticKeySource {
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<Vec<Jwk>, Error>> + Send + '_>> {
        let keys = self.0.clone();
        Box::pin(async move { Ok(keys) })
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;
    use crate::auth::Verifier;

    fn claims(exp_offset: i64) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            iss: "sharedcare-identity".into(),
            sub: "principal-1".into(),
            aud: "sharedcare".into(),
            exp: now + exp_offset,
            iat: now,
            jti: "t1".into(),
            kind: "staff".into(),
            org: "A81001".into(),
            role: "R8000".into(),
            scope: "records.read".into(),
            pou: "direct_care".into(),
            pous: vec!["direct_care".into()],
            caps: vec![],
            pat: String::new(),
            name: String::new(),
            org_name: String::new(),
            act: None,
        }
    }

    fn verifier(keys: Vec<Jwk>) -> Verifier {
        Verifier::new(
            Arc::new(StaticKeySource(keys)),
            "sharedcare-identity",
            "sharedcare",
            Duration::ZERO,
        )
    }

    #[tokio::test]
    async fn a_signed_token_verifies_and_a_foreign_one_does_not() {
        let ours = SigningKey::generate();
        let theirs = SigningKey::generate();
        let v = verifier(vec![ours.jwk()]);
        let p = v
            .verify(&ours.sign(&claims(300)).expect("sign"))
            .await
            .expect("valid");
        assert_eq!(p.organisation, "A81001");
        let err = v
            .verify(&theirs.sign(&claims(300)).expect("sign"))
            .await
            .expect_err("foreign key");
        assert!(err.message.contains("unknown key"), "{}", err.message);
    }

    #[tokio::test]
    async fn expired_tokens_are_refused() {
        let key = SigningKey::generate();
        let v = verifier(vec![key.jwk()]);
        let err = v
            .verify(&key.sign(&claims(-3600)).expect("sign"))
            .await
            .expect_err("expired");
        assert!(err.message.contains("expired"));
    }

    /// A key source whose keys can change, counting fetches.
    struct Rotating {
        keys: std::sync::Mutex<Vec<Jwk>>,
        fetches: std::sync::atomic::AtomicUsize,
    }

    impl KeySource for Rotating {
        fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<Vec<Jwk>, Error>> + Send + '_>> {
            self.fetches
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let keys = self.keys.lock().expect("lock").clone();
            Box::pin(async move { Ok(keys) })
        }
    }

    /// A verifier over a key source that starts with `keys`.
    fn rotating(keys: Vec<Jwk>) -> (Arc<Rotating>, Verifier) {
        let source = Arc::new(Rotating {
            keys: std::sync::Mutex::new(keys),
            fetches: Default::default(),
        });
        let verifier = Verifier::new(
            source.clone(),
            "sharedcare-identity",
            "sharedcare",
            Duration::ZERO,
        );
        (source, verifier)
    }

    #[tokio::test]
    async fn keys_are_cached_and_refetched_for_an_unknown_key_id() {
        let first = SigningKey::generate();
        let (source, v) = rotating(vec![first.jwk()]);
        let fetches = || source.fetches.load(std::sync::atomic::Ordering::SeqCst);
        for _ in 0..3 {
            v.verify(&first.sign(&claims(300)).expect("sign"))
                .await
                .expect("valid");
        }
        assert_eq!(fetches(), 1, "cached after the first fetch");

        // identity rotates: a token with the new key id triggers one refetch.
        let second = SigningKey::generate();
        source.keys.lock().expect("lock").push(second.jwk());
        v.verify(&second.sign(&claims(300)).expect("sign"))
            .await
            .expect("valid");
        assert_eq!(fetches(), 2);
        v.verify(&first.sign(&claims(300)).expect("sign"))
            .await
            .expect("still valid");
        assert_eq!(fetches(), 2);
    }

    #[tokio::test]
    async fn a_verified_token_is_remembered_only_as_its_exact_bytes_until_it_expires() {
        let key = SigningKey::generate();
        let v = verifier(vec![key.jwk()]);
        let token = key.sign(&claims(300)).expect("sign");
        v.verify(&token).await.expect("valid");
        let now = chrono::Utc::now().timestamp();
        assert!(v.remembered(&token, now).is_some());
        assert!(v.remembered(&token, now + 301).is_none(), "not past exp");

        // The same claims under a broken signature are checked, not remembered.
        let (signed, signature) = token.rsplit_once('.').expect("three parts");
        let flipped = if signature.starts_with('A') { "B" } else { "A" };
        let forged = format!("{signed}.{flipped}{}", &signature[1..]);
        let err = v.verify(&forged).await.expect_err("forged");
        assert!(err.message.contains("signature"), "{}", err.message);
    }

    #[tokio::test]
    async fn a_key_set_change_forgets_the_tokens_it_verified() {
        let first = SigningKey::generate();
        let (source, v) = rotating(vec![first.jwk()]);
        let old = first.sign(&claims(300)).expect("sign");
        v.verify(&old).await.expect("valid");

        // identity drops the first key (say, compromised) for a second.
        let second = SigningKey::generate();
        *source.keys.lock().expect("lock") = vec![second.jwk()];
        v.verify(&second.sign(&claims(300)).expect("sign"))
            .await
            .expect("valid");
        let err = v.verify(&old).await.expect_err("its key is gone");
        assert!(err.message.contains("unknown key"), "{}", err.message);
    }

    #[tokio::test]
    async fn a_service_accepts_the_platform_audience_and_its_own_only() {
        let key = SigningKey::generate();
        let v = verifier(vec![key.jwk()]);
        v.bind_service("audit");
        let with_aud = |aud: &str| {
            key.sign(&Claims {
                aud: aud.into(),
                ..claims(300)
            })
            .expect("sign")
        };
        for aud in ["sharedcare", "sharedcare/audit"] {
            v.verify(&with_aud(aud)).await.expect("accepted");
        }
        for aud in ["sharedcare/records", "elsewhere", "sharedcare/"] {
            let err = v.verify(&with_aud(aud)).await.expect_err("refused");
            assert_eq!(err.code, crate::error::Code::Unauthenticated);
            assert!(
                err.message.contains(&format!("audience `{aud}`")),
                "{}",
                err.message
            );
        }
        // Introspection judges any audience of the platform.
        v.verify_with_expiry(&with_aud("sharedcare/records"))
            .await
            .expect("the platform's");
    }

    /// A revocation list that can change, or fail.
    #[derive(Default)]
    struct Revoked {
        ids: std::sync::Mutex<Option<Vec<String>>>,
    }

    impl crate::auth::RevocationSource for Revoked {
        fn revoked(&self) -> Pin<Box<dyn Future<Output = Result<Vec<String>, Error>> + Send + '_>> {
            let ids = self.ids.lock().expect("lock").clone();
            Box::pin(async move { ids.ok_or_else(|| Error::unavailable("identity is down")) })
        }
    }

    #[tokio::test]
    async fn a_revoked_principal_is_refused_and_a_list_too_old_refuses_everyone() {
        let key = SigningKey::generate();
        let source = Arc::new(Revoked::default());
        // Refreshed on every check.
        let v = verifier(vec![key.jwk()]).with_revocations(
            source.clone(),
            Duration::ZERO,
            Duration::from_secs(3600),
        );
        let token = key.sign(&claims(300)).expect("sign");
        let err = v.verify(&token).await.expect_err("never fetched");
        assert_eq!(err.code, crate::error::Code::Unavailable);
        assert!(err.message.contains("revocation list"), "{}", err.message);

        *source.ids.lock().expect("lock") = Some(vec!["someone-else".into()]);
        v.verify(&token).await.expect("not revoked");
        *source.ids.lock().expect("lock") = Some(vec!["principal-1".into()]);
        let err = v.verify(&token).await.expect_err("revoked");
        assert_eq!(err.code, crate::error::Code::Unauthenticated);
        assert!(err.message.contains("revoked"), "{}", err.message);
        let err = v.verify_with_expiry(&token).await.expect_err("revoked");
        assert_eq!(err.code, crate::error::Code::Unauthenticated);

        // An acting application's revocation ends the token too.
        let acting = key
            .sign(&Claims {
                sub: "staff-2".into(),
                act: Some(crate::auth::ActClaim {
                    sub: "principal-1".into(),
                    name: String::new(),
                }),
                ..claims(300)
            })
            .expect("sign");
        assert!(v.verify(&acting).await.is_err());

        // identity unreachable for longer than the list may be old: fail
        // closed.
        let v = verifier(vec![key.jwk()]).with_revocations(
            source.clone(),
            Duration::ZERO,
            Duration::from_millis(20),
        );
        let other = key
            .sign(&Claims {
                sub: "staff-3".into(),
                ..claims(300)
            })
            .expect("sign");
        *source.ids.lock().expect("lock") = Some(vec![]);
        v.verify(&other).await.expect("fresh");
        *source.ids.lock().expect("lock") = None;
        tokio::time::sleep(Duration::from_millis(30)).await;
        let err = v.verify(&other).await.expect_err("list too old");
        assert_eq!(err.code, crate::error::Code::Unavailable);
        assert!(err.message.contains("revocation"), "{}", err.message);
        *source.ids.lock().expect("lock") = Some(vec![]);
        v.verify(&other).await.expect("back");
    }

    #[test]
    fn the_pkcs8_der_we_build_is_the_same_key() {
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let mut der = PKCS8_ED25519_PREFIX.to_vec();
        der.extend_from_slice(&key.to_bytes());
        let read = ed25519_dalek::SigningKey::from_pkcs8_der(&der).expect("a PKCS#8 v1 key");
        assert_eq!(read.to_bytes(), key.to_bytes());
    }

    #[test]
    fn pem_round_trip_keeps_the_key_id() {
        let key = SigningKey::generate();
        let again = SigningKey::from_pkcs8_pem(&key.to_pkcs8_pem().expect("pem")).expect("read");
        assert_eq!(key.kid(), again.kid());
    }
}
