//! Authentication: EdDSA JWTs issued by identity, verified by a tower layer
//! before a request is even decoded, against identity's JWKS (cached,
//! refreshed when a token names an unknown key id).

use std::{
    collections::{BTreeSet, HashMap},
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use sharedcare_proto::{
    common::v1::{Actor, PrincipalKind, Purpose},
    identity::v1::{
        GetJwksRequest, Jwk, ListRevocationsRequest, identity_service_client::IdentityServiceClient,
    },
};
use tokio::sync::{Mutex, RwLock};
use tonic::transport::Channel;

use crate::{
    Error,
    access::{AccessTable, Capability},
};

/// The claims of a sharedcare access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    /// "staff", "application", "service", "admin" or "patient".
    pub kind: String,
    /// ODS code of the organisation the principal acts for.
    pub org: String,
    /// Role code at that organisation.
    pub role: String,
    /// Space-separated scopes.
    pub scope: String,
    /// Default purpose of use, e.g. "direct_care"; empty for principals
    /// with no purposes (services, admin).
    pub pou: String,
    /// Every purpose the principal may name.
    #[serde(default)]
    pub pous: Vec<String>,
    /// What the principal's role allows (see `access::Capability`).
    #[serde(default)]
    pub caps: Vec<String>,
    /// For a patient principal: the patient the token is bound to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pat: String,
    /// The principal's display name, for access reports.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The name of the organisation in `org`, for access reports.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub org_name: String,
    /// RFC 8693 `act`: the application acting for the subject, a member of
    /// staff (IssueToken's `on_behalf_of_token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<ActClaim>,
}

/// The acting party of a token (RFC 8693 §4.1): an application.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ActClaim {
    pub sub: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// An application acting for the staff member a token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActingApplication {
    pub id: String,
    pub display_name: String,
}

/// The verified caller of a request, placed in its extensions by the auth layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub id: String,
    pub kind: PrincipalKind,
    /// Empty for patients.
    pub organisation: String,
    pub role: String,
    pub scopes: BTreeSet<String>,
    /// The token's default purpose of use, if it has any purpose.
    pub purpose: Option<Purpose>,
    /// Every purpose the principal may name.
    pub purposes: BTreeSet<Purpose>,
    pub capabilities: BTreeSet<Capability>,
    /// For a patient principal: the patient the token is bound to.
    pub patient: Option<String>,
    /// Display names as the token gives them (informational, for reports).
    pub display_name: String,
    pub organisation_name: String,
    /// The application acting for this member of staff, if one is.
    pub acting_application: Option<ActingApplication>,
}

impl Principal {
    pub fn from_claims(claims: &Claims) -> Result<Self, Error> {
        let unknown_purpose = || Error::unauthenticated("token names an unknown purpose of use");
        let purposes = claims
            .pous
            .iter()
            .map(|p| purpose_from_str(p).ok_or_else(unknown_purpose))
            .collect::<Result<BTreeSet<_>, _>>()?;
        let purpose = match claims.pou.as_str() {
            "" => None,
            p => Some(purpose_from_str(p).ok_or_else(unknown_purpose)?),
        };
        if purpose.is_some_and(|p| !purposes.contains(&p)) {
            return Err(Error::unauthenticated(
                "token's purpose of use is not among its permitted purposes",
            ));
        }
        let kind = kind_from_str(&claims.kind)
            .ok_or_else(|| Error::unauthenticated("token names an unknown principal kind"))?;
        let patient = (!claims.pat.is_empty()).then(|| claims.pat.clone());
        if (kind == PrincipalKind::Patient) != patient.is_some() {
            return Err(Error::unauthenticated(
                "a patient token must be bound to one patient, and only a patient token",
            ));
        }
        let acting_application = match &claims.act {
            None => None,
            Some(act) if kind == PrincipalKind::Staff && !act.sub.is_empty() => {
                Some(ActingApplication {
                    id: act.sub.clone(),
                    display_name: act.name.clone(),
                })
            }
            Some(_) => {
                return Err(Error::unauthenticated(
                    "only a staff token may name an acting application",
                ));
            }
        };
        Ok(Principal {
            id: claims.sub.clone(),
            kind,
            organisation: claims.org.clone(),
            role: claims.role.clone(),
            scopes: claims.scope.split_whitespace().map(str::to_owned).collect(),
            purpose,
            purposes,
            capabilities: claims
                .caps
                .iter()
                .map(|c| {
                    Capability::parse(c)
                        .ok_or_else(|| Error::unauthenticated("token names an unknown capability"))
                })
                .collect::<Result<_, _>>()?,
            patient,
            display_name: claims.name.clone(),
            organisation_name: claims.org_name.clone(),
            acting_application,
        })
    }

