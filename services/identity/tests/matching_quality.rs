//! Measured quality of patient matching over a generated evaluation set
//! (see matching_quality/generator.rs): blocking, scoring and the decision
//! run as the service will run them, candidates only from blocking keys.
//!
//! The full set (10,000 base people; about a second in a debug build) runs
//! with every `cargo test` and asserts the targets; with `--nocapture` it
//! prints the figures quoted in docs/patient-matching.md:
//!
//!     cargo test -p sharedcare-identity --test matching_quality -- --nocapture

#[path = "matching_quality/generator.rs"]
mod generator;

use std::collections::{BTreeMap, HashMap, HashSet};

use generator::{EvalSet, Kind, Record};
use sharedcare_identity::domain::matching::{
    Decision, MATCH_THRESHOLD, PreparedPerson, blocking_keys, decide, score,
};

const SEED: u64 = 0x5EED_0010;

#[derive(Debug, Default)]
struct Figures {
    base_people: usize,
    synthea_people: usize,
    queries: usize,
    duplicates: usize,
    near_misses: usize,
    pairs_scored: usize,
    /// Queries decided Match, and how many of them were right.
    decided_match: usize,
    right_match: usize,
    /// Wrong matches by the kind of query that made them.
    wrong_by_kind: BTreeMap<String, usize>,
    /// Duplicates: matched to their original, offered as possible, found
    /// by blocking at all.
    duplicates_matched: usize,
    duplicates_possible: usize,
    duplicates_blocked: usize,
    /// Near-misses offered as possible (a person decides: correct).
    near_misses_possible: usize,
    largest_candidate_set: usize,
    /// The best score of a pair of different people that no veto stopped:
    /// the margin below the match threshold.
    best_unvetoed_other: f64,
    /// Planted records by kind, and duplicates by each alteration they show.
    planted_by_kind: BTreeMap<String, usize>,
    duplicates_by_alteration: BTreeMap<&'static str, usize>,
    /// Duplicates not matched automatically, by their alterations.
    unmatched_duplicates: BTreeMap<String, usize>,
}

impl Figures {
    fn precision(&self) -> f64 {
        if self.decided_match == 0 {
            1.0
        } else {
            self.right_match as f64 / self.decided_match as f64
        }
    }

    fn recall(&self) -> f64 {
        self.duplicates_matched as f64 / self.duplicates.max(1) as f64
    }

    fn blocking_recall(&self) -> f64 {
        self.duplicates_blocked as f64 / self.duplicates.max(1) as f64
    }
}

/// Indexes the base records by blocking key, then asks about every query
/// record and every base record (against the others), as registration
/// would.
fn evaluate(set: &EvalSet) -> Figures {
    let prepared: Vec<PreparedPerson> = set
        .base
        .iter()
        .map(|r| PreparedPerson::new(r.person.clone()))
        .collect();
    let mut index: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, p) in prepared.iter().enumerate() {
        for key in blocking_keys(p) {
            index.entry(key).or_default().push(i);
        }
    }
    let mut f = Figures {
        base_people: set.base.len(),
        synthea_people: set.synthea,
        ..Figures::default()
    };
    let base_queries = set.base.iter().enumerate().map(|(i, r)| (r, Some(i)));
    let planted = set.queries.iter().map(|r| (r, None));
    for (record, itself) in base_queries.chain(planted) {
        ask(record, itself, &prepared, &index, set, &mut f);
    }
    f
}

