//! The log's Merkle tree, as RFC 6962 / RFC 9162 define it, in the form the
//! store keeps it.
//!
//! ```text
//! leaf hash   SHA-256(0x00 || canonical event bytes)
//! node hash   SHA-256(0x01 || left || right)
//! empty tree  SHA-256("")
//! ```
//!
//! # Storage model
//!
//! Only *perfect* subtrees are stored, each once, when it is formed. The node
//! at [`NodeAddr`] `(level, index)` is the hash of the 2^level leaves
//! `[index·2^level, (index+1)·2^level)`; level 0 holds the leaf hashes. A node
//! never changes once written, so every past tree stays readable.
//!
//! Appending leaf number `p` (so the size goes from `p` to `p + 1`) forms the
//! nodes `(l, p >> l)` for `l = 0 ..= trailing_ones(p)`: leaf `p` completes
//! one perfect subtree at each level where `p + 1` is a multiple of 2^l. Each
//! new node above level 0 reads its left sibling `(l - 1, (p >> (l - 1)) - 1)`.
//! That is 2 writes per append amortised and `1 + log₂ n` at worst.
//!
//! Any tree of size `n` — the current one or any past one — is the perfect
//! subtrees of `n`'s binary decomposition, largest first (`13 = 8 + 4 + 1`:
//! leaves `[0, 8)`, `[8, 12)`, `[12, 13)`), and its root is those folded right
//! to left with [`node_hash`]. So a root costs at most `log₂ n` reads and an
//! inclusion or consistency proof at most `2·log₂ n`, never a rehash of the
//! log.
//!
//! # Reading
//!
//! [`root`], [`inclusion_proof`], [`consistency_proof`] and [`append`] read
//! nodes one at a time through a [`NodeReader`]. A store that would rather
//! fetch them in one query asks [`root_reads`], [`inclusion_reads`],
//! [`consistency_reads`] or [`append_reads`] for exactly the addresses the
//! computation will read, loads them into a `HashMap<NodeAddr, Hash>` (which
//! is a `NodeReader`), and runs the computation over that map.
//!
//! # Verifying
//!
//! [`verify_inclusion`] and [`verify_consistency`] follow RFC 9162 §2.1.3.2
//! and §2.1.4.2. They take hashes as byte slices, as they arrive from the
//! wire, and never panic: any size, index, proof length or hash length is
//! answered with a [`VerifyError`] naming what is wrong.

use std::{collections::HashMap, fmt, hash::BuildHasher};

use sha2::{Digest, Sha256};

use super::entry::{HASH_LEN, Hash};

/// Prefixed to a leaf's bytes before hashing (RFC 6962 §2.1).
pub const LEAF_PREFIX: u8 = 0x00;
/// Prefixed to two child hashes before hashing (RFC 6962 §2.1).
pub const NODE_PREFIX: u8 = 0x01;

/// The root of the empty tree: SHA-256 of the empty string.
pub const EMPTY_ROOT: Hash = Hash([
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
]);

/// A proof is a list of hashes; received ones are checked as byte slices.
impl AsRef<[u8]> for Hash {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// The hash of a leaf: SHA-256(0x00 || data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([LEAF_PREFIX]);
    hasher.update(data);
    Hash(hasher.finalize().into())
}

/// The hash of an interior node: SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([NODE_PREFIX]);
    hasher.update(left.0);
    hasher.update(right.0);
    Hash(hasher.finalize().into())
}

/// Where a stored node sits: the perfect subtree of 2^`level` leaves that
/// starts at leaf `index`·2^`level`. Level 0 is the leaves themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddr {
    pub level: u8,
    pub index: u64,
}

impl NodeAddr {
    pub const fn new(level: u8, index: u64) -> NodeAddr {
        NodeAddr { level, index }
    }

    /// The node holding leaf `index`'s hash.
    pub const fn leaf(index: u64) -> NodeAddr {
        NodeAddr { level: 0, index }
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, {})", self.level, self.index)
    }
}

/// Reads stored nodes. Only addresses of nodes that exist in a tree of the
/// size being asked about are ever requested.
pub trait NodeReader {
    type Error;

    fn node(&self, addr: NodeAddr) -> Result<Hash, Self::Error>;
}

/// A node a map was asked for but does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("node {0} is not stored")]
pub struct MissingNode(pub NodeAddr);

/// Nodes fetched in advance (see the `*_reads` functions), or a whole tree
/// kept in memory.
impl<S: BuildHasher> NodeReader for HashMap<NodeAddr, Hash, S> {
    type Error = MissingNode;

    fn node(&self, addr: NodeAddr) -> Result<Hash, MissingNode> {
        self.get(&addr).copied().ok_or(MissingNode(addr))
    }
}

/// Sizes or positions that cannot be asked about, whatever the log holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("old tree size {old} is greater than new tree size {new}")]
    SizesOutOfOrder { old: u64, new: u64 },
    #[error("old tree size is 0: every tree extends the empty tree, there is nothing to prove")]
    EmptyOldTree,
    #[error("appending {count} leaves to a tree of {size} overflows the tree size")]
    TooLarge { size: u64, count: u64 },
}