    /// The principals whose revocation ends this token: its subject, and
    /// the application acting for it.
    pub fn principal_ids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.id.as_str())
            .chain(self.acting_application.as_ref().map(|a| a.id.as_str()))
    }

    /// The purpose a request acts for: the one it names, or the token's
    /// default when it names none. PERMISSION_DENIED naming the purpose when
    /// the principal may not use it; INVALID_ARGUMENT for an unknown value.
    pub fn purpose_for(&self, field: &str, requested: i32) -> Result<Purpose, Error> {
        let purpose = match Purpose::try_from(requested) {
            Ok(Purpose::Unspecified) => self.purpose.ok_or_else(|| {
                Error::invalid(field, "is required: this token has no purpose of use")
            })?,
            Ok(p) => p,
            Err(_) => return Err(Error::invalid(field, format!("unknown value {requested}"))),
        };
        if self.purposes.contains(&purpose) {
            Ok(purpose)
        } else {
            Err(Error::permission_denied(format!(
                "purpose `{}` is not permitted to this principal (permitted: {})",
                purpose_to_str(purpose),
                if self.purposes.is_empty() {
                    "none".to_owned()
                } else {
                    self.purposes
                        .iter()
                        .map(|p| purpose_to_str(*p))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ))
            .with_reason("PURPOSE_NOT_PERMITTED"))
        }
    }

    pub fn has(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }

    /// PERMISSION_DENIED naming the scope when the token lacks it.
    pub fn require_scope(&self, scope: &str) -> Result<(), Error> {
        if self.scopes.contains(scope) {
            Ok(())
        } else {
            Err(
                Error::permission_denied(format!("token lacks the scope `{scope}`"))
                    .with_reason("MISSING_SCOPE"),
            )
        }
    }

    /// The actor to report to consent and audit.
    pub fn actor(&self) -> Actor {
        Actor {
            principal_id: self.id.clone(),
            kind: self.kind as i32,
            organisation_ods_code: self.organisation.clone(),
            role: self.role.clone(),
            patient_id: self.patient.clone().unwrap_or_default(),
            display_name: self.display_name.clone(),
            organisation_name: self.organisation_name.clone(),
            capabilities: self
                .capabilities
                .iter()
                .map(|c| c.as_str().to_owned())
                .collect(),
            acting_application: self.acting_application.as_ref().map(|a| {
                sharedcare_proto::common::v1::ActingApplication {
                    principal_id: a.id.clone(),
                    display_name: a.display_name.clone(),
                }
            }),
        }
    }
}

pub fn kind_to_str(kind: PrincipalKind) -> &'static str {
    match kind {
        PrincipalKind::Staff => "staff",
        PrincipalKind::Application => "application",
        PrincipalKind::Service => "service",
        PrincipalKind::Admin => "admin",
        PrincipalKind::Patient => "patient",
        PrincipalKind::Unspecified => "unspecified",
    }
}

pub fn kind_from_str(s: &str) -> Option<PrincipalKind> {
    Some(match s {
        "staff" => PrincipalKind::Staff,
        "application" => PrincipalKind::Application,
        "service" => PrincipalKind::Service,
        "admin" => PrincipalKind::Admin,
        "patient" => PrincipalKind::Patient,
        _ => return None,
    })
}

pub fn purpose_to_str(purpose: Purpose) -> &'static str {
    match purpose {
        Purpose::DirectCare => "direct_care",
        Purpose::Research => "research",
        Purpose::Planning => "planning",
        Purpose::PatientAccess => "patient_access",
        Purpose::EmergencyCare => "emergency_care",
        Purpose::Safeguarding => "safeguarding",
        Purpose::Commissioning => "commissioning",
        Purpose::Unspecified => "unspecified",
    }
}

