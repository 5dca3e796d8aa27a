//! The short form of fuzzing, run by `cargo test`: every target over every
//! file of its corpus, then over inputs generated from a fixed seed (edits
//! of the corpus files, and random bytes). Deterministic: a failure names
//! the input, and happens again on the next run.

use std::{panic::AssertUnwindSafe, path::PathBuf};

use rand::{Rng, SeedableRng, rngs::StdRng};
use sharedcare_fuzz::{TARGETS, Target};

/// Generated inputs per target, unless `SHAREDCARE_FUZZ_CASES` says: a
/// second or two each in a debug build on two cores. The token target
/// signs and verifies (slow unoptimised), so it gets fewer.
fn generated(target: &str) -> usize {
    if let Ok(cases) = std::env::var("SHAREDCARE_FUZZ_CASES") {
        return cases.parse().expect("SHAREDCARE_FUZZ_CASES is a number");
    }
    match target {
        "token" => 200,
        _ => 2_000,
    }
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
        .collect()
}

/// A libFuzzer-like edit of a seed: bytes flipped, set, inserted, removed,
/// a run repeated, or another seed spliced in.
fn edit(rng: &mut StdRng, seed: &[u8], seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..rng.gen_range(1..=4) {
        let len = out.len();
        match rng.gen_range(0..7) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                out[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                out[i] = *[0u8, b'"', b'{', b'}', b'[', b'\\', b'.', b'|', 0xff, b'9']
                    .get(rng.gen_range(0..10))
                    .unwrap_or(&0);
            }
            2 => {
                let i = rng.gen_range(0..=len);
                out.insert(i, rng.r#gen());
            }
            3 if len > 0 => {
                let i = rng.gen_range(0..len);
                out.remove(i);
            }
            4 if len > 1 => {
                let a = rng.gen_range(0..len);
                let b = rng.gen_range(a..=len.min(a + 16));
                let run = out[a..b].to_vec();
                let at = rng.gen_range(0..=out.len());
                out.splice(at..at, run);
            }
            5 if !seeds.is_empty() => {
                let other = &seeds[rng.gen_range(0..seeds.len())];
                let at = rng.gen_range(0..=len);
                let from = rng.gen_range(0..=other.len());
                out.truncate(at);
                out.extend_from_slice(&other[from..]);
            }
            _ => {
                let at = rng.gen_range(0..=len);
                out.truncate(at);
            }
        }
    }
    out
}

fn random(rng: &mut StdRng) -> Vec<u8> {
    let len = rng.gen_range(0..=256);
    (0..len).map(|_| rng.r#gen()).collect()
}

fn run(name: &str, target: Target, input: &[u8], what: &str) {
    if std::panic::catch_unwind(AssertUnwindSafe(|| target(input))).is_err() {
        panic!(
            "{name} failed on {what}; the input, hex: {}",
            input.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
    }
}

fn fuzz(name: &str) {
    let (_, target) = *TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no target {name}"));
    let seeds = corpus(name);
    assert!(!seeds.is_empty(), "{name} has no corpus");
    for (i, seed) in seeds.iter().enumerate() {
        run(name, target, seed, &format!("corpus file {i}"));
    }
    let mut rng = StdRng::seed_from_u64(name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }));
    for i in 0..generated(name) {
        let input = if i % 4 == 3 {
            random(&mut rng)
        } else {
            let seed = &seeds[rng.gen_range(0..seeds.len())];
            edit(&mut rng, seed, &seeds)
        };
        run(name, target, &input, &format!("generated input {i}"));
    }
}

#[test]
fn every_target_has_a_test_here_and_a_cargo_fuzz_target() {
    let here = include_str!("targets.rs");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("cargo-fuzz");
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("cargo-fuzz/Cargo.toml");
    for (name, _) in TARGETS {
        assert!(here.contains(&format!("fn {name}()")), "no test for {name}");
        assert!(
            dir.join("fuzz_targets").join(format!("{name}.rs")).exists(),
            "no cargo fuzz target for {name}"
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "{name} is not a [[bin]]"
        );
    }
}

#[test]
fn fhir_intake() {
    fuzz("fhir_intake");
}

#[test]
fn nhs_number() {
    fuzz("nhs_number");
}

#[test]
fn postcode() {
    fuzz("postcode");
}

#[test]
fn birth_date() {
    fuzz("birth_date");
}

#[test]
fn token() {
    fuzz("token");
}

#[test]
fn page_token() {
    fuzz("page_token");
}

#[test]
fn proto_request() {
    fuzz("proto_request");
}

#[test]
fn merkle() {
    fuzz("merkle");
}

#[test]
fn import_line() {
    fuzz("import_line");
}