/// Why a root, proof or append could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum TreeError<E> {
    #[error(transparent)]
    Range(#[from] RangeError),
    #[error("reading node {addr}")]
    Read {
        addr: NodeAddr,
        #[source]
        source: E,
    },
}

fn read<R: NodeReader + ?Sized>(reader: &R, addr: NodeAddr) -> Result<Hash, TreeError<R::Error>> {
    reader
        .node(addr)
        .map_err(|source| TreeError::Read { addr, source })
}

/// The largest power of two below `width`, for `width >= 2` (RFC 9162's k).
fn split(width: u64) -> u64 {
    1 << (u64::BITS - 1 - (width - 1).leading_zeros())
}

/// Appends the perfect subtrees that make up leaves `[lo, hi)`, largest
/// first. Every range the proofs below ask about is either a perfect aligned
/// subtree or a right edge `[lo, n)` with `lo` a multiple of a power of two
/// at least `n - lo`, so the pieces are always stored nodes.
fn range_nodes(lo: u64, hi: u64, out: &mut Vec<NodeAddr>) {
    let mut start = lo;
    let mut rest = hi - lo;
    while rest > 0 {
        let level = u64::BITS - 1 - rest.leading_zeros();
        let width = 1u64 << level;
        debug_assert_eq!(
            start % width,
            0,
            "range [{lo}, {hi}) is not made of stored nodes"
        );
        out.push(NodeAddr::new(level as u8, start >> level));
        start += width;
        rest -= width;
    }
}

/// The RFC 6962 hash of leaves `[lo, hi)`, from its perfect subtrees.
fn range_hash<R: NodeReader + ?Sized>(
    lo: u64,
    hi: u64,
    reader: &R,
) -> Result<Hash, TreeError<R::Error>> {
    let mut nodes = Vec::new();
    range_nodes(lo, hi, &mut nodes);
    let mut acc: Option<Hash> = None;
    for addr in nodes.into_iter().rev() {
        let hash = read(reader, addr)?;
        acc = Some(match acc {
            None => hash,
            Some(right) => node_hash(&hash, &right),
        });
    }
    Ok(acc.unwrap_or(EMPTY_ROOT))
}

fn ranges_nodes(ranges: &[(u64, u64)]) -> Vec<NodeAddr> {
    let mut out = Vec::new();
    for &(lo, hi) in ranges {
        range_nodes(lo, hi, &mut out);
    }
    out
}

fn ranges_hashes<R: NodeReader + ?Sized>(
    ranges: &[(u64, u64)],
    reader: &R,
) -> Result<Vec<Hash>, TreeError<R::Error>> {
    ranges
        .iter()
        .map(|&(lo, hi)| range_hash(lo, hi, reader))
        .collect()
}

/// The leaf ranges whose hashes make up PATH(index, D[size]) of RFC 9162
/// §2.1.3.1, in proof order (nearest the leaf first).
fn inclusion_ranges(index: u64, size: u64) -> Result<Vec<(u64, u64)>, RangeError> {
    if index >= size {
        return Err(RangeError::IndexOutOfRange { index, size });
    }
    let (mut lo, mut hi) = (0, size);
    let mut ranges = Vec::new();
    while hi - lo > 1 {
        let k = split(hi - lo);
        if index < lo + k {
            ranges.push((lo + k, hi));
            hi = lo + k;
        } else {
            ranges.push((lo, lo + k));
            lo += k;
        }
    }
    ranges.reverse();
    Ok(ranges)
}

/// The leaf ranges whose hashes make up PROOF(old, D[new]) of RFC 9162
/// §2.1.4.1, in proof order.
fn consistency_ranges(old: u64, new: u64) -> Result<Vec<(u64, u64)>, RangeError> {
    if old > new {
        return Err(RangeError::SizesOutOfOrder { old, new });
    }
    if old == 0 {
        return Err(RangeError::EmptyOldTree);
    }
    // SUBPROOF(old - lo, D[lo:hi], whole), iteratively; lo < old <= hi holds.
    let (mut lo, mut hi, mut whole) = (0, new, true);
    let mut ranges = Vec::new();
    while old != hi {
        let k = split(hi - lo);
        if old - lo <= k {
            ranges.push((lo + k, hi));
            hi = lo + k;
        } else {
            ranges.push((lo, lo + k));
            lo += k;
            whole = false;
        }
    }
    if !whole {
        ranges.push((lo, hi));
    }
    ranges.reverse();
    Ok(ranges)
}

/// The nodes [`root`] reads for a tree of `size` leaves: its binary
/// decomposition, largest subtree first. Empty for the empty tree.
pub fn root_reads(size: u64) -> Vec<NodeAddr> {
    let mut out = Vec::new();
    range_nodes(0, size, &mut out);
    out
}

/// The root of the tree of the first `size` leaves (any past size).
pub fn root<R: NodeReader + ?Sized>(size: u64, reader: &R) -> Result<Hash, TreeError<R::Error>> {
    range_hash(0, size, reader)
}

/// The nodes [`inclusion_proof`] reads for leaf `index` in a tree of `size`.
pub fn inclusion_reads(index: u64, size: u64) -> Result<Vec<NodeAddr>, RangeError> {
    Ok(ranges_nodes(&inclusion_ranges(index, size)?))
}