fn ask(
    record: &Record,
    itself: Option<usize>,
    prepared: &[PreparedPerson],
    index: &HashMap<String, Vec<usize>>,
    set: &EvalSet,
    f: &mut Figures,
) {
    let query = PreparedPerson::new(record.person.clone());
    let candidates: HashSet<usize> = blocking_keys(&query)
        .iter()
        .filter_map(|k| index.get(k))
        .flatten()
        .copied()
        .filter(|c| Some(*c) != itself)
        .collect();
    f.queries += 1;
    f.pairs_scored += candidates.len();
    f.largest_candidate_set = f.largest_candidate_set.max(candidates.len());
    let scored: Vec<(usize, _)> = candidates
        .iter()
        .map(|c| (*c, score(&query, &prepared[*c])))
        .collect();
    for (c, s) in &scored {
        if s.veto.is_none() && set.base[*c].person_id != record.person_id {
            f.best_unvetoed_other = f.best_unvetoed_other.max(s.score);
        }
    }
    let decision = decide(&scored);
    if let Decision::Match(c) = decision {
        f.decided_match += 1;
        if set.base[c].person_id == record.person_id {
            f.right_match += 1;
        } else {
            *f.wrong_by_kind
                .entry(format!("{:?}", record.kind))
                .or_default() += 1;
        }
    }
    if record.kind != Kind::Base {
        *f.planted_by_kind
            .entry(format!("{:?}", record.kind))
            .or_default() += 1;
    }
    match record.kind {
        Kind::Base => {}
        Kind::Duplicate => {
            f.duplicates += 1;
            let mut shown = record.alterations.clone();
            shown.dedup();
            for alteration in shown {
                *f.duplicates_by_alteration.entry(alteration).or_default() += 1;
            }
            let original = record.person_id;
            if candidates.contains(&original) {
                f.duplicates_blocked += 1;
            }
            match decision {
                Decision::Match(c) if c == original => f.duplicates_matched += 1,
                Decision::Possible(ref cs) if cs.contains(&original) => f.duplicates_possible += 1,
                _ => {}
            }
            if !matches!(decision, Decision::Match(c) if c == original) {
                *f.unmatched_duplicates
                    .entry(record.alterations.join(" + "))
                    .or_default() += 1;
            }
        }
        _ => {
            f.near_misses += 1;
            if matches!(decision, Decision::Possible(_)) {
                f.near_misses_possible += 1;
            }
        }
    }
}

fn report(f: &Figures) {
    println!("matching quality (seed {SEED:#x})");
    println!(
        "  base people {} ({} from Synthea), planted duplicates {}, planted near-misses {}, people in all {}",
        f.base_people,
        f.synthea_people,
        f.duplicates,
        f.near_misses,
        f.base_people + f.near_misses
    );
    println!("  planted records by kind {:?}", f.planted_by_kind);
    println!(
        "  duplicates showing each alteration {:?}",
        f.duplicates_by_alteration
    );
    println!(
        "  queries {}, candidate pairs scored {}, largest candidate set {}",
        f.queries, f.pairs_scored, f.largest_candidate_set
    );
    println!(
        "  Match decisions {}: right {}, wrong {} {:?}",
        f.decided_match,
        f.right_match,
        f.decided_match - f.right_match,
        f.wrong_by_kind
    );
    println!(
        "  best score of two different people without a veto {:.3} (match threshold {MATCH_THRESHOLD})",
        f.best_unvetoed_other
    );
    println!("  precision of Match {:.4}", f.precision());
    println!(
        "  recall of Match {:.4} ({} of {} duplicates)",
        f.recall(),
        f.duplicates_matched,
        f.duplicates
    );
    println!(
        "  duplicates decided Possible (original among them) {}",
        f.duplicates_possible
    );
    println!(
        "  blocking recall {:.4} ({} of {})",
        f.blocking_recall(),
        f.duplicates_blocked,
        f.duplicates
    );
    println!(
        "  near-misses decided Possible {} of {}",
        f.near_misses_possible, f.near_misses
    );
    println!("  duplicates not matched automatically, by alteration:");
    let mut unmatched: Vec<_> = f.unmatched_duplicates.iter().collect();
    unmatched.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (alterations, n) in unmatched {
        println!("    {n:4}  {alterations}");
    }
}

fn assert_targets(f: &Figures) {
    assert!(f.precision() >= 0.999, "precision {:.4}", f.precision());
    assert!(f.recall() >= 0.95, "recall {:.4}", f.recall());
}

#[test]
fn matching_meets_its_targets_on_the_full_set() {
    let set = EvalSet::generate(SEED, 10_000);
    let f = evaluate(&set);
    report(&f);
    assert!(f.synthea_people > 0, "the Synthea sample was not found");
    assert_targets(&f);
}
