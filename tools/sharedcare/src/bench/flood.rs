//! `--overload F`: once a scenario's closed loop has measured what its
//! service can serve (OK calls/s), a flood of F times that. The loop is
//! truly open: every call is its own task, started when it is due whatever
//! is still outstanding, as from many independent callers, so the service
//! meets more than it can serve. Each call's latency counts from when it was
//! due. Meanwhile a probe asks the service's health every 100 ms on a
//! connection of its own, as an orchestrator would, with a 1 s timeout.
//!
//! Reported: the rate offered and the rate served, how many calls were shed
//! (RESOURCE_EXHAUSTED) and any other status, the latency of the calls that
//! were admitted (answered OK), and every health answer.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::anyhow;
use serde::Serialize;
use tonic::{Code, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::{
    load::Measurement,
    report::{Latency, status_names, statuses},
    rpc::Rpc,
};

/// More calls outstanding than this and the flood stops starting new ones
/// (counted, not sent): the bound on the load tool's own memory.
const MAX_OUTSTANDING: u64 = 50_000;
const HEALTH_EVERY: Duration = Duration::from_millis(100);
/// As a Kubernetes gRPC probe's default `timeoutSeconds`.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// How one flood is shaped.
pub struct FloodPlan {
    /// Times the measured capacity.
    pub factor: f64,
    pub duration: Duration,
    pub call_timeout: Duration,
}

/// What one flood found.
#[derive(Debug, Serialize)]
pub struct Flood {
    pub name: String,
    pub rpc: String,
    pub target: String,
    /// OK calls/s of the scenario's closed loop.
    pub capacity_per_s: f64,
    pub factor: f64,
    pub offered_per_s: f64,
    /// Calls started; those left unstarted because the load tool already
    /// had too many outstanding.
    pub calls: u64,
    pub not_started: u64,
    pub elapsed_s: f64,
    /// OK calls/s during the flood.
    pub served_per_s: f64,
    /// RESOURCE_EXHAUSTED answers over calls started.
    pub shed_fraction: f64,
    pub statuses: BTreeMap<&'static str, u64>,
    /// Of the calls answered OK, from when each was due.
    pub admitted_latency_ms: Latency,
    pub health: HealthSeen,
}

/// What the health probe heard during the flood.
#[derive(Debug, Default, Serialize)]
pub struct HealthSeen {
    pub checks: u64,
    pub serving: u64,
    /// Any other answer (a status, NOT_SERVING, no answer in 1 s) → count.
    pub other: BTreeMap<String, u64>,
    pub max_ms: f64,
}

/// Both tallies the calls share.
struct Tally {
    all: Measurement,
    admitted: Measurement,
}

/// Floods `rpc` over `channels` at `plan.factor` × `capacity_per_s`,
/// probing health on `health` meanwhile.
pub async fn run(
    rpc: Arc<Rpc>,
    channels: &[Channel],
    health: Channel,
    capacity_per_s: f64,
    plan: &FloodPlan,
) -> anyhow::Result<Flood> {
    if channels.is_empty() {
        return Err(anyhow!("no connections to flood"));
    }
    let rate = capacity_per_s * plan.factor;
    if !(rate.is_finite() && rate > 0.0) {
        return Err(anyhow!(
            "{}: nothing succeeded in the closed loop, so there is no capacity to multiply",
            rpc.method()
        ));
    }
    let tally = Arc::new(Mutex::new(Tally {
        all: Measurement::empty(plan.call_timeout)?,
        admitted: Measurement::empty(plan.call_timeout)?,
    }));
    let outstanding = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let probing = tokio::spawn(probe_health(health, plan.duration));

    let start = Instant::now();
    let mut calls = 0u64;
    let mut not_started = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    // Every millisecond, start whatever has come due since the last tick.
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let now = start.elapsed();
        if now >= plan.duration {
            break;
        }
        let due_by_now = (now.as_secs_f64() * rate) as u64;
        while calls + not_started < due_by_now {
            let n = calls + not_started;
            let due = start + Duration::from_secs_f64(n as f64 / rate);
            if outstanding.load(std::sync::atomic::Ordering::Relaxed) >= MAX_OUTSTANDING {
                not_started += 1;
                continue;
            }
            calls += 1;
            outstanding.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (rpc, tally, outstanding) = (rpc.clone(), tally.clone(), outstanding.clone());
            let channel = channels[(n as usize) % channels.len()].clone();
            let call_timeout = plan.call_timeout;
            tasks.spawn(async move {
                let code = match tokio::time::timeout(call_timeout, rpc.call(channel)).await {
                    Ok(Ok(_)) => Code::Ok,
                    Ok(Err(status)) => status.code(),
                    Err(_) => Code::DeadlineExceeded,
                };
                let took = due.elapsed();
                if let Ok(mut tally) = tally.lock() {
                    tally.all.record(code, took);
                    if code == Code::Ok {
                        tally.admitted.record(code, took);
                    }
                }
                outstanding.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            });
        }
        // Reap what has finished, so the set stays as small as what is outstanding.
        while tasks.try_join_next().is_some() {}
    }
    // Every call is bounded by the call timeout.
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    let health = probing.await.unwrap_or_default();

    let tally = Arc::try_unwrap(tally)
        .map_err(|_| anyhow!("a flood call outlived the flood"))?
        .into_inner()
        .map_err(|_| anyhow!("a flood call panicked"))?;
    let mut all = tally.all;
    all.elapsed = elapsed;
    let elapsed_s = elapsed.as_secs_f64();
    let ok = all.statuses[Code::Ok as usize];
    let shed = all.statuses[Code::ResourceExhausted as usize];
    Ok(Flood {
        name: String::new(),
        rpc: rpc.method().to_owned(),
        target: String::new(),
        capacity_per_s,
        factor: plan.factor,
        offered_per_s: rate,
        calls,
        not_started,
        elapsed_s,
        served_per_s: ok as f64 / elapsed_s.max(1e-9),
        shed_fraction: if calls > 0 {
            shed as f64 / calls as f64
        } else {
            0.0
        },
        statuses: status_names(&all.statuses),
        admitted_latency_ms: Latency::of(&tally.admitted.latency_us),
        health,
    })
}