pub fn purpose_from_str(s: &str) -> Option<Purpose> {
    Some(match s {
        "direct_care" => Purpose::DirectCare,
        "research" => Purpose::Research,
        "planning" => Purpose::Planning,
        "patient_access" => Purpose::PatientAccess,
        "emergency_care" => Purpose::EmergencyCare,
        "safeguarding" => Purpose::Safeguarding,
        "commissioning" => Purpose::Commissioning,
        _ => return None,
    })
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where verification keys come from.
pub trait KeySource: Send + Sync + 'static {
    fn fetch(&self) -> BoxFuture<'_, Result<Vec<Jwk>, Error>>;
}

/// Where the list of revoked principals comes from.
pub trait RevocationSource: Send + Sync + 'static {
    /// The ids of the principals whose tokens are refused.
    fn revoked(&self) -> BoxFuture<'_, Result<Vec<String>, Error>>;
}

/// identity's GetJwks (and ListRevocations) over gRPC.
pub struct GrpcKeySource {
    client: IdentityServiceClient<Channel>,
}

impl GrpcKeySource {
    pub fn new(channel: Channel) -> Self {
        GrpcKeySource {
            client: IdentityServiceClient::new(channel),
        }
    }
}

impl KeySource for GrpcKeySource {
    fn fetch(&self) -> BoxFuture<'_, Result<Vec<Jwk>, Error>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            let mut request = tonic::Request::new(GetJwksRequest {});
            request.set_timeout(Duration::from_secs(5));
            let response = client
                .get_jwks(request)
                .await
                .map_err(|s| Error::unavailable(s.message().to_owned()).context("fetching JWKS"))?;
            Ok(response.into_inner().keys)
        })
    }
}

impl RevocationSource for GrpcKeySource {
    fn revoked(&self) -> BoxFuture<'_, Result<Vec<String>, Error>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            let mut request = tonic::Request::new(ListRevocationsRequest {});
            request.set_timeout(REVOCATION_CALL_TIMEOUT);
            let response = client.list_revocations(request).await.map_err(|s| {
                Error::unavailable(s.message().to_owned()).context("fetching revocations")
            })?;
            Ok(response.into_inner().principal_ids)
        })
    }
}

/// Deadline on one fetch of the revocation list: part of the bound on how
/// long a revoked principal's token may still be accepted.
pub const REVOCATION_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The revoked principals as last fetched, refreshed inline by the first
/// request to find them older than `refresh` (others carry on with the list
/// they have while it is not older than `max_stale`). Past `max_stale`
/// every token is refused, UNAVAILABLE: a revocation could have been missed.
struct Revocations {
    source: Arc<dyn RevocationSource>,
    refresh: Duration,
    max_stale: Duration,
    state: std::sync::RwLock<RevokedList>,
    /// Held while fetching; when the last attempt began.
    fetching: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct RevokedList {
    ids: std::collections::HashSet<String>,
    /// When the fetch that gave `ids` began (None: never fetched).
    as_of: Option<Instant>,
}

/// Least time between two failed attempts at the list: identity down is not
/// asked once per request.
const REVOCATION_RETRY: Duration = Duration::from_secs(1);

impl Revocations {
    fn age(&self) -> Option<Duration> {
        self.state
            .read()
            .ok()
            .and_then(|s| s.as_of.map(|t| t.elapsed()))
    }

