//! Which requests a server takes on. Two guards, both answering
//! RESOURCE_EXHAUSTED at once rather than queueing:
//! - a bound on requests in flight across all connections, so that under
//!   overload the requests admitted are answered in bounded time instead of
//!   every caller waiting in a queue until it times out. Health checks
//!   bypass it: a probe during a flood must say the server is serving (it
//!   is), not that it is exhausted, or the orchestrator restarts a replica
//!   that is working and moves its load onto the others.
//! - a per-client rate limit (per principal, per replica), so one caller
//!   cannot take a replica's whole capacity from everyone else. The
//!   platform's own service principals are exempt: their calls carry other
//!   callers' requests, already limited where they entered.

use std::{
    num::NonZeroU32,
    sync::{Arc, Weak},
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sharedcare_proto::common::v1::PrincipalKind;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{access::Grant, config::ServerConfig};

/// Paths served whatever the load: the health service (probes must tell
/// the truth under load).
const ALWAYS_ADMITTED: &str = "/grpc.health.v1.Health/";

/// What a request shed at the in-flight bound is told.
pub const IN_FLIGHT_MESSAGE: &str = "server is at its concurrency limit; retry later";

/// What a client over its rate is told.
pub const CLIENT_RATE_MESSAGE: &str = "this client is over its rate limit; retry later";

/// How often clients not seen lately are forgotten by the rate limiter, so
/// its memory follows the clients active now, not every client ever seen.
const FORGET_IDLE_CLIENTS_EVERY: Duration = Duration::from_secs(60);

/// Decides whether a server takes a request on: what it holds while the
/// request is served (e.g. a slot), or the reason it is refused.
pub trait Gate: Clone {
    type Pass: Send + 'static;
    fn pass<B>(&self, request: &http::Request<B>) -> Result<Self::Pass, &'static str>;
}

/// A request is served while a slot is held (health checks aside); see the
/// module docs.
#[derive(Clone)]
pub struct InFlight {
    permits: Arc<Semaphore>,
}

impl InFlight {
    pub fn layer(limit: usize) -> AdmitLayer<InFlight> {
        AdmitLayer(InFlight {
            permits: Arc::new(Semaphore::new(limit)),
        })
    }
}

impl Gate for InFlight {
    type Pass = Option<OwnedSemaphorePermit>;

    fn pass<B>(&self, request: &http::Request<B>) -> Result<Self::Pass, &'static str> {
        if request.uri().path().starts_with(ALWAYS_ADMITTED) {
            return Ok(None);
        }
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Ok(Some(permit)),
            Err(_) => Err(IN_FLIGHT_MESSAGE),
        }
    }
}

/// Per-client rate limits, read from `[server]`.
#[derive(Clone)]
pub struct ClientRate {
    limiter: Arc<DefaultKeyedRateLimiter<String>>,
}

impl ClientRate {
    /// `None` when switched off (`client_requests_per_second = 0`). Must
    /// be called within a Tokio runtime: it starts the task that forgets
    /// idle clients (it ends when the layer's last clone is gone).
    pub fn layer(cfg: &ServerConfig) -> Option<AdmitLayer<ClientRate>> {
        let rate = NonZeroU32::new(cfg.client_requests_per_second)?;
        let burst = NonZeroU32::new(cfg.client_burst).unwrap_or(rate);
        let limiter = Arc::new(RateLimiter::keyed(
            Quota::per_second(rate).allow_burst(burst),
        ));
        tokio::spawn(forget_idle_clients(Arc::downgrade(&limiter)));
        Some(AdmitLayer(ClientRate { limiter }))
    }
}

impl Gate for ClientRate {
    type Pass = ();

    fn pass<B>(&self, request: &http::Request<B>) -> Result<(), &'static str> {
        // The auth layer (outside this one) put the caller's grant here;
        // public paths (health, reflection, token issue) have none and are
        // limited where they are served.
        match request.extensions().get::<Grant>() {
            Some(grant)
                if grant.principal.kind != PrincipalKind::Service
                    && self.limiter.check_key(&grant.principal.id).is_err() =>
            {
                Err(CLIENT_RATE_MESSAGE)
            }
            _ => Ok(()),
        }
    }
}

async fn forget_idle_clients(limiter: Weak<DefaultKeyedRateLimiter<String>>) {
    let mut every = tokio::time::interval(FORGET_IDLE_CLIENTS_EVERY);
    every.tick().await;
    loop {
        every.tick().await;
        let Some(limiter) = limiter.upgrade() else {
            return;
        };
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }
}

/// Serves what its gate passes; answers the rest RESOURCE_EXHAUSTED.
#[derive(Clone)]
pub struct AdmitLayer<G>(G);

impl<S, G: Gate> tower::Layer<S> for AdmitLayer<G> {
    type Service = Admit<S, G>;

