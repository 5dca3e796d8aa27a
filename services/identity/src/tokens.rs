//! Issuing access tokens: EdDSA JWTs with key id, subject, organisation,
//! role, scopes, purposes of use, capabilities, the bound patient, audience
//! and expiry. Also identity's own service token, for calling consent and
//! audit.

use std::{collections::BTreeSet, sync::Arc};

use sharedcare_kit::{
    Error,
    access::Capability,
    auth::{Claims, kind_to_str, purpose_to_str},
    client::ServiceTokens,
    keys::SigningKey,
};
use sharedcare_proto::{
    common::v1::{PrincipalKind, Purpose},
    identity::v1::Jwk,
};
use tokio::sync::Mutex;

use crate::domain::Principal;

pub struct TokenIssuer {
    keys: std::sync::RwLock<KeySet>,
    /// When `keys` was last read from the store (other replicas rotate too).
    loaded: std::sync::Mutex<Option<std::time::Instant>>,
    issuer: String,
    audience: String,
    ttl_secs: i64,
    limit: Option<IssueLimit>,
}

/// IssueToken calls per client: a burst of a minute's worth, then evenly.
/// Keyed by the client id as asked (before the secret is checked), so
/// guessing a client's secret is slowed as much as over-asking.
struct IssueLimit {
    limiter: governor::DefaultKeyedRateLimiter<String>,
    per_minute: u32,
    calls: std::sync::atomic::AtomicU64,
}

/// Calls between forgetting clients whose limit has refilled, so ids made
/// up by a caller do not pile up.
const FORGET_EVERY: u64 = 4096;

/// The signing keys: the configured (or kept) one, then those made by
/// rotations, oldest first. The newest signs; each older one is published
/// until every token it signed has expired.
struct KeySet {
    base: Arc<SigningKey>,
    rotated: Vec<(Arc<SigningKey>, chrono::DateTime<chrono::Utc>)>,
}

/// Beyond the token lifetime, how long a retired key stays published: the
/// clock leeway verifiers allow (30 s), and some.
const RETIRED_KEY_GRACE_SECS: i64 = 60;

/// How long a replica trusts the keys it read from the store before reading
/// them again (another replica may have rotated).
const RELOAD_KEYS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl KeySet {
    fn current(&self) -> Arc<SigningKey> {
        self.rotated
            .last()
            .map(|(key, _)| key.clone())
            .unwrap_or_else(|| self.base.clone())
    }

    /// The keys whose tokens may be live at `now`: each key with when it
    /// stopped signing (None: it still signs).
    fn published(&self, now: chrono::DateTime<chrono::Utc>, ttl_secs: i64) -> Vec<Arc<SigningKey>> {
        let mut keys = vec![(self.base.clone(), None)];
        for (key, created_at) in &self.rotated {
            if let Some(last) = keys.last_mut() {
                last.1 = Some(*created_at);
            }
            keys.push((key.clone(), None));
        }
        keys.into_iter()
            .filter(|(_, retired)| {
                retired.is_none_or(|at| {
                    now < at + chrono::Duration::seconds(ttl_secs + RETIRED_KEY_GRACE_SECS)
                })
            })
            .map(|(key, _)| key)
            .collect()
    }
}

/// A signed token and when it stops being valid.
pub struct IssuedToken {
    pub token: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

impl TokenIssuer {
    /// Limits IssueToken to `per_minute` calls per client (none below 1).
    pub fn with_issue_limit(mut self, per_minute: u32) -> Self {
        self.limit = std::num::NonZeroU32::new(per_minute).map(|n| IssueLimit {
            limiter: governor::RateLimiter::keyed(governor::Quota::per_minute(n)),
            per_minute,
            calls: std::sync::atomic::AtomicU64::new(0),
        });
        self
    }

