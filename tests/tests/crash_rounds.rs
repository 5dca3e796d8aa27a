//! Crash rounds: the four services as separate processes (on SQLite, and
//! on PostgreSQL when `SHAREDCARE_TEST_DATABASE_URL` is set) under load
//! from the load tool — `sharedcare bench` writing (create-record) and
//! reading (get-record) beside each other — and, each round, one service
//! (or, now and then, all four at once, as a power cut would) killed with
//! SIGKILL at a random moment, started again on the same port with the
//! same environment, and the load let run on a moment before it stops.
//! After each round the checks of `sharedcare_tests::crash` hold: nothing
//! acknowledged is lost or changed, every acknowledged access is audited,
//! exactly once for a write, no audit event is lost or duplicated, the
//! outboxes drain, `sharedcare audit verify` passes.
//!
//! Short by default (3 rounds per backend); `SHAREDCARE_CRASH_ROUNDS=20`
//! for the full length. Which service and when come from a seeded RNG: the
//! seed is printed, and `SHAREDCARE_CRASH_SEED` replays its choices.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};
use sharedcare_kit::testing::TestDatabase;
use sharedcare_tests::{
    Backend, Service,
    crash::{self, Observer, median_max},
    load::{Errors, Loaded, WritesAndReads},
    processes::Processes,
};

/// Rounds per backend when `SHAREDCARE_CRASH_ROUNDS` is not set.
const SHORT_ROUNDS: usize = 3;
/// How long the load runs on once the killed service is serving again.
const LOAD_AFTER_RESTART: Duration = Duration::from_secs(1);

/// What a round kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    One(Service),
    /// All four at once.
    All,
}

impl std::fmt::Display for Victim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Victim::One(service) => write!(f, "{service}"),
            Victim::All => f.write_str("all four"),
        }
    }
}

/// One round's figures.
struct Round {
    victim: Victim,
    writes: usize,
    reads: usize,
    /// From the kill until every killed service was SERVING again.
    to_serving: Duration,
    loads: Vec<Loaded>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_rounds_on_sqlite() {
    crash_rounds(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_rounds_on_postgres() {
    let Some(db) = TestDatabase::postgres("crash_rounds_on_postgres").await else {
        return;
    };
    crash_rounds(Backend::Postgres(db)).await;
}

async fn crash_rounds(backend: Backend) {
    let name = backend.name();
    let test = format!("crash rounds on {name}");
    let rounds = crash::rounds(SHORT_ROUNDS);
    let seed = crash::seed(&test);
    let mut rng = StdRng::seed_from_u64(seed);
    let files = tempfile::tempdir().expect("temp dir");
    let mut platform = Processes::start(backend).await;
    let observer = Observer::new(&platform).await;
    let fail = |platform: &Processes, round: usize, what: String| -> ! {
        panic!(
            "{test}, round {round} (seed {seed}): {what}\n{}",
            platform.logs()
        )
    };

    // Every service in turn (and all at once), in a shuffled order, so a
    // short run still kills different ones.
    let mut victims = Vec::new();
    let mut all_acks = Vec::new();
    let mut figures = Vec::new();
    for round in 1..=rounds {
        if victims.is_empty() {
            victims = Service::ALL.map(Victim::One).to_vec();
            victims.push(Victim::All);
            victims.shuffle(&mut rng);
        }
        let victim = victims.pop().expect("a victim");
        let moment = Duration::from_millis(rng.gen_range(200..=2000));

        let label = format!("round{round}");
        let load = WritesAndReads::start(&platform, files.path(), &label).await;
        tokio::time::sleep(moment).await;

        let killed = Instant::now();
        let restart = match victim {
            Victim::One(service) => vec![service],
            Victim::All => vec![
                Service::Identity,
                Service::Audit,
                Service::Consent,
                Service::Records,
            ],
        };
        for service in &restart {
            platform.kill(*service);
        }
        for service in &restart {
            platform.start_service(*service).await;
        }
        let to_serving = killed.elapsed();
        tokio::time::sleep(LOAD_AFTER_RESTART).await;
        let loads = load.stop().await;

        if let Err(e) = platform.check_running() {
            fail(&platform, round, e);
        }
        let checked = match observer.check(&platform, &loads, &[]).await {
            Ok(checked) => checked,
            Err(e) => fail(&platform, round, format!("killed {victim}: {e}")),
        };
        all_acks.extend(loads.iter().flat_map(|l| l.acks.iter().cloned()));
        let round_figures = Round {
            victim,
            writes: checked.writes,
            reads: checked.reads,
            to_serving,
            loads,
        };
        eprintln!(
            "{test}: round {round}/{rounds}: killed {victim} after {:.2} s of load; SERVING \
             again {:.2} s after the kill; acknowledged {} writes, {} reads; errors {}; \
             audit log {} entries; checks passed",
            moment.as_secs_f64(),
            to_serving.as_secs_f64(),
            round_figures.writes,
            round_figures.reads,
            Errors::of(&round_figures.loads),
            checked.entries,
        );
        figures.push(round_figures);
    }

    // Nothing acknowledged in an earlier round was lost in a later one.
    if let Err(e) = observer.check(&platform, &[], &all_acks).await {
        fail(&platform, rounds, format!("after the last round: {e}"));
    }
    summarise(&test, &figures);
    platform.stop().await;
}

fn summarise(test: &str, rounds: &[Round]) {
    let times: Vec<Duration> = rounds.iter().map(|r| r.to_serving).collect();
    let (median, max) = median_max(&times);
    let mut errors = Errors::default();
    for round in rounds {
        errors.add(&round.loads);
    }
    let killed = |victim: Victim| rounds.iter().filter(|r| r.victim == victim).count();
    eprintln!(
        "{test}: {} rounds (killed identity {}, consent {}, records {}, audit {}, all four {}); \
         acknowledged {} writes, {} reads; errors {}; SERVING again after a kill: median {:.2} s, \
         max {:.2} s",
        rounds.len(),
        killed(Victim::One(Service::Identity)),
        killed(Victim::One(Service::Consent)),
        killed(Victim::One(Service::Records)),
        killed(Victim::One(Service::Audit)),
        killed(Victim::All),
        rounds.iter().map(|r| r.writes).sum::<usize>(),
        rounds.iter().map(|r| r.reads).sum::<usize>(),
        errors,
        median.as_secs_f64(),
        max.as_secs_f64(),
    );
}