    async fn check<'a>(&self, mut ids: impl Iterator<Item = &'a str>) -> Result<(), Error> {
        if self.age().is_none_or(|age| age >= self.refresh) {
            self.refresh().await;
        }
        let state = self
            .state
            .read()
            .map_err(|_| Error::internal("checking revocations", "lock poisoned"))?;
        match state.as_of.map(|t| t.elapsed()) {
            None => {
                return Err(Error::unavailable(
                    "the revocation list could not be fetched from identity yet, so no token \
                     is accepted",
                )
                .with_reason("REVOCATIONS_UNAVAILABLE"));
            }
            Some(age) if age > self.max_stale => {
                return Err(Error::unavailable(format!(
                    "the revocation list from identity is {} s old, more than \
                     auth.revocation_max_stale_ms allows, so no token is accepted",
                    age.as_secs()
                ))
                .with_reason("REVOCATIONS_UNAVAILABLE"));
            }
            Some(_) => {}
        }
        if ids.any(|id| state.ids.contains(id)) {
            return Err(
                Error::unauthenticated("the token's principal has been revoked")
                    .with_reason("PRINCIPAL_REVOKED"),
            );
        }
        Ok(())
    }

    async fn refresh(&self) {
        let stale = self.age().is_none_or(|age| age > self.max_stale);
        // Within max_stale, one request refreshes and the rest go on with
        // the list they have; past it, all wait for the answer.
        let mut last = if stale {
            self.fetching.lock().await
        } else {
            match self.fetching.try_lock() {
                Ok(guard) => guard,
                Err(_) => return,
            }
        };
        // Refreshed while we waited, or tried and failed just now.
        if self.age().is_some_and(|age| age < self.refresh)
            || last.is_some_and(|t| t.elapsed() < REVOCATION_RETRY.min(self.refresh))
        {
            return;
        }
        let began = Instant::now();
        *last = Some(began);
        match self.source.revoked().await {
            Ok(ids) => {
                if let Ok(mut state) = self.state.write() {
                    *state = RevokedList {
                        ids: ids.into_iter().collect(),
                        as_of: Some(began),
                    };
                }
            }
            Err(e) => {
                tracing::warn!(error = %e.message, "the revocation list could not be refreshed")
            }
        }
    }
}

/// Verifies tokens with cached keys, refetching when a token names a key id
/// it has not seen (rotation), at most once per `min_refresh` (a token that
/// arrives sooner waits for the next fetch).
///
/// A token that verified is remembered until it expires: clients present
/// the same token for its whole life, and a map lookup costs a fraction of
/// an Ed25519 check. The whole token, signature included, is the key, so
/// only the very same bytes hit; a change of key set forgets them all.
pub struct Verifier {
    source: Arc<dyn KeySource>,
    /// The platform-wide audience, accepted by every service.
    audience: String,
    /// The service this verifier admits to (`ServiceSpec::new` binds it):
    /// it accepts tokens for "<audience>/<service>" too.
    service: std::sync::OnceLock<&'static str>,
    revocations: Option<Revocations>,
    keys: RwLock<HashMap<String, DecodingKey>>,
    last_fetch: Mutex<Option<Instant>>,
    min_refresh: Duration,
    validation: Validation,
    verified: std::sync::RwLock<HashMap<String, Verified>>,
}

/// A token that verified, and until when (its `exp`, without leeway).
struct Verified {
    principal: Principal,
    expires: i64,
}

/// Tokens remembered at most; past this, expired ones are dropped, and all
/// when none has expired (a flood of distinct tokens just verifies).
const MAX_VERIFIED: usize = 10_000;