/// The audit path of leaf `index` in the tree of the first `size` leaves
/// (RFC 9162 §2.1.3.1), nearest the leaf first.
pub fn inclusion_proof<R: NodeReader + ?Sized>(
    index: u64,
    size: u64,
    reader: &R,
) -> Result<Vec<Hash>, TreeError<R::Error>> {
    ranges_hashes(&inclusion_ranges(index, size)?, reader)
}

/// The nodes [`consistency_proof`] reads for sizes `old` and `new`.
pub fn consistency_reads(old: u64, new: u64) -> Result<Vec<NodeAddr>, RangeError> {
    Ok(ranges_nodes(&consistency_ranges(old, new)?))
}

/// The proof that the tree of `new` leaves extends the tree of `old` leaves
/// (RFC 9162 §2.1.4.1). Empty when the sizes are equal; `old` must be at
/// least 1.
pub fn consistency_proof<R: NodeReader + ?Sized>(
    old: u64,
    new: u64,
    reader: &R,
) -> Result<Vec<Hash>, TreeError<R::Error>> {
    ranges_hashes(&consistency_ranges(old, new)?, reader)
}

/// The nodes [`append`] reads to add `count` leaves to a tree of
/// `size_before`: those subtrees of `size_before`'s decomposition that get a
/// right sibling from the new leaves. At most `log₂ size_before`; none when
/// the batch is a single leaf at an even position.
pub fn append_reads(size_before: u64, count: u64) -> Result<Vec<NodeAddr>, RangeError> {
    let size_after = size_before.checked_add(count).ok_or(RangeError::TooLarge {
        size: size_before,
        count,
    })?;
    // Every decomposition node has an even index: its right sibling ends at
    // (index + 2)·2^level.
    Ok(root_reads(size_before)
        .into_iter()
        .filter(|addr| (u128::from(addr.index) + 2) << addr.level <= u128::from(size_after))
        .collect())
}

/// The nodes formed by appending `leaves` (leaf hashes, see [`leaf_hash`])
/// to a tree of `size_before` leaves, in the order they are formed: for each
/// leaf, the leaf itself and then every subtree it completes. Storing them
/// all makes the tree of `size_before + leaves.len()` readable.
pub fn append<R: NodeReader + ?Sized>(
    size_before: u64,
    leaves: &[Hash],
    reader: &R,
) -> Result<Vec<(NodeAddr, Hash)>, TreeError<R::Error>> {
    let count = leaves.len() as u64;
    if size_before.checked_add(count).is_none() {
        return Err(RangeError::TooLarge {
            size: size_before,
            count,
        }
        .into());
    }
    // The latest node with an even index formed in this batch, per level: the
    // left sibling the next node at that level pairs with.
    let mut pending: Vec<Option<(u64, Hash)>> = vec![None; u64::BITS as usize];
    let mut formed = Vec::with_capacity(leaves.len() * 2 + 1);
    for (offset, leaf) in (0u64..).zip(leaves) {
        let mut hash = *leaf;
        let mut index = size_before + offset;
        let mut level = 0u8;
        loop {
            formed.push((NodeAddr::new(level, index), hash));
            if index.is_multiple_of(2) {
                pending[usize::from(level)] = Some((index, hash));
                break;
            }
            let left = NodeAddr::new(level, index - 1);
            let left_hash = match pending[usize::from(level)] {
                Some((i, h)) if i == left.index => h,
                _ => read(reader, left)?,
            };
            hash = node_hash(&left_hash, &hash);
            index /= 2;
            level += 1;
        }
    }
    Ok(formed)
}

/// The right edge of a tree: the nodes of its size's decomposition, which
/// are all that appending to it reads. The sequencer keeps one between
/// batches, so an append reads no node from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: HashMap<NodeAddr, Hash>,
}

impl Frontier {
    /// The empty tree's.
    pub fn empty() -> Self {
        Frontier {
            size: 0,
            nodes: HashMap::new(),
        }
    }

    /// The frontier of a tree of `size` from its [`root_reads`] nodes
    /// (extra nodes are dropped; a missing one is named).
    pub fn new(size: u64, nodes: &HashMap<NodeAddr, Hash>) -> Result<Self, MissingNode> {
        let nodes = root_reads(size)
            .into_iter()
            .map(|addr| nodes.node(addr).map(|hash| (addr, hash)))
            .collect::<Result<_, _>>()?;
        Ok(Frontier { size, nodes })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn root(&self) -> Hash {
        // Every node root() reads is held.
        root(self.size, &self.nodes).unwrap_or(EMPTY_ROOT)
    }

    /// Appends `leaves`; returns the nodes formed, in order, for the store.
    /// (append reads only nodes of the old decomposition, all held, so a
    /// missing node here is a broken frontier.)
    pub fn extend(
        &mut self,
        leaves: &[Hash],
    ) -> Result<Vec<(NodeAddr, Hash)>, TreeError<MissingNode>> {
        let formed = append(self.size, leaves, &self.nodes)?;
        let size = self.size + leaves.len() as u64;
        let mut all = std::mem::take(&mut self.nodes);
        all.extend(formed.iter().copied());
        *self = Frontier::new(size, &all).map_err(|source| TreeError::Read {
            addr: source.0,
            source,
        })?;
        Ok(formed)
    }
}

/// A whole tree in memory, one vector per level: what an auditor builds
/// from the entries it fetched, to compare roots of any size with the log's.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    pub fn new() -> Self {
        Self::default()
    }

    /// Leaves so far.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| leaves.len() as u64)
    }

    /// Appends a leaf hash and every perfect subtree it completes.
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let nodes = &mut self.levels[level];
            nodes.push(hash);
            if nodes.len() % 2 == 1 {
                return;
            }
            hash = node_hash(&nodes[nodes.len() - 2], &hash);
            level += 1;
        }
    }

    /// The root of the first `size` leaves (`size` at most [`Self::size`]).
    pub fn root(&self, size: u64) -> Result<Hash, TreeError<MissingNode>> {
        root(size, self)
    }
}

