//! audit's Merkle proofs and signed tree heads: the inclusion and
//! consistency verifiers (RFC 9162) and the checkpoint notes an auditor
//! checks (C2SP signed notes).
//!
//! The first byte picks what the rest is:
//! - 0: an inclusion check as a client sends it: index, size (u64 LE), then
//!   the leaf hash, the root and the proof hashes, each a length byte and
//!   that many bytes;
//! - 1: a consistency check likewise: old and new size, old root, new root,
//!   proof hashes;
//! - 2: a real inclusion proof in a tree of up to [`MAX_TREE`] leaves, and
//!   edits to it: the proof verifies, no edited one does;
//! - 3: likewise for a real consistency proof;
//! - 4: a checkpoint note, checked with the fuzzing log's key;
//! - 5: a note signed with that key, and edits to it: an edited note reads
//!   as the signed head or not at all;
//! - 6: a verifier key (`<name>+<hex id>+<base64 key>`).

use std::sync::OnceLock;

use sharedcare_audit::domain::{
    Hash,
    checkpoint::{LogSigner, LogVerifierKey},
    merkle::{
        MemoryTree, consistency_proof, inclusion_proof, leaf_hash, verify_consistency,
        verify_inclusion,
    },
};

use crate::input::{Input, mutate};

/// Leaves in the tree real proofs are taken from.
pub const MAX_TREE: u64 = 300;
/// The fuzzing log's name (its checkpoints' origin).
pub const LOG_NAME: &str = "sharedcare-fuzz-log";
const SEED: [u8; 32] = *b"sharedcare fuzz log key, tests!!";

struct Fixture {
    tree: MemoryTree,
    signer: LogSigner,
    verifier: LogVerifierKey,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut tree = MemoryTree::new();
        for i in 0..MAX_TREE {
            tree.push(leaf_hash(&i.to_be_bytes()));
        }
        let signer = LogSigner::new(LOG_NAME, ed25519_dalek::SigningKey::from_bytes(&SEED))
            .expect("a valid log name");
        let verifier = signer.verifier();
        Fixture {
            tree,
            signer,
            verifier,
        }
    })
}

/// A checkpoint of the fuzzing log, as audit serves it.
pub fn signed_note_text(size: u64, root: [u8; 32]) -> String {
    fixture().signer.sign(size, Hash(root)).note
}

/// The fuzzing log's verifier key, as an auditor is given it.
pub fn verifier_key_text() -> String {
    fixture().verifier.to_string()
}

/// A length byte and that many bytes.
fn item<'a>(input: &mut Input<'a>) -> &'a [u8] {
    let len = usize::from(input.u8());
    input.take(len)
}

fn items<'a>(input: &mut Input<'a>) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    while !input.is_empty() {
        out.push(item(input));
    }
    out
}

/// Leaf `index` of the fixture's tree.
fn leaf(index: u64) -> Hash {
    leaf_hash(&index.to_be_bytes())
}

fn flip(hash: &mut Hash, input: &mut Input<'_>) {
    let at = usize::from(input.u8()) % hash.0.len();
    hash.0[at] ^= input.u8().max(1);
}

/// Edits a proof's list: a hash changed, dropped, repeated, moved or added.
/// `None` when the edit would change nothing.
fn edit_proof(proof: &[Hash], input: &mut Input<'_>) -> Option<Vec<Hash>> {
    let mut out = proof.to_vec();
    let op = input.u8() % 5;
    let i = usize::from(input.u8());
    let j = usize::from(input.u8());
    match op {
        0 if !out.is_empty() => {
            let k = i % out.len();
            flip(&mut out[k], input);
        }
        1 if !out.is_empty() => {
            out.remove(i % out.len());
        }
        2 if !out.is_empty() => {
            let k = i % out.len();
            out.insert(j % (out.len() + 1), out[k]);
        }
        3 if out.len() > 1 => {
            let (a, b) = (i % out.len(), j % out.len());
            if a == b {
                return None;
            }
            out.swap(a, b);
        }
        _ => out.insert(i % (out.len() + 1), leaf_hash(&[input.u8()])),
    }
    (out != proof).then_some(out)
}