    /// Whether `client_id` may ask for a token now: RESOURCE_EXHAUSTED past
    /// its limit.
    pub fn admit(&self, client_id: &str) -> Result<(), Error> {
        let Some(limit) = &self.limit else {
            return Ok(());
        };
        let calls = limit
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if calls % FORGET_EVERY == FORGET_EVERY - 1 {
            limit.limiter.retain_recent();
        }
        limit.limiter.check_key(&client_id.to_owned()).map_err(|_| {
            Error::resource_exhausted(format!(
                "IssueToken: this client asked for more than {} tokens a minute; a token \
                     lasts until it expires, so reuse it",
                limit.per_minute
            ))
            .with_reason("RATE_LIMITED")
        })
    }

    pub fn new(key: SigningKey, issuer: &str, audience: &str, ttl_secs: i64) -> Self {
        TokenIssuer {
            keys: std::sync::RwLock::new(KeySet {
                base: Arc::new(key),
                rotated: Vec::new(),
            }),
            loaded: std::sync::Mutex::new(None),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl_secs,
            limit: None,
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    /// The public keys that verify our live tokens: the signing key and the
    /// retired ones until their last token has expired.
    pub fn jwks(&self) -> Vec<Jwk> {
        self.jwks_at(chrono::Utc::now())
    }

    fn jwks_at(&self, now: chrono::DateTime<chrono::Utc>) -> Vec<Jwk> {
        match self.keys.read() {
            Ok(keys) => keys
                .published(now, self.ttl_secs)
                .iter()
                .map(|k| k.jwk())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The key id new tokens are signed with.
    pub fn current_kid(&self) -> Result<String, Error> {
        Ok(self.current()?.kid().to_owned())
    }

    fn current(&self) -> Result<Arc<SigningKey>, Error> {
        self.keys
            .read()
            .map(|keys| keys.current())
            .map_err(|_| Error::internal("reading the signing keys", "lock poisoned"))
    }

    /// Reads the rotated keys from the store, if not read in the last few
    /// seconds (or ever): this replica then signs with the newest, and
    /// publishes every key another replica rotated in.
    pub async fn reload(&self, store: &dyn crate::store::IdentityStore) -> Result<(), Error> {
        let due = self
            .loaded
            .lock()
            .map(|loaded| loaded.is_none_or(|t| t.elapsed() >= RELOAD_KEYS_EVERY))
            .unwrap_or(true);
        if due {
            self.load(store).await?;
        }
        Ok(())
    }

    /// Reads the rotated keys from the store now.
    pub async fn load(&self, store: &dyn crate::store::IdentityStore) -> Result<(), Error> {
        let began = std::time::Instant::now();
        let stored = store.signing_keys().await?;
        let mut rotated = Vec::with_capacity(stored.len());
        for key in stored {
            let signing = SigningKey::from_pkcs8_pem(&key.pkcs8_pem)
                .map_err(|e| e.context("reading a rotated signing key"))?;
            rotated.push((Arc::new(signing), key.created_at));
        }
        rotated.sort_by_key(|(_, at)| *at);
        let mut keys = self
            .keys
            .write()
            .map_err(|_| Error::internal("loading the signing keys", "lock poisoned"))?;
        keys.rotated = rotated;
        if let Ok(mut loaded) = self.loaded.lock() {
            *loaded = Some(began);
        }
        Ok(())
    }

    /// Makes a new signing key, keeps it in the store, and signs with it
    /// from now on. The new key id, and when the keys before it stop being
    /// published.
    pub async fn rotate(
        &self,
        store: &dyn crate::store::IdentityStore,
    ) -> Result<(String, chrono::DateTime<chrono::Utc>), Error> {
        let key = SigningKey::generate();
        let now = chrono::Utc::now();
        store
            .add_signing_key(crate::store::StoredSigningKey {
                kid: key.kid().to_owned(),
                pkcs8_pem: key.to_pkcs8_pem()?,
                created_at: now,
            })
            .await?;
        // Everything stored, ours included, in creation order.
        self.load(store).await?;
        let kid = key.kid().to_owned();
        tracing::info!(kid, "token signing key rotated");
        Ok((
            kid,
            now + chrono::Duration::seconds(self.ttl_secs + RETIRED_KEY_GRACE_SECS),
        ))
    }

    /// A token for `principal` with these scopes, default purpose (`None`:
    /// the principal has none) and capabilities. It carries all the
    /// principal's permitted purposes, and its patient for a patient; its
    /// display name and its organisation's name for access reports (not a
    /// patient's name: tokens travel through proxies and logs).
    pub fn issue(
        &self,
        principal: &Principal,
        organisation_name: &str,
        scopes: &[String],
        purpose: Option<Purpose>,
        capabilities: &BTreeSet<Capability>,
    ) -> Result<IssuedToken, Error> {
        self.issue_with(
            principal,
            organisation_name,
            scopes,
            purpose,
            capabilities,
            Extras::default(),
        )
    }

    /// As `issue`, with an audience, an acting application, and a cap on
    /// the expiry.
    pub fn issue_with(
        &self,
        principal: &Principal,
        organisation_name: &str,
        scopes: &[String],
        purpose: Option<Purpose>,
        capabilities: &BTreeSet<Capability>,
        extras: Extras,
    ) -> Result<IssuedToken, Error> {
        let now = chrono::Utc::now();
        let mut expires_at = now + chrono::Duration::seconds(self.ttl_secs);
        if let Some(cap) = extras.expires_by
            && cap < expires_at
        {
            expires_at = cap;
        }
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: principal.id.clone(),
            aud: match extras.service {
                Some(service) => {
                    sharedcare_kit::auth::Verifier::service_audience(&self.audience, service)
                }
                None => self.audience.clone(),
            },
            exp: expires_at.timestamp(),
            iat: now.timestamp(),
            jti: uuid::Uuid::new_v4().to_string(),
            kind: kind_to_str(principal.kind).to_owned(),
            org: principal
                .organisation
                .as_ref()
                .map(|o| o.as_str().to_owned())
                .unwrap_or_default(),
            role: principal.role.clone(),
            scope: scopes.join(" "),
            pou: purpose.map(purpose_to_str).unwrap_or_default().to_owned(),
            pous: principal
                .purposes
                .iter()
                .map(|p| purpose_to_str(*p).to_owned())
                .collect(),
            caps: capabilities.iter().map(|c| c.as_str().to_owned()).collect(),
            pat: principal.patient_id.clone().unwrap_or_default(),
            name: if principal.kind == PrincipalKind::Patient {
                String::new()
            } else {
                principal.display_name.clone()
            },
            org_name: organisation_name.to_owned(),
            act: extras.acting_application,
        };
        Ok(IssuedToken {
            token: self.current()?.sign(&claims)?,
            expires_at,
        })
    }
}

/// What a token may carry besides its principal's claims.
#[derive(Default)]
pub struct Extras {
    /// The one service it is for (None: the platform-wide audience).
    pub service: Option<&'static str>,
    /// The application acting for a staff member.
    pub acting_application: Option<sharedcare_kit::auth::ActClaim>,
    /// It expires no later than this.
    pub expires_by: Option<chrono::DateTime<chrono::Utc>>,
}

/// The services a token may be issued for alone.
pub const SERVICE_AUDIENCES: &[&str] = &["identity", "consent", "records", "audit"];

/// identity's keys as its own verifier reads them: re-read from the store
/// when a token names a key id this replica has not seen.
pub struct IssuerKeys {
    pub issuer: Arc<TokenIssuer>,
    pub store: Arc<dyn crate::store::IdentityStore>,
}

impl sharedcare_kit::auth::KeySource for IssuerKeys {
    fn fetch(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<Jwk>, Error>> + Send + '_>>
    {
        Box::pin(async move {
            self.issuer.load(self.store.as_ref()).await?;
            Ok(self.issuer.jwks())
        })
    }
}

/// identity's revocations as its own verifier reads them: straight from
/// the store, on every request.
pub struct StoreRevocations {
    pub store: Arc<dyn crate::store::IdentityStore>,
    pub ttl_secs: i64,
}

impl StoreRevocations {
    /// The principals revoked recently enough that a token of theirs may be
    /// live: issued before the revocation, so within the token lifetime
    /// (and the leeway) of it.
    pub async fn live(&self) -> Result<Vec<String>, Error> {
        let since =
            chrono::Utc::now() - chrono::Duration::seconds(self.ttl_secs + RETIRED_KEY_GRACE_SECS);
        Ok(self
            .store
            .revocations_since(since)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }
}

impl sharedcare_kit::auth::RevocationSource for StoreRevocations {
    fn revoked(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<String>, Error>> + Send + '_>>
    {
        Box::pin(self.live())
    }
}

/// The scopes identity's own token carries: asking consent, writing audit.
// `consent.registrations` is identity's alone (not in KNOWN_SCOPES, so no
// principal can be given it): only the patient index says where a patient
// is registered with a GP.
const SELF_SCOPES: &[&str] = &["consent.evaluate", "audit.append", "consent.registrations"];

/// identity's own service token, signed by itself (identity has no client
/// credentials to exchange): subject "identity", no organisation, no
/// purposes (it states its end user's purpose in each call). Cached until a
/// minute before it expires.
pub struct SelfTokens {
    issuer: Arc<TokenIssuer>,
    principal: Principal,
    cached: Mutex<Option<IssuedToken>>,
}

impl SelfTokens {
    pub fn new(issuer: Arc<TokenIssuer>) -> Self {
        let principal = Principal {
            id: crate::SERVICE_NAME.to_owned(),
            kind: PrincipalKind::Service,
            display_name: "identity".to_owned(),
            organisation: None,
            role: String::new(),
            scopes: SELF_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
            purposes: vec![],
            patient_id: None,
            client_id: String::new(),
            secret_hash: vec![],
            created_at: chrono::Utc::now(),
        };
        SelfTokens {
            issuer,
            principal,
            cached: Mutex::new(None),
        }
    }

    /// A token valid for at least another minute.
    pub async fn token(&self) -> Result<String, Error> {
        let mut cached = self.cached.lock().await;
        if let Some(issued) = cached.as_ref()
            && issued.expires_at - chrono::Duration::seconds(60) > chrono::Utc::now()
        {
            return Ok(issued.token.clone());
        }
        let issued = self.issuer.issue(
            &self.principal,
            "",
            &self.principal.scopes,
            None,
            &BTreeSet::new(),
        )?;
        let token = issued.token.clone();
        *cached = Some(issued);
        Ok(token)
    }
}

impl ServiceTokens for SelfTokens {
    fn token(&self) -> sharedcare_kit::peers::BoxFuture<'_, String> {
        Box::pin(SelfTokens::token(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kids(keys: &[Arc<SigningKey>]) -> Vec<String> {
        keys.iter().map(|k| k.kid().to_owned()).collect()
    }

    #[test]
    fn a_retired_key_is_published_until_its_last_token_has_expired() {
        let t0 = chrono::Utc::now();
        let ttl = 900;
        let (base, second, third) = (
            Arc::new(SigningKey::generate()),
            Arc::new(SigningKey::generate()),
            Arc::new(SigningKey::generate()),
        );
        let mut set = KeySet {
            base: base.clone(),
            rotated: vec![],
        };
        assert_eq!(
            kids(&set.published(t0, ttl)),
            kids(std::slice::from_ref(&base))
        );
        set.rotated.push((second.clone(), t0));
        assert_eq!(set.current().kid(), second.kid());
        let seconds = |s| t0 + chrono::Duration::seconds(s);
        // A token the base key signed just before t0 lives until t0 + ttl.
        assert_eq!(
            kids(&set.published(seconds(ttl), ttl)),
            kids(&[base.clone(), second.clone()])
        );
        assert_eq!(
            kids(&set.published(seconds(ttl + RETIRED_KEY_GRACE_SECS), ttl)),
            kids(std::slice::from_ref(&second))
        );
        // The second is retired by a third, from then on.
        set.rotated.push((third.clone(), seconds(100)));
        assert_eq!(
            kids(&set.published(seconds(ttl + RETIRED_KEY_GRACE_SECS), ttl)),
            kids(&[second, third.clone()])
        );
        assert_eq!(
            kids(&set.published(seconds(100 + ttl + RETIRED_KEY_GRACE_SECS), ttl)),
            kids(&[third])
        );
    }
}
