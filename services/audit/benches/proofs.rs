//! Inclusion proofs from stored nodes: generating one, and generating and
//! verifying one, at 1 000 and 1 000 000 entries. Both cost O(log n) node
//! reads and hashes, so the 1M figures should stay within 3× the 1k ones
//! (issue 7's target).
//!
//! `cargo bench -p sharedcare-audit --bench proofs -- --quick`

use std::{collections::HashMap, hint::black_box};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use sharedcare_audit::domain::{
    Hash,
    merkle::{MemoryTree, NodeAddr, append, inclusion_proof, leaf_hash, root, verify_inclusion},
};

struct Tree {
    size: u64,
    leaves: Vec<Hash>,
    nodes: HashMap<NodeAddr, Hash>,
    root: Hash,
}

/// Every node of a tree of `size` entries, as the store would hold them.
fn tree(size: u64) -> Tree {
    let leaves: Vec<Hash> = (0..size).map(|i| leaf_hash(&i.to_be_bytes())).collect();
    let empty: HashMap<NodeAddr, Hash> = HashMap::new();
    let nodes: HashMap<NodeAddr, Hash> = append(0, &leaves, &empty)
        .expect("a batch from the empty tree reads nothing")
        .into_iter()
        .collect();
    let root = root(size, &nodes).expect("root");
    Tree {
        size,
        leaves,
        nodes,
        root,
    }
}

/// Leaf indexes spread over the whole tree, so no single path is measured.
fn indexes(size: u64) -> impl FnMut() -> u64 {
    let mut i = 0u64;
    move || {
        i = i.wrapping_add(1);
        i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % size
    }
}

fn inclusion(c: &mut Criterion) {
    let mut group = c.benchmark_group("inclusion");
    for size in [1_000u64, 1_000_000] {
        let t = tree(size);
        group.bench_with_input(BenchmarkId::new("prove", size), &t, |b, t| {
            let mut next = indexes(t.size);
            b.iter(|| inclusion_proof(black_box(next()), t.size, &t.nodes).expect("proof"));
        });
        // The same nodes laid out densely, one vector per level (as a tiled
        // store would keep them): separates the algorithm's cost from a
        // 100 MB hash map's cache misses.
        let mut levels = MemoryTree::new();
        for leaf in &t.leaves {
            levels.push(*leaf);
        }
        group.bench_with_input(BenchmarkId::new("prove_verify_dense", size), &t, |b, t| {
            let mut next = indexes(t.size);
            b.iter(|| {
                let index = black_box(next());
                let proof = inclusion_proof(index, t.size, &levels).expect("proof");
                verify_inclusion(
                    &t.leaves[index as usize].0,
                    index,
                    t.size,
                    &proof,
                    &t.root.0,
                )
                .expect("verifies");
            });
        });
        group.bench_with_input(BenchmarkId::new("prove_verify", size), &t, |b, t| {
            let mut next = indexes(t.size);
            b.iter(|| {
                let index = black_box(next());
                let proof = inclusion_proof(index, t.size, &t.nodes).expect("proof");
                verify_inclusion(
                    &t.leaves[index as usize].0,
                    index,
                    t.size,
                    &proof,
                    &t.root.0,
                )
                .expect("verifies");
            });
        });
    }
    group.finish();
}

criterion_group!(benches, inclusion);
criterion_main!(benches);
