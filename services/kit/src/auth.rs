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
    identity::v1::{GetJwksRequest, Jwk, identity_service_client::IdentityServiceClient},
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
        })
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

/// identity's GetJwks over gRPC.
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

/// Verifies tokens with cached keys, refetching when a token names a key id
/// it has not seen (rotation), at most once per `min_refresh`.
///
/// A token that verified is remembered until it expires: clients present
/// the same token for its whole life, and a map lookup costs a fraction of
/// an Ed25519 check. The whole token, signature included, is the key, so
/// only the very same bytes hit; a change of key set forgets them all.
pub struct Verifier {
    source: Arc<dyn KeySource>,
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
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        Verifier {
            source,
            keys: RwLock::new(HashMap::new()),
            last_fetch: Mutex::new(None),
            min_refresh,
            validation,
            verified: std::sync::RwLock::new(HashMap::new()),
        }
    }

    pub async fn verify(&self, token: &str) -> Result<Principal, Error> {
        let now = chrono::Utc::now().timestamp();
        if let Some(principal) = self.remembered(token, now) {
            return Ok(principal);
        }
        let (principal, expires) = self.verify_signed(token).await?;
        self.remember(token, &principal, expires, now);
        Ok(principal)
    }

    /// As `verify`, with the token's expiry (Unix seconds), always checked
    /// afresh: for introspection.
    pub async fn verify_with_expiry(&self, token: &str) -> Result<(Principal, i64), Error> {
        self.verify_signed(token).await
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
    async fn verify_signed(&self, token: &str) -> Result<(Principal, i64), Error> {
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
                ErrorKind::InvalidAudience => "token is for another audience",
                ErrorKind::InvalidIssuer => "token is from another issuer",
                _ => "token is invalid",
            })
        })?;
        Ok((Principal::from_claims(&data.claims)?, data.claims.exp))
    }

    async fn key(&self, kid: &str) -> Result<DecodingKey, Error> {
        if let Some(key) = self.keys.read().await.get(kid) {
            return Ok(key.clone());
        }
        {
            let mut last = self.last_fetch.lock().await;
            let due = last.is_none_or(|t| t.elapsed() >= self.min_refresh);
            // Another caller may have fetched while we waited for the lock.
            if let Some(key) = self.keys.read().await.get(kid) {
                return Ok(key.clone());
            }
            if due {
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
    Ok(Arc::new(Verifier::new(
        Arc::new(GrpcKeySource::new(identity)),
        &cfg.issuer,
        &cfg.audience,
        Duration::from_millis(cfg.jwks_min_refresh_ms),
    )))
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

fn bearer_token(headers: &http::HeaderMap) -> Result<String, Error> {
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
        };
        assert!(Principal::from_claims(&claims("patient", "p1")).is_ok());
        assert!(Principal::from_claims(&claims("patient", "")).is_err());
        assert!(Principal::from_claims(&claims("staff", "p1")).is_err());
    }
}