pub fn merkle(data: &[u8]) {
    let mut input = Input::new(data);
    match input.u8() % 7 {
        0 => {
            let (index, size) = (input.u64(), input.u64());
            let (leaf, root) = (item(&mut input), item(&mut input));
            let proof = items(&mut input);
            if verify_inclusion(leaf, index, size, &proof, root).is_ok() {
                assert!(index < size);
                assert!(proof.iter().all(|p| p.len() == 32));
            }
        }
        1 => {
            let (old, new) = (input.u64(), input.u64());
            let (old_root, new_root) = (item(&mut input), item(&mut input));
            let proof = items(&mut input);
            if verify_consistency(old, new, old_root, new_root, &proof).is_ok() {
                assert!(0 < old && old <= new);
                assert!(proof.iter().all(|p| p.len() == 32));
            }
        }
        2 => inclusion(&mut input),
        3 => consistency(&mut input),
        4 => {
            if let Ok(note) = std::str::from_utf8(input.rest()) {
                checkpoint(note);
            }
        }
        5 => signed_note(&mut input),
        _ => {
            let Ok(text) = std::str::from_utf8(input.rest()) else {
                return;
            };
            if let Ok(key) = LogVerifierKey::parse(text) {
                let written = key.to_string();
                assert_eq!(LogVerifierKey::parse(&written).ok(), Some(key));
            }
        }
    }
}

fn inclusion(input: &mut Input<'_>) {
    let tree = &fixture().tree;
    let size = 1 + u64::from(input.u16()) % MAX_TREE;
    let index = u64::from(input.u16()) % size;
    let proof = inclusion_proof(index, size, tree).expect("a proof within the tree");
    let root = tree.root(size).expect("a root within the tree");
    let leaf = leaf(index);
    assert_eq!(
        verify_inclusion(&leaf.0, index, size, &proof, &root.0),
        Ok(())
    );

    let (mut leaf2, mut root2, mut index2, mut proof2) = (leaf, root, index, proof.clone());
    match input.u8() % 4 {
        0 => flip(&mut leaf2, input),
        1 => flip(&mut root2, input),
        2 => {
            index2 = u64::from(input.u16()) % size;
            if index2 == index {
                return;
            }
        }
        _ => match edit_proof(&proof, input) {
            Some(edited) => proof2 = edited,
            None => return,
        },
    }
    assert!(
        verify_inclusion(&leaf2.0, index2, size, &proof2, &root2.0).is_err(),
        "an edited inclusion proof verified (leaf {index} of {size})"
    );
}

fn consistency(input: &mut Input<'_>) {
    let tree = &fixture().tree;
    let new = 1 + u64::from(input.u16()) % MAX_TREE;
    let old = 1 + u64::from(input.u16()) % new;
    let proof = consistency_proof(old, new, tree).expect("a proof within the tree");
    let old_root = tree.root(old).expect("a root within the tree");
    let new_root = tree.root(new).expect("a root within the tree");
    assert_eq!(
        verify_consistency(old, new, &old_root.0, &new_root.0, &proof),
        Ok(())
    );

    let (mut old2, mut new2, mut proof2) = (old_root, new_root, proof.clone());
    match input.u8() % 3 {
        0 => flip(&mut old2, input),
        1 => flip(&mut new2, input),
        _ => match edit_proof(&proof, input) {
            Some(edited) => proof2 = edited,
            None => return,
        },
    }
    assert!(
        verify_consistency(old, new, &old2.0, &new2.0, &proof2).is_err(),
        "an edited consistency proof verified ({old} to {new})"
    );
}

/// A note that verifies begins with the head it reads as, and its signed
/// part is exactly what the key signed.
fn checkpoint(note: &str) {
    let Ok(head) = fixture().verifier.verify(note) else {
        return;
    };
    assert!(note.starts_with(&head.body()), "{note:?}");
    assert_eq!(head.origin, LOG_NAME);
}

fn signed_note(input: &mut Input<'_>) {
    let size = input.u64();
    let mut root = [0u8; 32];
    let got = input.take(32);
    root[..got.len()].copy_from_slice(got);
    let signed = fixture().signer.sign(size, Hash(root));
    let verifier = &fixture().verifier;
    assert_eq!(verifier.verify(&signed.note).as_ref(), Ok(&signed.head));

    let edited = mutate(signed.note.as_bytes(), input);
    let Ok(edited) = String::from_utf8(edited) else {
        return;
    };
    checkpoint(&edited);
    if let Ok(head) = verifier.verify(&edited) {
        assert_eq!(head, signed.head, "an edited note read as another head");
        let body = signed.head.body();
        assert_eq!(
            edited.get(..=body.len()),
            Some(format!("{body}\n").as_str()),
            "an edited note verified with an edited body"
        );
    }
}
