//! The closed loop: `in_flight` workers share `connections` HTTP/2
//! connections (worker i uses connection i mod N); each sends one call,
//! waits for its answer, and sends the next, so exactly `in_flight` calls
//! are outstanding at any time. Calls during the warm-up are sent but not
//! measured. The loop stops by itself: at the end of the duration, or when
//! the request budget is spent, whichever comes first; every call is
//! bounded by the call timeout, so stopping takes at most that long.
//!
//! With a rate the loop is open: each worker starts its calls on a fixed
//! schedule (the rate shared out over the workers, their starts staggered)
//! and a call's latency counts from when it was due, not from when it was
//! sent — so a slow answer that delays the next call is charged to it too
//! rather than hidden (no coordinated omission).
//!
//! Ctrl-C (SIGINT) during a run ends it as the end of its duration would,
//! and no later run starts, so the report shows what was measured; at any
//! other moment (setting up), or a second time, it ends the process.

use std::{
    io::{IsTerminal, Write},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow};
use hdrhistogram::Histogram;
use tokio::sync::watch;
use tonic::{Code, transport::Channel};

use super::{acks::Acks, rpc::Rpc};

/// How one run is shaped.
#[derive(Debug, Clone)]
pub struct Plan {
    pub connections: usize,
    pub in_flight: usize,
    pub warmup: Duration,
    /// Longest the measured part lasts.
    pub duration: Duration,
    /// Most calls measured; `None` means as many as the duration allows.
    pub requests: Option<u64>,
    /// Longest one call may take before it counts as DEADLINE_EXCEEDED.
    pub call_timeout: Duration,
    /// Calls started per second over all workers (open loop); `None`: each
    /// worker sends its next call as soon as the last is answered.
    pub rate: Option<f64>,
    /// A progress line on standard error once a second.
    pub progress: bool,
}

/// What one run measured.
#[derive(Debug)]
pub struct Measurement {
    /// Calls started after the warm-up, whatever their status.
    pub calls: u64,
    /// From the end of the warm-up until the last measured call answered.
    pub elapsed: Duration,
    /// Latency of every measured call, in microseconds.
    pub latency_us: Histogram<u64>,
    /// How many measured calls ended with each status code.
    pub statuses: [u64; STATUS_CODES],
}

/// gRPC status codes run from 0 (OK) to 16 (UNAUTHENTICATED).
pub const STATUS_CODES: usize = 17;

impl Measurement {
    pub(super) fn empty(call_timeout: Duration) -> anyhow::Result<Self> {
        // Latencies up to twice the call timeout (a timed-out call is
        // recorded as long as it took), three significant figures.
        let max_us = u64::try_from(call_timeout.as_micros())
            .unwrap_or(u64::MAX / 4)
            .saturating_mul(2)
            .max(2);
        Ok(Measurement {
            calls: 0,
            elapsed: Duration::ZERO,
            latency_us: Histogram::new_with_bounds(1, max_us, 3)
                .map_err(|e| anyhow!("latency histogram: {e}"))?,
            statuses: [0; STATUS_CODES],
        })
    }

    pub(super) fn record(&mut self, code: Code, took: Duration) {
        self.calls += 1;
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        self.latency_us.saturating_record(us);
        if let Some(count) = usize::try_from(code as i32)
            .ok()
            .and_then(|i| self.statuses.get_mut(i))
        {
            *count += 1;
        }
    }

    fn merge(&mut self, other: &Measurement) -> anyhow::Result<()> {
        self.calls += other.calls;
        self.latency_us
            .add(&other.latency_us)
            .map_err(|e| anyhow!("merging latency histograms: {e:?}"))?;
        for (sum, count) in self.statuses.iter_mut().zip(other.statuses) {
            *sum += count;
        }
        Ok(())
    }
}

/// What the workers and the controller share.
struct Shared {
    /// Set at the end of the warm-up: calls started after it are measured.
    measuring: AtomicBool,
    /// Set at the end of the duration: no worker starts another call.
    stop: AtomicBool,
    /// Measured calls started, against the request budget.
    started: AtomicU64,
    /// Calls answered so far (warm-up included), for the progress line.
    answered: AtomicU64,
    budget: Option<u64>,
}

/// Ctrl-C, as the runs see it: whether a run is under way, and whether
/// the operator has asked it to end.
pub struct Interrupt {
    requested: watch::Sender<bool>,
    in_run: AtomicBool,
}