    fn layer(&self, inner: S) -> Self::Service {
        Admit {
            inner,
            gate: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Admit<S, G> {
    inner: S,
    gate: G,
}

impl<S, G, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Admit<S, G>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    G: Gate,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        match self.gate.pass(&request) {
            Ok(pass) => {
                let answer = self.inner.call(request);
                Box::pin(async move {
                    let answered = answer.await;
                    // Held until the answer is ready.
                    drop(pass);
                    answered
                })
            }
            Err(why) => {
                let refused = tonic::Status::resource_exhausted(why).into_http();
                Box::pin(std::future::ready(Ok(refused)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use sharedcare_proto::common::v1::Purpose;
    use tokio::sync::oneshot;
    use tower::{Layer, Service, ServiceExt};

    use super::*;
    use crate::{access::Patients, auth::Principal};

    type Response = http::Response<tonic::body::Body>;

    fn request(path: &str, caller: Option<(&str, PrincipalKind)>) -> http::Request<()> {
        let mut request = http::Request::builder()
            .uri(format!("http://test{path}"))
            .body(())
            .expect("request");
        if let Some((id, kind)) = caller {
            request.extensions_mut().insert(Grant {
                principal: Principal {
                    id: id.into(),
                    kind,
                    organisation: "A81001".into(),
                    role: "R8000".into(),
                    scopes: BTreeSet::new(),
                    purpose: Some(Purpose::DirectCare),
                    purposes: [Purpose::DirectCare].into(),
                    capabilities: BTreeSet::new(),
                    patient: None,
                    display_name: String::new(),
                    organisation_name: String::new(),
                    acting_application: None,
                },
                method: "GetRecord",
                patients: Patients::Related,
            });
        }
        request
    }

    fn code(response: &Response) -> tonic::Code {
        response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .map_or(tonic::Code::Ok, tonic::Code::from)
    }

    fn answered() -> impl Service<
        http::Request<()>,
        Response = Response,
        Error = std::convert::Infallible,
        Future = impl Future<Output = Result<Response, std::convert::Infallible>> + Send,
    > + Clone {
        tower::service_fn(|_: http::Request<()>| async { Ok(Response::default()) })
    }

    #[tokio::test]
    async fn beyond_the_bound_requests_are_refused_but_health_checks_are_not() {
        let (release, released) = oneshot::channel::<()>();
        let released = Arc::new(tokio::sync::Mutex::new(Some(released)));
        let held = tower::service_fn(move |_: http::Request<()>| {
            let released = released.clone();
            async move {
                // Only the first call waits (the lock is not held meanwhile).
                let first = released.lock().await.take();
                if let Some(released) = first {
                    let _ = released.await;
                }
                Ok::<_, std::convert::Infallible>(Response::default())
            }
        });
        let mut service = InFlight::layer(1).layer(held);
        let first = tokio::spawn(service.clone().oneshot(request(
            "/sharedcare.records.v1.RecordsService/GetRecord",
            None,
        )));
        tokio::task::yield_now().await;

        let shed = service
            .ready()
            .await
            .expect("ready")
            .call(request(
                "/sharedcare.records.v1.RecordsService/GetRecord",
                None,
            ))
            .await
            .expect("answered");
        assert_eq!(code(&shed), tonic::Code::ResourceExhausted);
        let health = service
            .ready()
            .await
            .expect("ready")
            .call(request("/grpc.health.v1.Health/Check", None))
            .await
            .expect("answered");
        assert_eq!(code(&health), tonic::Code::Ok, "health is always admitted");

        release.send(()).expect("first is waiting");
        let first = first.await.expect("join").expect("answered");
        assert_eq!(code(&first), tonic::Code::Ok);
        // Its slot is free again.
        let next = service
            .oneshot(request(
                "/sharedcare.records.v1.RecordsService/GetRecord",
                None,
            ))
            .await
            .expect("answered");
        assert_eq!(code(&next), tonic::Code::Ok);
    }

    #[tokio::test]
    async fn a_client_over_its_rate_is_refused_and_no_one_else_is() {
        let cfg = ServerConfig {
            client_requests_per_second: 1,
            client_burst: 3,
            ..ServerConfig::loopback()
        };
        let mut service = ClientRate::layer(&cfg)
            .expect("limits on")
            .layer(answered());
        let path = "/sharedcare.records.v1.RecordsService/GetRecord";
        let mut call = async |caller| {
            let response = service
                .ready()
                .await
                .expect("ready")
                .call(request(path, caller))
                .await
                .expect("answered");
            code(&response)
        };
        for _ in 0..3 {
            assert_eq!(
                call(Some(("busy", PrincipalKind::Staff))).await,
                tonic::Code::Ok
            );
        }
        assert_eq!(
            call(Some(("busy", PrincipalKind::Staff))).await,
            tonic::Code::ResourceExhausted
        );
        assert_eq!(
            call(Some(("quiet", PrincipalKind::Staff))).await,
            tonic::Code::Ok
        );
        for _ in 0..10 {
            assert_eq!(
                call(Some(("records", PrincipalKind::Service))).await,
                tonic::Code::Ok,
                "the platform's own services are not limited"
            );
            assert_eq!(call(None).await, tonic::Code::Ok, "public paths");
        }
    }

    #[test]
    fn no_rate_switches_client_limits_off() {
        let cfg = ServerConfig {
            client_requests_per_second: 0,
            ..ServerConfig::loopback()
        };
        assert!(ClientRate::layer(&cfg).is_none());
    }
}