impl NodeReader for MemoryTree {
    type Error = MissingNode;

    fn node(&self, addr: NodeAddr) -> Result<Hash, MissingNode> {
        self.levels
            .get(usize::from(addr.level))
            .and_then(|level| level.get(usize::try_from(addr.index).ok()?))
            .copied()
            .ok_or(MissingNode(addr))
    }
}

/// Which hash of a proof check was malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashField {
    LeafHash,
    Root,
    OldRoot,
    NewRoot,
    /// Position in the proof, from 0.
    Proof(usize),
}

impl fmt::Display for HashField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashField::LeafHash => f.write_str("the leaf hash"),
            HashField::Root => f.write_str("the root"),
            HashField::OldRoot => f.write_str("the old root"),
            HashField::NewRoot => f.write_str("the new root"),
            HashField::Proof(i) => write!(f, "proof hash {i}"),
        }
    }
}

/// Why a proof does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Range(#[from] RangeError),
    #[error("{field} is {len} bytes, not {HASH_LEN}")]
    HashLength { field: HashField, len: usize },
    #[error("the proof has {got} hashes where {want} are needed")]
    ProofLength { got: usize, want: usize },
    #[error("the proof leads to a different root")]
    RootMismatch,
    #[error("the proof leads to a different old root")]
    OldRootMismatch,
    #[error("the proof leads to a different new root")]
    NewRootMismatch,
    #[error("the sizes are equal but the roots differ")]
    RootsDiffer,
}

fn to_hash(field: HashField, bytes: &[u8]) -> Result<Hash, VerifyError> {
    Hash::from_slice(bytes).ok_or(VerifyError::HashLength {
        field,
        len: bytes.len(),
    })
}

fn proof_hashes<P: AsRef<[u8]>>(proof: &[P]) -> Result<Vec<Hash>, VerifyError> {
    proof
        .iter()
        .enumerate()
        .map(|(i, p)| to_hash(HashField::Proof(i), p.as_ref()))
        .collect()
}

/// Splits leaf `index`'s path in a tree of `size` (index < size) into the
/// part below the point where it leaves the right edge ("inner") and the
/// right-edge part above it ("border").
fn decompose_inclusion(index: u64, size: u64) -> (u32, u32) {
    let inner = u64::BITS - (index ^ (size - 1)).leading_zeros();
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner, border)
}