impl Verifier {
    pub fn new(
        source: Arc<dyn KeySource>,
        issuer: &str,
        audience: &str,
        min_refresh: Duration,
    ) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        // The audience is checked by `check_audience`, which names it.
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        Verifier {
            source,
            audience: audience.to_owned(),
            service: std::sync::OnceLock::new(),
            revocations: None,
            keys: RwLock::new(HashMap::new()),
            last_fetch: Mutex::new(None),
            min_refresh,
            validation,
            verified: std::sync::RwLock::new(HashMap::new()),
        }
    }

    /// Refuses the tokens of revoked principals, as `source` lists them,
    /// refreshed every `refresh`; past `max_stale` without a fresh list,
    /// every token (see `Revocations`).
    pub fn with_revocations(
        mut self,
        source: Arc<dyn RevocationSource>,
        refresh: Duration,
        max_stale: Duration,
    ) -> Self {
        self.revocations = Some(Revocations {
            source,
            refresh,
            max_stale,
            state: std::sync::RwLock::new(RevokedList::default()),
            fetching: Mutex::new(None),
        });
        self
    }

    /// Binds the verifier to the service it admits to: tokens for that
    /// service's own audience are accepted besides platform-wide ones.
    /// Done once, by `ServiceSpec::new`; a second service is refused.
    pub fn bind_service(&self, service: &'static str) {
        if let Err(other) = self.service.set(service)
            && self.service.get() != Some(&other)
        {
            tracing::warn!(
                service,
                "a verifier bound to another service was given to this one: it keeps the first"
            );
        }
    }

    /// The audience of tokens for one service of this platform.
    pub fn service_audience(platform: &str, service: &str) -> String {
        format!("{platform}/{service}")
    }

    pub async fn verify(&self, token: &str) -> Result<Principal, Error> {
        let verified = self.verify_unmetered(token).await;
        crate::metrics::token_verified(self.metrics_label(), verified.is_ok());
        verified
    }

    /// The service label of this verifier's metrics.
    fn metrics_label(&self) -> &'static str {
        self.service.get().copied().unwrap_or("unbound")
    }

    async fn verify_unmetered(&self, token: &str) -> Result<Principal, Error> {
        let now = chrono::Utc::now().timestamp();
        let principal = match self.remembered(token, now) {
            Some(principal) => principal,
            None => {
                let (principal, expires) = self.verify_signed(token, false).await?;
                self.remember(token, &principal, expires, now);
                principal
            }
        };
        self.check_revoked(&principal).await?;
        Ok(principal)
    }

    /// As `verify`, with the token's expiry (Unix seconds), always checked
    /// afresh and for any of the platform's audiences: for introspection.
    pub async fn verify_with_expiry(&self, token: &str) -> Result<(Principal, i64), Error> {
        let verified = match self.verify_signed(token, true).await {
            Ok(verified) => self.check_revoked(&verified.0).await.map(|()| verified),
            Err(e) => Err(e),
        };
        crate::metrics::token_verified(self.metrics_label(), verified.is_ok());
        verified
    }

    async fn check_revoked(&self, principal: &Principal) -> Result<(), Error> {
        match &self.revocations {
            Some(revocations) => revocations.check(principal.principal_ids()).await,
            None => Ok(()),
        }
    }

    /// The platform-wide audience, or this service's own (any service's
    /// when `any_service`). UNAUTHENTICATED naming the token's audience.
    fn check_audience(&self, aud: &str, any_service: bool) -> Result<(), Error> {
        if aud == self.audience {
            return Ok(());
        }
        let service = aud
            .strip_prefix(self.audience.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .filter(|s| !s.is_empty());
        match (service, self.service.get()) {
            (Some(_), _) if any_service => Ok(()),
            (Some(for_service), Some(ours)) if for_service == *ours => Ok(()),
            (_, Some(ours)) => Err(Error::unauthenticated(format!(
                "token is for audience `{aud}`; {ours} accepts only `{}` and `{}`",
                self.audience,
                Self::service_audience(&self.audience, ours)
            ))
            .with_reason("WRONG_AUDIENCE")),
            (_, None) => Err(Error::unauthenticated(format!(
                "token is for audience `{aud}`; this accepts only `{}`",
                self.audience
            ))
            .with_reason("WRONG_AUDIENCE")),
        }
    }

    pub(crate) fn remembered(&self, token: &str, now: i64) -> Option<Principal> {
        let verified = self.verified.read().ok()?;
        let hit = verified.get(token)?;
        // Strictly before expiry: the leeway is applied by a full check.
        (now < hit.expires).then(|| hit.principal.clone())
    }

    fn remember(&self, token: &str, principal: &Principal, expires: i64, now: i64) {
        let Ok(mut verified) = self.verified.write() else {
            return;
        };
        if verified.len() >= MAX_VERIFIED {
            verified.retain(|_, v| now < v.expires);
            if verified.len() >= MAX_VERIFIED {
                verified.clear();
            }
        }
        verified.insert(
            token.to_owned(),
            Verified {
                principal: principal.clone(),
                expires,
            },
        );
    }

    fn forget_verified(&self) {
        if let Ok(mut verified) = self.verified.write() {
            verified.clear();
        }
    }

    /// The full check: header, key, signature, claims.
    async fn verify_signed(
        &self,
        token: &str,
        any_service: bool,
    ) -> Result<(Principal, i64), Error> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Error::unauthenticated("bearer token is not a well-formed JWT"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(Error::unauthenticated("token must be signed with EdDSA"));
        }
        let kid = header
            .kid
            .ok_or_else(|| Error::unauthenticated("token has no key id"))?;
        let key = self.key(&kid).await?;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            Error::unauthenticated(match e.kind() {
                ErrorKind::ExpiredSignature => "token has expired",
                ErrorKind::InvalidSignature => "token signature does not verify",
                ErrorKind::InvalidIssuer => "token is from another issuer",
                _ => "token is invalid",
            })
        })?;
        self.check_audience(&data.claims.aud, any_service)?;
        Ok((Principal::from_claims(&data.claims)?, data.claims.exp))
    }

    async fn key(&self, kid: &str) -> Result<DecodingKey, Error> {
        if let Some(key) = self.keys.read().await.get(kid) {
            return Ok(key.clone());
        }
        {
            let mut last = self.last_fetch.lock().await;
            // Another caller may have fetched while we waited for the lock.
            if let Some(key) = self.keys.read().await.get(kid) {
                return Ok(key.clone());
            }
            // A key minted just after the last fetch (a rotation) is waited
            // for, never refused: at most `min_refresh`, the bound on how
            // often unknown key ids may make identity be asked.
            if let Some(wait) = last.and_then(|t| self.min_refresh.checked_sub(t.elapsed())) {
                tokio::time::sleep(wait).await;
            }
            {
                let fetched = self.source.fetch().await?;
                *last = Some(Instant::now());
                let mut keys = self.keys.write().await;
                keys.clear();
                self.forget_verified();
                for jwk in fetched {
                    if jwk.kty == "OKP"
                        && jwk.crv == "Ed25519"
                        && let Ok(key) = DecodingKey::from_ed_components(&jwk.x)
                    {
                        keys.insert(jwk.kid, key);
                    }
                }
            }
        }
        self.keys
            .read()
            .await
            .get(kid)
            .cloned()
            .ok_or_else(|| Error::unauthenticated("token is signed by an unknown key"))
    }
}

