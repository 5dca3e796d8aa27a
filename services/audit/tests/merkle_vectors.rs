//! The Merkle module against the RFC 6962 / 9162 known-answer vectors in
//! `shared/data/merkle-vectors/` (transparency-dev/merkle's testdata): every
//! happy path verifies, every mutated negative is rejected, and the proofs
//! the module generates for the vectors' tree equal the vectors' proofs.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use serde::Deserialize;
use sharedcare_audit::domain::{
    Hash,
    merkle::{
        NodeAddr, append, consistency_proof, inclusion_proof, leaf_hash, root, verify_consistency,
        verify_inclusion,
    },
};

/// `shared/` sits beside the repository, here and in CI's clean clone.
fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/merkle-vectors")
}

/// The leaves of the vectors' tree: RFC 6962's test data, as in
/// transparency-dev/merkle's `testonly.LeafInputs`. The roots below confirm it.
const LEAVES: [&[u8]; 8] = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Inclusion {
    leaf_idx: u64,
    tree_size: u64,
    root: String,
    leaf_hash: String,
    proof: Option<Vec<String>>,
    desc: String,
    want_err: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Consistency {
    size1: u64,
    size2: u64,
    root1: String,
    root2: String,
    proof: Option<Vec<String>>,
    desc: String,
    want_err: bool,
}

fn b64(s: &str) -> Vec<u8> {
    STANDARD.decode(s).expect("base64 in a vector")
}

fn b64_all(proof: &Option<Vec<String>>) -> Vec<Vec<u8>> {
    proof.iter().flatten().map(|s| b64(s)).collect()
}

/// Every `*.json` under `kind/`, with its path relative to the vectors.
fn load<T: for<'de> Deserialize<'de>>(kind: &str) -> Vec<(String, T)> {
    let dir = vectors_dir().join(kind);
    let mut files = Vec::new();
    let mut pending = vec![dir.clone()];
    while let Some(d) = pending.pop() {
        let entries = fs::read_dir(&d).unwrap_or_else(|e| {
            panic!(
                "reading {}: {e} (shared/ must sit beside the repository)",
                d.display()
            )
        });
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(&path).expect("vector file");
            let vector = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
            let name = path
                .strip_prefix(vectors_dir())
                .unwrap_or(&path)
                .display()
                .to_string();
            (name, vector)
        })
        .collect()
}

/// The vectors' tree, stored node by node as the audit store keeps it.
fn vector_tree() -> HashMap<NodeAddr, Hash> {
    let leaves: Vec<Hash> = LEAVES.iter().map(|d| leaf_hash(d)).collect();
    let mut nodes = HashMap::new();
    nodes.extend(append(0, &leaves, &nodes).expect("append"));
    nodes
}

#[test]
fn inclusion_vectors() {
    let vectors = load::<Inclusion>("inclusion");
    assert!(
        vectors.len() >= 80,
        "only {} inclusion vectors",
        vectors.len()
    );
    let nodes = vector_tree();
    let (mut happy, mut rejected, mut generated) = (0, 0, 0);
    for (name, v) in &vectors {
        let proof = b64_all(&v.proof);
        let (leaf, root_bytes) = (b64(&v.leaf_hash), b64(&v.root));
        let result = verify_inclusion(&leaf, v.leaf_idx, v.tree_size, &proof, &root_bytes);
        if v.want_err {
            assert!(result.is_err(), "{name} ({}): accepted", v.desc);
            rejected += 1;
            continue;
        }
        assert_eq!(result, Ok(()), "{name} ({}): rejected", v.desc);
        happy += 1;
        // The numbered cases are proofs in the RFC 6962 test tree: ours must
        // be the same hashes.
        if name
            .split('/')
            .nth(1)
            .is_some_and(|c| c.parse::<u32>().is_ok())
        {
            assert_eq!(
                leaf_hash(LEAVES[v.leaf_idx as usize]).0.as_slice(),
                leaf,
                "{name}: leaf"
            );
            assert_eq!(
                root(v.tree_size, &nodes).expect("root").0.as_slice(),
                root_bytes,
                "{name}: root"
            );
            let ours = inclusion_proof(v.leaf_idx, v.tree_size, &nodes).expect("proof");
            let ours: Vec<Vec<u8>> = ours.iter().map(|h| h.to_vec()).collect();
            assert_eq!(ours, proof, "{name}: generated proof");
            generated += 1;
        }
    }
    eprintln!(
        "inclusion: {happy} verified, {rejected} rejected, {generated} generated and matched"
    );
    assert_eq!((happy, generated), (6, 5));
}

#[test]
fn consistency_vectors() {
    let vectors = load::<Consistency>("consistency");
    assert!(
        vectors.len() >= 90,
        "only {} consistency vectors",
        vectors.len()
    );
    let nodes = vector_tree();
    let (mut happy, mut rejected, mut generated) = (0, 0, 0);
    for (name, v) in &vectors {
        let proof = b64_all(&v.proof);
        let (root1, root2) = (b64(&v.root1), b64(&v.root2));
        let result = verify_consistency(v.size1, v.size2, &root1, &root2, &proof);
        if v.want_err {
            assert!(result.is_err(), "{name} ({}): accepted", v.desc);
            rejected += 1;
            continue;
        }
        assert_eq!(result, Ok(()), "{name} ({}): rejected", v.desc);
        happy += 1;
        if name
            .split('/')
            .nth(1)
            .is_some_and(|c| c.parse::<u32>().is_ok())
        {
            for (size, given) in [(v.size1, &root1), (v.size2, &root2)] {
                let ours = root(size, &nodes).expect("root");
                assert_eq!(ours.0.as_slice(), given.as_slice(), "{name}: root {size}");
            }
            let ours = consistency_proof(v.size1, v.size2, &nodes).expect("proof");
            let ours: Vec<Vec<u8>> = ours.iter().map(|h| h.to_vec()).collect();
            assert_eq!(ours, proof, "{name}: generated proof");
            generated += 1;
        }
    }
    eprintln!(
        "consistency: {happy} verified, {rejected} rejected, {generated} generated and matched"
    );
    assert_eq!((happy, generated), (6, 5));
}