/// What the process exits with after Ctrl-C outside a run (128 + SIGINT).
const INTERRUPTED_EXIT: i32 = 130;

impl Interrupt {
    /// Listens for Ctrl-C from now on.
    pub fn listen() -> Arc<Self> {
        let interrupt = Arc::new(Interrupt {
            requested: watch::channel(false).0,
            in_run: AtomicBool::new(false),
        });
        let listening = interrupt.clone();
        tokio::spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                if !listening.in_run.load(Ordering::Acquire) || listening.requested() {
                    eprintln!("bench: interrupted");
                    std::process::exit(INTERRUPTED_EXIT);
                }
                eprintln!("bench: interrupted: ending the run and reporting what it measured");
                listening.requested.send_replace(true);
            }
        });
        interrupt
    }

    /// Whether Ctrl-C has ended a run: no other run starts.
    pub fn requested(&self) -> bool {
        *self.requested.borrow()
    }
}

/// Sends one call on each connection first, so that connecting is not
/// measured and a scenario that cannot work at all fails at once with the
/// server's own words rather than as a table of errors.
pub async fn prime(
    rpc: &Rpc,
    channels: &[Channel],
    call_timeout: Duration,
    acks: Option<&Acks>,
) -> anyhow::Result<()> {
    for channel in channels {
        match tokio::time::timeout(call_timeout, rpc.call(channel.clone())).await {
            Ok(Ok(answer)) => {
                if let (Some(acks), Some(record)) = (acks, answer) {
                    acks.acknowledged(rpc.method(), &record);
                }
            }
            Ok(Err(status)) => {
                return Err(crate::failure::GrpcError(status))
                    .with_context(|| format!("the first {} call failed", rpc.method()));
            }
            Err(_) => {
                return Err(anyhow!(
                    "the first {} call took longer than {:?}",
                    rpc.method(),
                    call_timeout
                ));
            }
        }
    }
    Ok(())
}

/// Runs `rpc` in a closed loop over `channels` as `plan` says, printing a
/// progress line to standard error once a second, noting each answered
/// record in `acks`; Ctrl-C ends it early.
pub async fn run(
    label: &str,
    rpc: Arc<Rpc>,
    channels: &[Channel],
    plan: &Plan,
    acks: Option<Arc<Acks>>,
    interrupt: &Interrupt,
) -> anyhow::Result<Measurement> {
    if channels.is_empty() {
        return Err(anyhow!("no connections to load"));
    }
    interrupt.in_run.store(true, Ordering::Release);
    let mut interrupted = interrupt.requested.subscribe();
    let shared = Arc::new(Shared {
        measuring: AtomicBool::new(plan.warmup.is_zero()),
        stop: AtomicBool::new(false),
        started: AtomicU64::new(0),
        answered: AtomicU64::new(0),
        budget: plan.requests,
    });
    let mut workers = tokio::task::JoinSet::new();
    let started = Instant::now();
    for i in 0..plan.in_flight {
        // Worker i of n, at rate r: due every n/r s, first at i/r s.
        let schedule = plan.rate.map(|rate| Schedule {
            next: started + Duration::from_secs_f64(i as f64 / rate),
            every: Duration::from_secs_f64(plan.in_flight as f64 / rate),
        });
        let worker = Worker {
            rpc: rpc.clone(),
            channel: channels[i % channels.len()].clone(),
            shared: shared.clone(),
            call_timeout: plan.call_timeout,
            measurement: Measurement::empty(plan.call_timeout)?,
            schedule,
            acks: acks.clone(),
        };
        workers.spawn(worker.run());
    }
    let progress = plan
        .progress
        .then(|| tokio::spawn(progress(label.to_owned(), shared.clone(), plan.clone())));

    // The warm-up: calls answered but not measured.
    if !plan.warmup.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(plan.warmup) => {}
            _ = interrupted.wait_for(|stop| *stop) => shared.stop.store(true, Ordering::Release),
        }
        shared.measuring.store(true, Ordering::Release);
    }
    let measured_from = Instant::now();
    let mut total = Measurement::empty(plan.call_timeout)?;
    let deadline = tokio::time::sleep(plan.duration);
    tokio::pin!(deadline);
    let mut stopping = false;
    loop {
        tokio::select! {
            () = &mut deadline, if !stopping => {
                shared.stop.store(true, Ordering::Release);
                stopping = true;
            }
            _ = interrupted.wait_for(|stop| *stop), if !stopping => {
                shared.stop.store(true, Ordering::Release);
                stopping = true;
            }
            joined = workers.join_next() => match joined {
                Some(result) => {
                    let measurement = result.context("a load worker failed")?;
                    total.merge(&measurement)?;
                }
                None => break,
            },
        }
    }
    total.elapsed = measured_from.elapsed();
    interrupt.in_run.store(false, Ordering::Release);
    if let Some(progress) = progress {
        progress.abort();
        let _ = progress.await;
        finish_progress_line();
    }
    Ok(total)
}