/// The verifier of every service but identity: identity's JWKS over gRPC,
/// as configured.
pub fn remote_verifier(cfg: &crate::config::AuthConfig) -> Result<Arc<Verifier>, Error> {
    let identity = crate::client::lazy_channel(&cfg.identity_url)?;
    Ok(Arc::new(grpc_verifier(cfg, identity)))
}

/// A verifier against identity over `identity`: its JWKS, and its
/// revocation list refreshed as `cfg` says.
pub fn grpc_verifier(cfg: &crate::config::AuthConfig, identity: Channel) -> Verifier {
    let source = Arc::new(GrpcKeySource::new(identity));
    Verifier::new(
        source.clone(),
        &cfg.issuer,
        &cfg.audience,
        Duration::from_millis(cfg.jwks_min_refresh_ms),
    )
    .with_revocations(
        source,
        Duration::from_millis(cfg.revocation_refresh_ms),
        Duration::from_millis(cfg.revocation_max_stale_ms),
    )
}

/// gRPC paths that need no token besides a service's public RPCs (token
/// issuing, JWKS): health and reflection.
pub const PUBLIC_PATH_PREFIXES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// The tower layer that demands a valid bearer token on every other path and
/// admits it by the service's access table, before the request is decoded.
#[derive(Clone)]
pub struct AuthLayer {
    verifier: Arc<Verifier>,
    table: &'static AccessTable,
}

