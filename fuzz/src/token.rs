//! Access tokens: the kit's verifier (header, key, signature, claims,
//! audience) and the reading of the `authorization` header.
//!
//! The first byte picks what the rest is:
//! - 0: a bearer token, as a caller would send it;
//! - 1: edits to [`valid_token`]; no edited token verifies;
//! - 2: a claims payload, signed with the test key (what a verified token
//!   can hold: `Principal::from_claims` on any JSON);
//! - 3: a JOSE header, signed with the test key over valid claims;
//! - 4: an `authorization` header value.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{
    Signer,
    pkcs8::{EncodePrivateKey, spki::der::pem::LineEnding},
};
use sharedcare_kit::{
    auth::{Claims, Principal, Verifier, bearer_token},
    keys::{SigningKey, StaticKeySource},
};

use crate::input::{Input, mutate};

const ISSUER: &str = "sharedcare-identity";
const AUDIENCE: &str = "sharedcare";
/// The service the verifier admits to ("sharedcare/records" tokens too).
const SERVICE: &str = "records";

/// The fuzzing key's seed: fixed, so seeds signed with it stay valid. It
/// signs nothing outside these targets.
const SEED: [u8; 32] = *b"sharedcare fuzz key, tests only!";

struct Fixture {
    runtime: tokio::runtime::Runtime,
    verifier: Verifier,
    dalek: ed25519_dalek::SigningKey,
    kid: String,
    valid: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dalek = ed25519_dalek::SigningKey::from_bytes(&SEED);
        let pem = dalek
            .to_pkcs8_pem(LineEnding::LF)
            .expect("an Ed25519 key encodes as PKCS#8");
        let key = SigningKey::from_pkcs8_pem(&pem).expect("the PEM just written reads back");
        let verifier = Verifier::new(
            Arc::new(StaticKeySource(vec![key.jwk()])),
            ISSUER,
            AUDIENCE,
            Duration::ZERO,
        );
        verifier.bind_service(SERVICE);
        let valid = key.sign(&valid_claims()).expect("signing claims");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime");
        Fixture {
            runtime,
            verifier,
            dalek,
            kid: key.kid().to_owned(),
            valid,
        }
    })
}

/// Claims of a member of staff, valid until 2100.
pub fn valid_claims() -> Claims {
    Claims {
        iss: ISSUER.into(),
        sub: "staff-1".into(),
        aud: AUDIENCE.into(),
        exp: 4_102_444_800,
        iat: 1_700_000_000,
        jti: "jti-1".into(),
        kind: "staff".into(),
        org: "A12345".into(),
        role: "R8000".into(),
        scope: "records:read records:write".into(),
        pou: "direct_care".into(),
        pous: vec!["direct_care".into()],
        caps: vec![],
        pat: String::new(),
        name: "Dr Fuzz".into(),
        org_name: "Fuzz Practice".into(),
        act: None,
    }
}

/// A token the verifier accepts, the same bytes in every run.
pub fn valid_token() -> &'static str {
    &fixture().valid
}

/// `header.payload.signature`, signed with the fuzzing key.
pub fn sign_raw(header: &[u8], payload: &[u8]) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = fixture().dalek.sign(message.as_bytes());
    format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

/// The header identity writes: EdDSA, the fuzzing key's id.
pub fn header_json() -> Vec<u8> {
    format!(r#"{{"typ":"JWT","alg":"EdDSA","kid":"{}"}}"#, fixture().kid).into_bytes()
}

/// Both ways a token is checked: by a service, and by introspection.
fn verify(token: &str) -> Option<Principal> {
    let f = fixture();
    let (served, introspected) = f.runtime.block_on(async {
        (
            f.verifier.verify(token).await,
            f.verifier.verify_with_expiry(token).await,
        )
    });
    for refused in [served.as_ref().err(), introspected.as_ref().err()]
        .into_iter()
        .flatten()
    {
        assert_eq!(
            refused.code,
            sharedcare_kit::error::Code::Unauthenticated,
            "{refused:?}"
        );
    }
    if let (Ok(served), Ok((introspected, _))) = (&served, &introspected) {
        assert_eq!(served, introspected);
    }
    served.ok()
}

/// Whether the verifier admits `token` (and introspection agrees).
pub fn verifies(token: &str) -> bool {
    verify(token).is_some()
}

/// A token that verified is exactly what the key signed: three canonical
/// base64url parts whose signature checks strictly.
fn assert_signed_as_sent(token: &str) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    for part in &parts {
        let decoded = URL_SAFE_NO_PAD.decode(part).expect("base64url");
        assert_eq!(&URL_SAFE_NO_PAD.encode(decoded), part, "non-canonical part");
    }
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("base64url");
    let signature = ed25519_dalek::Signature::from_slice(&signature).expect("64 bytes");
    let message = format!("{}.{}", parts[0], parts[1]);
    fixture()
        .dalek
        .verifying_key()
        .verify_strict(message.as_bytes(), &signature)
        .expect("the accepted signature verifies strictly");
}

pub fn token(data: &[u8]) {
    let mut input = Input::new(data);
    match input.u8() % 5 {
        0 => {
            if let Ok(token) = std::str::from_utf8(input.rest())
                && verify(token).is_some()
            {
                assert_signed_as_sent(token);
            }
        }
        1 => {
            let valid = valid_token();
            let edited = mutate(valid.as_bytes(), &mut input);
            if let Ok(edited) = std::str::from_utf8(&edited)
                && edited != valid
            {
                assert!(
                    verify(edited).is_none(),
                    "an edited token verified: {edited}"
                );
            }
        }
        2 => {
            let payload = input.rest();
            let Some(principal) = verify(&sign_raw(&header_json(), payload)) else {
                return;
            };
            let claims: Claims = serde_json::from_slice(payload).expect("verified claims read");
            assert_eq!(Principal::from_claims(&claims).ok(), Some(principal));
        }
        3 => {
            let header = input.rest();
            let claims = serde_json::to_vec(&valid_claims()).expect("claims serialise");
            if verify(&sign_raw(header, &claims)).is_some() {
                let header: serde_json::Value =
                    serde_json::from_slice(header).expect("an accepted header is JSON");
                assert_eq!(header["alg"], "EdDSA");
                assert_eq!(header["kid"], fixture().kid.as_str());
            }
        }
        _ => {
            let Ok(value) = http::HeaderValue::from_bytes(input.rest()) else {
                return;
            };
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::AUTHORIZATION, value.clone());
            if let Ok(token) = bearer_token(&headers) {
                let text = value.to_str().expect("a bearer header is text");
                assert!(!token.is_empty());
                assert_eq!(token.trim(), token);
                assert!(text.ends_with(&token) || text.trim_end().ends_with(&token));
                assert!(text[..6.min(text.len())].eq_ignore_ascii_case("bearer"));
            }
        }
    }
}