/// Health checks every 100 ms for `duration`, each bounded by 1 s.
async fn probe_health(channel: Channel, duration: Duration) -> HealthSeen {
    let mut seen = HealthSeen::default();
    let mut client = HealthClient::new(channel);
    let start = Instant::now();
    let mut every = tokio::time::interval(HEALTH_EVERY);
    while start.elapsed() < duration {
        every.tick().await;
        let asked = Instant::now();
        let answer =
            tokio::time::timeout(HEALTH_TIMEOUT, client.check(HealthCheckRequest::default())).await;
        seen.checks += 1;
        seen.max_ms = seen.max_ms.max(asked.elapsed().as_secs_f64() * 1000.0);
        let other = match answer {
            Ok(Ok(response)) if response.get_ref().status == ServingStatus::Serving as i32 => {
                seen.serving += 1;
                continue;
            }
            Ok(Ok(response)) => ServingStatus::try_from(response.get_ref().status)
                .map_or("UNKNOWN", |s| s.as_str_name())
                .to_owned(),
            Ok(Err(status)) => crate::failure::code_name(status.code()).to_owned(),
            Err(_) => "no answer in 1 s".to_owned(),
        };
        *seen.other.entry(other).or_default() += 1;
    }
    seen
}

impl Flood {
    pub fn table(&self) -> Vec<String> {
        let l = self.admitted_latency_ms;
        let h = &self.health;
        let mut lines = vec![
            format!(
                "overload {}: {:.0} calls/s offered ({:.1}× the closed loop's {:.0} OK/s) for {:.1} s",
                self.name, self.offered_per_s, self.factor, self.capacity_per_s, self.elapsed_s
            ),
            format!(
                "  served {:.0} OK/s; shed {:.1} % (RESOURCE_EXHAUSTED); {}",
                self.served_per_s,
                self.shed_fraction * 100.0,
                statuses(&self.statuses)
            ),
            format!(
                "  admitted (OK) latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
                l.p50, l.p90, l.p99, l.p99_9, l.max
            ),
            format!(
                "  health: {} of {} checks SERVING{}; slowest answer {:.1} ms",
                h.serving,
                h.checks,
                h.other
                    .iter()
                    .map(|(what, n)| format!(", {what} {n}"))
                    .collect::<String>(),
                h.max_ms
            ),
        ];
        if self.not_started > 0 {
            lines.push(format!(
                "  warning: {} calls were not started (over {MAX_OUTSTANDING} outstanding at the load tool)",
                self.not_started
            ));
        }
        lines
    }
}