struct Worker {
    rpc: Arc<Rpc>,
    channel: Channel,
    shared: Arc<Shared>,
    call_timeout: Duration,
    measurement: Measurement,
    schedule: Option<Schedule>,
    acks: Option<Arc<Acks>>,
}

/// When an open-loop worker's next call is due, and how often.
struct Schedule {
    next: Instant,
    every: Duration,
}

impl Worker {
    async fn run(mut self) -> Measurement {
        let shared = &self.shared;
        while !shared.stop.load(Ordering::Acquire) {
            let measured = shared.measuring.load(Ordering::Acquire);
            if measured
                && let Some(budget) = shared.budget
                && shared.started.fetch_add(1, Ordering::Relaxed) >= budget
            {
                break;
            }
            let start = match &mut self.schedule {
                Some(schedule) => {
                    let due = schedule.next;
                    schedule.next += schedule.every;
                    tokio::time::sleep_until(due.into()).await;
                    due
                }
                None => Instant::now(),
            };
            let code =
                match tokio::time::timeout(self.call_timeout, self.rpc.call(self.channel.clone()))
                    .await
                {
                    Ok(Ok(answer)) => {
                        if let (Some(acks), Some(record)) = (&self.acks, answer) {
                            acks.acknowledged(self.rpc.method(), &record);
                        }
                        Code::Ok
                    }
                    Ok(Err(status)) => status.code(),
                    Err(_) => Code::DeadlineExceeded,
                };
            let took = start.elapsed();
            shared.answered.fetch_add(1, Ordering::Relaxed);
            if measured {
                self.measurement.record(code, took);
            }
        }
        self.measurement
    }
}

/// Once a second: `[label] 3.0 s  12345 calls  4115 calls/s` (warm-up
/// included in the count, labelled while it lasts). Rewritten in place on a
/// terminal, one line a second otherwise.
async fn progress(label: String, shared: Arc<Shared>, plan: Plan) {
    let start = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let elapsed = start.elapsed();
        let answered = shared.answered.load(Ordering::Relaxed);
        let phase = if shared.measuring.load(Ordering::Acquire) {
            "measuring"
        } else {
            "warming up"
        };
        let limit = (plan.warmup + plan.duration).as_secs_f64();
        let line = format!(
            "[{label}] {phase} {:>5.1}/{limit:.0} s {answered:>9} calls {:>9.0} calls/s",
            elapsed.as_secs_f64(),
            answered as f64 / elapsed.as_secs_f64().max(1e-9),
        );
        let mut stderr = std::io::stderr().lock();
        let _ = if terminal {
            write!(stderr, "\r{line}\x1b[K")
        } else {
            writeln!(stderr, "{line}")
        };
        let _ = stderr.flush();
    }
}

fn finish_progress_line() {
    if std::io::stderr().is_terminal() {
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "\r\x1b[K");
        let _ = stderr.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_measurement_counts_codes_and_merges() {
        let timeout = Duration::from_secs(1);
        let mut a = Measurement::empty(timeout).expect("histogram");
        a.record(Code::Ok, Duration::from_micros(100));
        a.record(Code::Unavailable, Duration::from_micros(300));
        let mut b = Measurement::empty(timeout).expect("histogram");
        b.record(Code::Ok, Duration::from_secs(5)); // beyond the bound: saturates
        a.merge(&b).expect("same bounds");
        assert_eq!(a.calls, 3);
        assert_eq!(a.statuses[Code::Ok as usize], 2);
        assert_eq!(a.statuses[Code::Unavailable as usize], 1);
        assert_eq!(a.latency_us.len(), 3);
        assert!(a.latency_us.value_at_quantile(0.5) >= 299);
    }
}