impl AuthLayer {
    pub fn new(verifier: Arc<Verifier>, table: &'static AccessTable) -> Self {
        AuthLayer { verifier, table }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            verifier: self.verifier.clone(),
            table: self.table,
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    verifier: Arc<Verifier>,
    table: &'static AccessTable,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for AuthService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        // Take the service that was polled ready; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        let table = self.table;
        Box::pin(async move {
            let path = request.uri().path().to_owned();
            if PUBLIC_PATH_PREFIXES.iter().any(|p| path.starts_with(p)) || table.is_public(&path) {
                return inner.call(request).await;
            }
            let token = match bearer_token(request.headers()) {
                Ok(token) => token,
                Err(err) => return Ok(tonic::Status::from(err).into_http()),
            };
            let principal = match verifier.verify(&token).await {
                Ok(principal) => principal,
                Err(err) => return Ok(tonic::Status::from(err).into_http()),
            };
            // A path of this service is admitted by its row of the table
            // (none: refused); any other path meets tonic's UNIMPLEMENTED.
            if let Some(method) = table.method_of(&path) {
                match table.admit(method, &principal) {
                    Ok(grant) => {
                        request.extensions_mut().insert(grant);
                    }
                    Err(err) => return Ok(tonic::Status::from(err).into_http()),
                }
            }
            inner.call(request).await
        })
    }
}

/// The token of an `authorization: Bearer <token>` header (the scheme in any
/// case, the token trimmed); UNAUTHENTICATED saying what is wrong otherwise.
pub fn bearer_token(headers: &http::HeaderMap) -> Result<String, Error> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| Error::unauthenticated("missing bearer token (authorization metadata)"))?;
    let value = value
        .to_str()
        .map_err(|_| Error::unauthenticated("authorization metadata is not text"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim().to_owned())
        }
        _ => Err(Error::unauthenticated(
            "authorization metadata must be `Bearer <token>`",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_is_read_case_insensitively() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("bearer abc.def.ghi"),
        );
        assert_eq!(bearer_token(&headers).expect("token"), "abc.def.ghi");
    }

    #[test]
    fn other_schemes_are_refused() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Basic dXNlcjpwYXNz"),
        );
        assert!(bearer_token(&headers).is_err());
        assert!(bearer_token(&http::HeaderMap::new()).is_err());
    }

    fn staff() -> Principal {
        Principal {
            id: "p".into(),
            kind: PrincipalKind::Staff,
            organisation: "A81001".into(),
            role: "R8000".into(),
            scopes: ["records.read".to_owned()].into(),
            purpose: Some(Purpose::DirectCare),
            purposes: [Purpose::DirectCare].into(),
            capabilities: BTreeSet::new(),
            patient: None,
            display_name: String::new(),
            organisation_name: String::new(),
            acting_application: None,
        }
    }

    #[test]
    fn scopes_are_checked_exactly() {
        let principal = staff();
        assert!(principal.require_scope("records.read").is_ok());
        let err = principal
            .require_scope("records.write")
            .expect_err("denied");
        assert!(err.message.contains("records.write"));
    }

    #[test]
    fn a_request_names_only_a_permitted_purpose() {
        let principal = staff();
        assert_eq!(
            principal
                .purpose_for("purpose", Purpose::Unspecified as i32)
                .expect("default"),
            Purpose::DirectCare
        );
        let err = principal
            .purpose_for("purpose", Purpose::Research as i32)
            .expect_err("not permitted");
        assert_eq!(err.code, crate::error::Code::PermissionDenied);
        assert!(err.message.contains("research"), "{}", err.message);
        let err = principal.purpose_for("purpose", 99).expect_err("unknown");
        assert_eq!(err.code, crate::error::Code::InvalidArgument);
    }

    #[test]
    fn a_patient_token_must_name_its_patient() {
        let claims = |kind: &str, pat: &str| Claims {
            iss: "i".into(),
            sub: "s".into(),
            aud: "a".into(),
            exp: 0,
            iat: 0,
            jti: "j".into(),
            kind: kind.into(),
            org: String::new(),
            role: String::new(),
            scope: String::new(),
            pou: "patient_access".into(),
            pous: vec!["patient_access".into()],
            caps: vec![],
            pat: pat.into(),
            name: String::new(),
            org_name: String::new(),
            act: None,
        };
        assert!(Principal::from_claims(&claims("patient", "p1")).is_ok());
        assert!(Principal::from_claims(&claims("patient", "")).is_err());
        assert!(Principal::from_claims(&claims("staff", "p1")).is_err());
    }
}