/// Checks that `leaf_hash` is leaf `index` of the tree of `size` leaves with
/// `root`, by the audit path `proof` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion<P: AsRef<[u8]>>(
    leaf_hash: &[u8],
    index: u64,
    size: u64,
    proof: &[P],
    root: &[u8],
) -> Result<(), VerifyError> {
    if index >= size {
        return Err(RangeError::IndexOutOfRange { index, size }.into());
    }
    let (inner, border) = decompose_inclusion(index, size);
    let want = (inner + border) as usize;
    if proof.len() != want {
        return Err(VerifyError::ProofLength {
            got: proof.len(),
            want,
        });
    }
    let leaf = to_hash(HashField::LeafHash, leaf_hash)?;
    let root = to_hash(HashField::Root, root)?;
    let proof = proof_hashes(proof)?;

    let (mut f, mut s) = (index, size - 1);
    let mut r = leaf;
    for p in &proof {
        if s == 0 {
            return Err(VerifyError::ProofLength {
                got: proof.len(),
                want,
            });
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(VerifyError::ProofLength {
            got: proof.len(),
            want,
        });
    }
    if r != root {
        return Err(VerifyError::RootMismatch);
    }
    Ok(())
}

/// Checks that the tree of `new` leaves with `new_root` extends the tree of
/// `old` leaves with `old_root` (RFC 9162 §2.1.4.2).
///
/// Equal sizes need an empty proof and byte-equal roots (as in the reference
/// verifier the vectors come from); `old` = 0 is refused, since every tree
/// extends the empty one and the claim carries nothing.
pub fn verify_consistency<P: AsRef<[u8]>>(
    old: u64,
    new: u64,
    old_root: &[u8],
    new_root: &[u8],
    proof: &[P],
) -> Result<(), VerifyError> {
    if old > new {
        return Err(RangeError::SizesOutOfOrder { old, new }.into());
    }
    if old == 0 {
        return Err(RangeError::EmptyOldTree.into());
    }
    if old == new {
        if !proof.is_empty() {
            return Err(VerifyError::ProofLength {
                got: proof.len(),
                want: 0,
            });
        }
        if old_root != new_root {
            return Err(VerifyError::RootsDiffer);
        }
        return Ok(());
    }
    let (inner, border) = decompose_inclusion(old - 1, new);
    // The subtree of 2^shift leaves ending at `old` is shared by both trees.
    let shift = old.trailing_zeros();
    let seeded = old.is_power_of_two();
    let want = (inner - shift + border) as usize + usize::from(!seeded);
    if proof.len() != want {
        return Err(VerifyError::ProofLength {
            got: proof.len(),
            want,
        });
    }
    let old_root = to_hash(HashField::OldRoot, old_root)?;
    let new_root = to_hash(HashField::NewRoot, new_root)?;
    let mut path = proof_hashes(proof)?;
    if seeded {
        path.insert(0, old_root);
    }

    let (mut f, mut s) = (old - 1, new - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let Some((first, rest)) = path.split_first() else {
        return Err(VerifyError::ProofLength {
            got: proof.len(),
            want,
        });
    };
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s == 0 {
            return Err(VerifyError::ProofLength {
                got: proof.len(),
                want,
            });
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(VerifyError::ProofLength {
            got: proof.len(),
            want,
        });
    }
    if fr != old_root {
        return Err(VerifyError::OldRootMismatch);
    }
    if sr != new_root {
        return Err(VerifyError::NewRootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    fn data(i: u64) -> Vec<u8> {
        format!("entry {i}").into_bytes()
    }

    /// MTH of RFC 9162 §2.1.1, straight from the definition.
    fn naive_mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => EMPTY_ROOT,
            1 => leaves[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&naive_mth(&leaves[..k]), &naive_mth(&leaves[k..]))
            }
        }
    }

    /// A tree of `size` leaves built one append at a time.
    fn tree(size: u64) -> (Vec<Hash>, HashMap<NodeAddr, Hash>) {
        let leaves: Vec<Hash> = (0..size).map(|i| leaf_hash(&data(i))).collect();
        let mut nodes = HashMap::new();
        for (i, leaf) in leaves.iter().enumerate() {
            let formed = append(i as u64, &[*leaf], &nodes).expect("append");
            for (addr, hash) in formed {
                assert!(nodes.insert(addr, hash).is_none(), "{addr} formed twice");
            }
        }
        (leaves, nodes)
    }

    /// Records every address read, to compare with the `*_reads` lists.
    struct Recording<'a> {
        nodes: &'a HashMap<NodeAddr, Hash>,
        seen: RefCell<Vec<NodeAddr>>,
    }

    impl<'a> Recording<'a> {
        fn new(nodes: &'a HashMap<NodeAddr, Hash>) -> Self {
            Recording {
                nodes,
                seen: RefCell::new(Vec::new()),
            }
        }

        fn take_sorted(&self) -> Vec<NodeAddr> {
            let mut seen = self.seen.take();
            seen.sort();
            seen
        }
    }

    impl NodeReader for Recording<'_> {
        type Error = MissingNode;

        fn node(&self, addr: NodeAddr) -> Result<Hash, MissingNode> {
            self.seen.borrow_mut().push(addr);
            self.nodes.node(addr)
        }
    }

    fn sorted(mut addrs: Vec<NodeAddr>) -> Vec<NodeAddr> {
        addrs.sort();
        addrs
    }

    #[test]
    fn a_frontier_forms_the_same_nodes_as_appending_to_the_whole_tree() {
        let (leaves, nodes) = tree(45);
        for split in [0usize, 1, 2, 7, 8, 31, 44, 45] {
            let mut frontier = Frontier::new(split as u64, &nodes).expect("frontier");
            assert_eq!(frontier.root(), naive_mth(&leaves[..split]));
            // The rest in uneven batches.
            let mut at = split;
            for batch in [3usize, 1, 9, 100] {
                let end = (at + batch).min(leaves.len());
                let formed = frontier.extend(&leaves[at..end]).expect("extend");
                for (addr, hash) in formed {
                    assert_eq!(nodes.get(&addr), Some(&hash), "{addr}");
                }
                at = end;
                assert_eq!(frontier.size(), at as u64);
                assert_eq!(frontier.root(), naive_mth(&leaves[..at]));
            }
        }
        assert_eq!(Frontier::empty().root(), EMPTY_ROOT);
        assert!(Frontier::new(46, &nodes).is_err());
    }

    #[test]
    fn a_memory_tree_has_the_roots_of_every_prefix() {
        let (leaves, _) = tree(37);
        let mut memory = MemoryTree::new();
        assert_eq!(memory.root(0).expect("empty"), EMPTY_ROOT);
        for leaf in &leaves {
            memory.push(*leaf);
        }
        assert_eq!(memory.size(), 37);
        for size in 0..=37 {
            assert_eq!(
                memory.root(size).expect("root"),
                naive_mth(&leaves[..size as usize]),
                "size {size}"
            );
        }
        assert!(memory.root(38).is_err());
    }

    #[test]
    fn hashes_are_rfc_6962() {
        assert_eq!(EMPTY_ROOT.0, <[u8; 32]>::from(Sha256::digest(b"")));
        // RFC 6962 test data: the leaf "" and the root of the 8-leaf tree.
        assert_eq!(
            leaf_hash(b"").to_string(),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        let mut expected = vec![LEAF_PREFIX];
        expected.extend_from_slice(b"abc");
        assert_eq!(
            leaf_hash(b"abc").0,
            <[u8; 32]>::from(Sha256::digest(&expected))
        );
        let (l, r) = (leaf_hash(b"l"), leaf_hash(b"r"));
        let mut expected = vec![NODE_PREFIX];
        expected.extend_from_slice(&l.0);
        expected.extend_from_slice(&r.0);
        assert_eq!(
            node_hash(&l, &r).0,
            <[u8; 32]>::from(Sha256::digest(&expected))
        );
    }

    #[test]
    fn roots_equal_the_naive_mth_for_every_size_to_200() {
        let (leaves, nodes) = tree(200);
        for size in 0..=200u64 {
            let want = naive_mth(&leaves[..size as usize]);
            assert_eq!(root(size, &nodes).expect("root"), want, "size {size}");
        }
        // Every stored node is the MTH of the leaves it covers, and the
        // store holds exactly the perfect subtrees: 2n - popcount(n).
        for (addr, hash) in &nodes {
            let lo = (addr.index << addr.level) as usize;
            let hi = ((addr.index + 1) << addr.level) as usize;
            assert_eq!(*hash, naive_mth(&leaves[lo..hi]), "node {addr}");
        }
        assert_eq!(nodes.len() as u64, 2 * 200 - u64::from(200u64.count_ones()));
    }

    #[test]
    fn batch_appends_form_the_same_nodes_as_single_appends() {
        let (leaves, single) = tree(100);
        for chunk in [1usize, 2, 3, 7, 16, 33, 100] {
            let mut nodes = HashMap::new();
            let mut size = 0u64;
            for batch in leaves.chunks(chunk) {
                let recording = Recording::new(&nodes);
                let formed = append(size, batch, &recording).expect("append");
                assert_eq!(
                    recording.take_sorted(),
                    sorted(append_reads(size, batch.len() as u64).expect("reads")),
                    "reads appending {} at {size}",
                    batch.len()
                );
                size += batch.len() as u64;
                nodes.extend(formed);
            }
            assert_eq!(nodes, single, "chunks of {chunk}");
        }
    }

    #[test]
    fn a_single_append_forms_trailing_ones_plus_one_nodes() {
        let (_, nodes) = tree(70);
        for p in 0..70u64 {
            let formed = append(p, &[leaf_hash(&data(p))], &nodes).expect("append");
            assert_eq!(formed.len() as u32, p.trailing_ones() + 1, "leaf {p}");
            assert_eq!(
                append_reads(p, 1).expect("reads").len() as u32,
                p.trailing_ones()
            );
        }
    }

    #[test]
    fn listed_reads_are_exactly_the_nodes_read() {
        let (_, nodes) = tree(64);
        let reader = Recording::new(&nodes);
        for size in 0..=64u64 {
            root(size, &reader).expect("root");
            assert_eq!(
                reader.take_sorted(),
                sorted(root_reads(size)),
                "root {size}"
            );
            assert!(root_reads(size).len() <= 64 - size.leading_zeros() as usize);
            for index in 0..size {
                inclusion_proof(index, size, &reader).expect("inclusion");
                assert_eq!(
                    reader.take_sorted(),
                    sorted(inclusion_reads(index, size).expect("reads")),
                    "inclusion {index} in {size}"
                );
            }
            for old in 1..=size {
                consistency_proof(old, size, &reader).expect("consistency");
                assert_eq!(
                    reader.take_sorted(),
                    sorted(consistency_reads(old, size).expect("reads")),
                    "consistency {old} to {size}"
                );
            }
        }
        // A map holding only the listed nodes is enough.
        let listed: HashMap<NodeAddr, Hash> = inclusion_reads(37, 61)
            .expect("reads")
            .into_iter()
            .map(|addr| (addr, nodes[&addr]))
            .collect();
        assert_eq!(
            inclusion_proof(37, 61, &listed).expect("from listed"),
            inclusion_proof(37, 61, &nodes).expect("from all")
        );
    }

    /// For each hash of an inclusion proof, whether it sits left of the leaf.
    fn inclusion_shape(index: u64, size: u64) -> Vec<bool> {
        let ranges = inclusion_ranges(index, size).expect("ranges");
        ranges.iter().map(|&(lo, _)| lo < index).collect()
    }

    /// Whether the old root is the proof's implicit first hash, and for each
    /// hash of the proof, whether it is inside the old tree.
    fn consistency_shape(old: u64, new: u64) -> (bool, Vec<bool>) {
        let ranges = consistency_ranges(old, new).expect("ranges");
        let inside = ranges.iter().map(|&(_, hi)| hi <= old).collect();
        (old.is_power_of_two() && old != new, inside)
    }

    /// Other sizes or indexes to try instead of `n`: every one up to 65 for
    /// small trees (debug builds hash slowly), neighbours and doublings above.
    fn others(n: u64, size: u64) -> Vec<u64> {
        let mut out: Vec<u64> = if size <= 20 {
            (0..=65).collect()
        } else {
            vec![
                0,
                1,
                n / 2,
                n.saturating_sub(1),
                n + 1,
                n ^ 1,
                n * 2,
                64,
                65,
                u64::MAX,
            ]
        };
        out.retain(|&o| o != n);
        out
    }

    fn flipped(hash: &Hash, byte: usize) -> Hash {
        let mut out = *hash;
        out.0[byte] ^= 0x01;
        out
    }

    /// Byte positions to flip: every byte for small trees, a spread above.
    fn bytes_to_flip(size: u64) -> Vec<usize> {
        if size <= 8 {
            (0..HASH_LEN).collect()
        } else {
            vec![0, 13, HASH_LEN - 1]
        }
    }

    #[test]
    fn every_inclusion_proof_to_64_verifies_and_no_change_does() {
        let (leaves, nodes) = tree(64);
        for size in 1..=64u64 {
            let root = root(size, &nodes).expect("root");
            for index in 0..size {
                let leaf = leaves[index as usize];
                let proof = inclusion_proof(index, size, &nodes).expect("proof");
                assert_eq!(
                    verify_inclusion(&leaf.0, index, size, &proof, &root.0),
                    Ok(()),
                    "{index} in {size}"
                );
                let rejects = |leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash| {
                    assert!(
                        verify_inclusion(&leaf.0, index, size, proof, &root.0).is_err(),
                        "accepted a changed proof of {index} in {size}"
                    );
                };
                for byte in bytes_to_flip(size) {
                    rejects(&flipped(&leaf, byte), index, size, &proof, &root);
                    rejects(&leaf, index, size, &proof, &flipped(&root, byte));
                    for i in 0..proof.len() {
                        let mut changed = proof.clone();
                        changed[i] = flipped(&changed[i], byte);
                        rejects(&leaf, index, size, &changed, &root);
                    }
                }
                for other in others(index, size) {
                    rejects(&leaf, other, size, &proof, &root);
                }
                // A proof does not bind the tree size (the signed tree head
                // does): another size is accepted exactly when its audit path
                // has the same shape, so the same hashes combine the same way.
                for other in others(size, size) {
                    let accepted = verify_inclusion(&leaf.0, index, other, &proof, &root.0).is_ok();
                    let same_shape = index < other
                        && inclusion_shape(index, other) == inclusion_shape(index, size);
                    assert_eq!(
                        accepted, same_shape,
                        "{index} in {size} checked as in {other}"
                    );
                }
                let mut longer = proof.clone();
                longer.push(leaf);
                rejects(&leaf, index, size, &longer, &root);
                if !proof.is_empty() {
                    rejects(&leaf, index, size, &proof[1..], &root);
                    rejects(&leaf, index, size, &proof[..proof.len() - 1], &root);
                }
            }
        }
    }

    #[test]
    fn every_consistency_proof_to_64_verifies_and_no_change_does() {
        let (_, nodes) = tree(64);
        let roots: Vec<Hash> = (0..=64).map(|n| root(n, &nodes).expect("root")).collect();
        for new in 1..=64u64 {
            for old in 1..=new {
                let (old_root, new_root) = (roots[old as usize], roots[new as usize]);
                let proof = consistency_proof(old, new, &nodes).expect("proof");
                assert_eq!(
                    verify_consistency(old, new, &old_root.0, &new_root.0, &proof),
                    Ok(()),
                    "{old} to {new}"
                );
                let rejects =
                    |old: u64, new: u64, old_root: &Hash, new_root: &Hash, proof: &[Hash]| {
                        assert!(
                            verify_consistency(old, new, &old_root.0, &new_root.0, proof).is_err(),
                            "accepted a changed proof of {old} to {new}"
                        );
                    };
                for byte in bytes_to_flip(new) {
                    rejects(old, new, &flipped(&old_root, byte), &new_root, &proof);
                    rejects(old, new, &old_root, &flipped(&new_root, byte), &proof);
                    for i in 0..proof.len() {
                        let mut changed = proof.clone();
                        changed[i] = flipped(&changed[i], byte);
                        rejects(old, new, &old_root, &new_root, &changed);
                    }
                }
                // As for inclusion, sizes are bound by the signed tree heads,
                // not the proof: other sizes pass exactly when the proof has
                // the same shape.
                let same = |o: u64, n: u64| {
                    let accepted =
                        verify_consistency(o, n, &old_root.0, &new_root.0, &proof).is_ok();
                    let same_shape =
                        0 < o && o <= n && consistency_shape(o, n) == consistency_shape(old, new);
                    assert_eq!(accepted, same_shape, "{old} to {new} checked as {o} to {n}");
                };
                for other in others(old, new) {
                    same(other, new);
                }
                for other in others(new, new) {
                    same(old, other);
                }
                if old != new {
                    rejects(old, new, &new_root, &old_root, &proof);
                }
                let mut longer = proof.clone();
                longer.push(old_root);
                rejects(old, new, &old_root, &new_root, &longer);
                if !proof.is_empty() {
                    rejects(old, new, &old_root, &new_root, &proof[1..]);
                    rejects(old, new, &old_root, &new_root, &proof[..proof.len() - 1]);
                }
            }
        }
    }

    #[test]
    fn proofs_have_the_logarithmic_lengths_of_rfc_9162() {
        // Inclusion: depth of the leaf; consistency: at most 2·log₂ n.
        let (_, nodes) = tree(64);
        assert_eq!(inclusion_proof(0, 64, &nodes).expect("proof").len(), 6);
        assert_eq!(inclusion_proof(63, 64, &nodes).expect("proof").len(), 6);
        assert_eq!(inclusion_proof(0, 1, &nodes).expect("proof").len(), 0);
        assert_eq!(consistency_proof(32, 64, &nodes).expect("proof").len(), 1);
        assert_eq!(consistency_proof(64, 64, &nodes).expect("proof").len(), 0);
        for new in 1..=64u64 {
            for old in 1..=new {
                let len = consistency_proof(old, new, &nodes).expect("proof").len();
                assert!(
                    len <= 2 * (64 - new.leading_zeros() as usize),
                    "{old} to {new}"
                );
            }
        }
    }

    #[test]
    fn bad_requests_name_what_is_wrong() {
        let (_, nodes) = tree(8);
        assert!(matches!(
            inclusion_proof(8, 8, &nodes),
            Err(TreeError::Range(RangeError::IndexOutOfRange {
                index: 8,
                size: 8
            }))
        ));
        assert!(matches!(
            consistency_proof(5, 4, &nodes),
            Err(TreeError::Range(RangeError::SizesOutOfOrder {
                old: 5,
                new: 4
            }))
        ));
        assert!(matches!(
            consistency_proof(0, 4, &nodes),
            Err(TreeError::Range(RangeError::EmptyOldTree))
        ));
        assert_eq!(
            append_reads(u64::MAX, 1),
            Err(RangeError::TooLarge {
                size: u64::MAX,
                count: 1
            })
        );
        // Past what is stored: the reader's error, with the node it was asked for.
        let err = root(9, &nodes).expect_err("size 9 is not stored");
        assert_eq!(err.to_string(), "reading node (0, 8)");
        assert!(
            matches!(err, TreeError::Read { source: MissingNode(a), .. } if a == NodeAddr::leaf(8))
        );

        let (leaf, root8) = (leaf_hash(&data(0)), root(8, &nodes).expect("root"));
        let proof = inclusion_proof(0, 8, &nodes).expect("proof");
        assert_eq!(
            verify_inclusion(&leaf.0, 0, 8, &proof[..2], &root8.0),
            Err(VerifyError::ProofLength { got: 2, want: 3 })
        );
        let mut short = proof.iter().map(|h| h.0.to_vec()).collect::<Vec<_>>();
        short[1].pop();
        assert_eq!(
            verify_inclusion(&leaf.0, 0, 8, &short, &root8.0),
            Err(VerifyError::HashLength {
                field: HashField::Proof(1),
                len: 31
            })
        );
        assert_eq!(
            VerifyError::HashLength {
                field: HashField::Proof(1),
                len: 31
            }
            .to_string(),
            "proof hash 1 is 31 bytes, not 32"
        );
        assert_eq!(
            verify_inclusion(&leaf.0, 1, 8, &proof, &root8.0),
            Err(VerifyError::RootMismatch)
        );
        assert_eq!(
            verify_consistency(0, 0, &EMPTY_ROOT.0, &EMPTY_ROOT.0, &[] as &[Hash]),
            Err(VerifyError::Range(RangeError::EmptyOldTree))
        );
        assert_eq!(
            verify_consistency(3, 3, &root8.0, &leaf.0, &[] as &[Hash]),
            Err(VerifyError::RootsDiffer)
        );
    }

    #[test]
    fn verifiers_never_panic() {
        let sizes = [
            0,
            1,
            2,
            3,
            7,
            8,
            9,
            1 << 62,
            (1 << 63) - 1,
            1 << 63,
            u64::MAX - 1,
            u64::MAX,
        ];
        let h = leaf_hash(b"x");
        let bad = [0u8; 5];
        for &a in &sizes {
            for &b in &sizes {
                for len in [0usize, 1, 2, 5, 63, 64, 65, 130] {
                    let proof = vec![h; len];
                    let _ = verify_inclusion(&h.0, a, b, &proof, &h.0);
                    let _ = verify_consistency(a, b, &h.0, &h.0, &proof);
                    let _ = verify_inclusion(&bad, a, b, &proof, &bad);
                    let _ = verify_consistency(a, b, &bad, &h.0, &proof);
                    let mixed: Vec<&[u8]> = (0..len)
                        .map(|i| if i % 2 == 0 { &h.0[..] } else { &bad[..] })
                        .collect();
                    let _ = verify_inclusion(&h.0, a, b, &mixed, &h.0);
                    let _ = verify_consistency(a, b, &h.0, &h.0, &mixed);
                }
            }
        }
    }
}
