//! RFC 6962 / RFC 9162 Merkle tree math for the Countersign ledger.
//!
//! This module owns:
//! - the hashing rules: domain-separated SHA-256 for leaves (`0x00`) and interior nodes (`0x01`),
//!   so a leaf can never be passed off as an interior node or the reverse;
//! - the Merkle Tree Hash (MTH) of a list of leaf hashes ([`root_from_leaves`]);
//! - an append-only [`Tree`] that persists only the hashes of *complete* (perfect, aligned)
//!   subtrees through a [`NodeStore`], and from them derives the root and the inclusion and
//!   consistency proofs for the current size or any earlier size;
//! - the verifiers a relying party runs with nothing but hashes ([`verify_inclusion`],
//!   [`verify_consistency`]).
//!
//! It owns no I/O, no leaf encoding and no signing of tree heads: callers hash their own leaf
//! bytes with [`leaf_hash`] and sign the `(size, root)` pairs elsewhere.
//!
//! Why only complete subtrees are stored: a complete subtree's hash never changes once its last
//! leaf is appended, so every stored node is written exactly once and is valid for every later
//! tree size. The RFC tree for an arbitrary size splits into at most one complete subtree per set
//! bit of the size, and every node an RFC proof needs is either one stored complete subtree or the
//! single right-edge node that can be rebuilt from O(log n) of them. This keeps a disk-backed
//! store (sled) append-only and makes proofs for historical sizes as cheap as for the current one.

use sha2::{Digest, Sha256};
use std::fmt;

/// A SHA-256 digest: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; 32];

/// RFC 6962 section 2.1 domain separator for leaf hashes.
const LEAF_PREFIX: u8 = 0x00;
/// RFC 6962 section 2.1 domain separator for interior node hashes.
const NODE_PREFIX: u8 = 0x01;

/// Hashes leaf data: `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([LEAF_PREFIX]);
    hasher.update(data);
    hasher.finalize().into()
}

/// Hashes two child hashes into their parent: `SHA-256(0x01 || l || r)`.
pub fn node_hash(l: &Hash, r: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([NODE_PREFIX]);
    hasher.update(l);
    hasher.update(r);
    hasher.finalize().into()
}

/// Root of the empty tree: `SHA-256("")`, as RFC 6962 section 2.1 defines `MTH({})`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Merkle Tree Hash (RFC 6962 section 2.1) of a list of leaf hashes, in O(n) hashing and
/// O(log n) memory.
///
/// Leaves are folded left to right into a stack of complete-subtree roots (one per set bit of the
/// count so far), which is exactly the RFC's "split at the largest power of two" recursion done
/// bottom-up; the stack is then folded right to left.
pub fn root_from_leaves(leaves: &[Hash]) -> Hash {
    let mut frontier: Vec<Hash> = Vec::new();
    for (count, leaf) in (0u64..).zip(leaves) {
        let mut hash = *leaf;
        // Each trailing one bit of `count` is a complete left sibling waiting on the stack.
        for _ in 0..count.trailing_ones() {
            match frontier.pop() {
                Some(left) => hash = node_hash(&left, &hash),
                None => break,
            }
        }
        frontier.push(hash);
    }
    fold_frontier(&frontier)
}

/// Combines complete-subtree roots (largest, leftmost first) into the RFC root. The smallest
/// subtree is the deepest right child, so folding runs from the right.
fn fold_frontier(frontier: &[Hash]) -> Hash {
    let mut iter = frontier.iter().rev();
    match iter.next() {
        None => empty_root(),
        Some(last) => iter.fold(*last, |right, left| node_hash(left, &right)),
    }
}

/// Largest power of two strictly less than `n`; the RFC's split point `k`. Requires `n >= 2`.
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Why a proof could not be produced or did not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofError {
    /// The leaf index is not inside the tree (`index >= size`).
    IndexOutOfRange { index: u64, size: u64 },
    /// A consistency proof was asked for from a larger tree to a smaller one.
    SizeOrder { size1: u64, size2: u64 },
    /// A consistency proof from the empty tree was asked for or presented; see
    /// [`verify_consistency`] for why this is refused.
    EmptyOldTree,
    /// The [`Tree`] does not (yet) have `size` leaves.
    SizeOutOfRange { size: u64, tree_size: u64 },
    /// The proof has more or fewer elements than the tree shape for these sizes requires.
    WrongProofSize { len: usize },
    /// The root recomputed from the proof differs from the expected (newer) root.
    RootMismatch,
    /// In a consistency proof, the recomputed older root differs from the supplied `root1`.
    OldRootMismatch,
    /// The node store lacks a complete-subtree hash that the tree size says must exist.
    MissingNode { level: u32, index: u64 },
    /// The tree already holds `u64::MAX` leaves.
    TreeFull,
}

impl fmt::Display for ProofError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IndexOutOfRange { index, size } => {
                write!(f, "leaf index {index} is outside a tree of size {size}")
            }
            Self::SizeOrder { size1, size2 } => {
                write!(
                    f,
                    "old tree size {size1} is larger than new tree size {size2}"
                )
            }
            Self::EmptyOldTree => f.write_str("consistency proofs from the empty tree are refused"),
            Self::SizeOutOfRange { size, tree_size } => {
                write!(
                    f,
                    "tree size {size} exceeds the current tree size {tree_size}"
                )
            }
            Self::WrongProofSize { len } => {
                write!(f, "a proof of {len} hashes does not fit the tree shape")
            }
            Self::RootMismatch => f.write_str("recomputed root does not match the expected root"),
            Self::OldRootMismatch => {
                f.write_str("recomputed old root does not match the expected old root")
            }
            Self::MissingNode { level, index } => {
                write!(f, "node store has no hash at level {level}, index {index}")
            }
            Self::TreeFull => f.write_str("tree cannot grow beyond u64::MAX leaves"),
        }
    }
}

impl std::error::Error for ProofError {}

/// Storage for complete-subtree hashes.
///
/// `(level, index)` names the complete subtree covering leaves
/// `[index * 2^level, (index + 1) * 2^level)`; level 0 holds the leaf hashes. [`Tree`] writes each
/// node exactly once, in increasing index order per level, and never overwrites, so an
/// append-only key-value store (e.g. sled keyed by `(level, index)` big-endian) is sufficient.
pub trait NodeStore {
    /// The stored hash, or `None` if it was never written.
    fn get(&self, level: u32, index: u64) -> Option<Hash>;
    /// Records a hash. Durability is the store's concern.
    fn put(&mut self, level: u32, index: u64, hash: Hash);
}

/// In-memory [`NodeStore`]: one vector of hashes per level.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStore {
    levels: Vec<Vec<Hash>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl NodeStore for MemoryStore {
    fn get(&self, level: u32, index: u64) -> Option<Hash> {
        let row = self.levels.get(usize::try_from(level).ok()?)?;
        row.get(usize::try_from(index).ok()?).copied()
    }

    /// Writes that would leave a gap in a level (or name a level no `u64`-sized tree has) are
    /// dropped rather than padded, so a misuse surfaces later as [`ProofError::MissingNode`]
    /// instead of as a fabricated hash.
    fn put(&mut self, level: u32, index: u64, hash: Hash) {
        if level >= u64::BITS {
            return;
        }
        let (Ok(level), Ok(index)) = (usize::try_from(level), usize::try_from(index)) else {
            return;
        };
        if self.levels.len() <= level {
            self.levels.resize_with(level + 1, Vec::new);
        }
        let Some(row) = self.levels.get_mut(level) else {
            return;
        };
        match index.cmp(&row.len()) {
            std::cmp::Ordering::Less => row[index] = hash,
            std::cmp::Ordering::Equal => row.push(hash),
            std::cmp::Ordering::Greater => {}
        }
    }
}

/// Append-only RFC 6962 tree over a [`NodeStore`] of complete-subtree hashes.
#[derive(Debug, Clone, Default)]
pub struct Tree<S = MemoryStore> {
    store: S,
    size: u64,
    /// Roots of the complete subtrees that make up the current tree, largest (leftmost) first:
    /// one per set bit of `size`. Cached in memory so `push` and `root` never read the store.
    frontier: Vec<Hash>,
}

impl Tree<MemoryStore> {
    /// An empty in-memory tree.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S: NodeStore> Tree<S> {
    /// Reopens a tree of `size` leaves whose nodes are already in `store` (e.g. after restart).
    /// `size` must come from the caller's own durable record; only O(log n) nodes are read.
    pub fn from_store(store: S, size: u64) -> Result<Self, ProofError> {
        let mut frontier = Vec::with_capacity(size.count_ones() as usize);
        let mut start = 0u64;
        for level in (0..u64::BITS).rev() {
            if (size >> level) & 1 == 1 {
                let index = start >> level;
                let hash = store
                    .get(level, index)
                    .ok_or(ProofError::MissingNode { level, index })?;
                frontier.push(hash);
                start += 1u64 << level;
            }
        }
        Ok(Self {
            store,
            size,
            frontier,
        })
    }

    /// The node store, e.g. to flush it.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash and returns its index. Amortised O(1) hashing and writes: a push
    /// completes one subtree per trailing one bit of the old size, like a binary counter carry.
    pub fn push(&mut self, leaf: Hash) -> Result<u64, ProofError> {
        let index = self.size;
        let new_size = index.checked_add(1).ok_or(ProofError::TreeFull)?;
        self.store.put(0, index, leaf);
        let mut hash = leaf;
        let mut level = 0u32;
        while (index >> level) & 1 == 1 {
            // The frontier has one entry per set bit of `index`, so the pop cannot fail.
            let Some(left) = self.frontier.pop() else {
                break;
            };
            hash = node_hash(&left, &hash);
            level += 1;
            self.store.put(level, index >> level, hash);
        }
        self.frontier.push(hash);
        self.size = new_size;
        Ok(index)
    }

    /// Root of the current tree, in O(log n) hashing and no store reads.
    pub fn root(&self) -> Hash {
        fold_frontier(&self.frontier)
    }

    /// Root of the tree as it was when it had `size` leaves, in O(log n).
    pub fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        self.check_size(size)?;
        if size == 0 {
            return Ok(empty_root());
        }
        if size == self.size {
            return Ok(self.root());
        }
        self.range_hash(0, size)
    }

    /// RFC 9162 section 2.1.3.1 `PATH(index, D[size])`: the inclusion proof of leaf `index` in
    /// the tree of `size` leaves, leaf-side sibling first. O(log n): every sibling is a stored
    /// complete subtree except at most one right-edge sibling, rebuilt from O(log n) nodes.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(size)?;
        if index >= size {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        // Walk the RFC recursion top-down over [lo, hi); siblings come out root-side first.
        let mut proof = Vec::new();
        let (mut lo, mut hi) = (0u64, size);
        while hi - lo > 1 {
            let mid = lo + split_point(hi - lo);
            if index < mid {
                proof.push(self.range_hash(mid, hi)?);
                hi = mid;
            } else {
                proof.push(self.range_hash(lo, mid)?);
                lo = mid;
            }
        }
        proof.reverse();
        Ok(proof)
    }

    /// RFC 9162 section 2.1.4.1 `PROOF(size1, D[size2])`, in O(log n).
    ///
    /// Equal sizes give the empty proof. `size1 == 0` is refused with
    /// [`ProofError::EmptyOldTree`], matching [`verify_consistency`].
    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(size2)?;
        if size1 > size2 {
            return Err(ProofError::SizeOrder { size1, size2 });
        }
        if size1 == 0 {
            return Err(ProofError::EmptyOldTree);
        }
        // SUBPROOF(m, D[lo:hi], b) unrolled; `whole_old_tree` is the RFC's flag `b`, true while
        // the subtree under consideration is still the whole old tree (which the verifier knows).
        let mut proof = Vec::new();
        let (mut lo, mut hi) = (0u64, size2);
        let mut whole_old_tree = true;
        loop {
            let m = size1 - lo;
            if m == hi - lo {
                if !whole_old_tree {
                    proof.push(self.range_hash(lo, hi)?);
                }
                break;
            }
            let mid = lo + split_point(hi - lo);
            if m <= mid - lo {
                proof.push(self.range_hash(mid, hi)?);
                hi = mid;
            } else {
                proof.push(self.range_hash(lo, mid)?);
                lo = mid;
                whole_old_tree = false;
            }
        }
        proof.reverse();
        Ok(proof)
    }

    fn check_size(&self, size: u64) -> Result<(), ProofError> {
        if size > self.size {
            return Err(ProofError::SizeOutOfRange {
                size,
                tree_size: self.size,
            });
        }
        Ok(())
    }

    fn node(&self, level: u32, index: u64) -> Result<Hash, ProofError> {
        self.store
            .get(level, index)
            .ok_or(ProofError::MissingNode { level, index })
    }

    /// MTH of leaves `[start, end)`, for ranges that occur in the RFC recursion: `start` is a
    /// multiple of the largest power of two not exceeding `end - start`, so the range splits into
    /// one aligned complete subtree per set bit of its width. A complete range costs one read.
    fn range_hash(&self, start: u64, end: u64) -> Result<Hash, ProofError> {
        debug_assert!(start < end);
        debug_assert!(start.is_multiple_of(1u64 << (63 - (end - start).leading_zeros())));
        // Build from the smallest (rightmost) piece leftwards, as the RFC tree nests them.
        let mut acc: Option<Hash> = None;
        let mut right_end = end;
        let mut remaining = end - start;
        while remaining != 0 {
            let level = remaining.trailing_zeros();
            let width = 1u64 << level;
            let piece_start = right_end - width;
            let piece = self.node(level, piece_start >> level)?;
            acc = Some(match acc {
                None => piece,
                Some(right) => node_hash(&piece, &right),
            });
            remaining -= width;
            right_end = piece_start;
        }
        Ok(acc.unwrap_or_else(empty_root))
    }
}

/// Verifies an inclusion proof exactly as RFC 9162 section 2.1.3.2 specifies.
///
/// Fails with [`ProofError::IndexOutOfRange`] if `index >= size` (so always for `size == 0`),
/// [`ProofError::WrongProofSize`] if the proof is longer or shorter than the path for
/// `(index, size)` (extra leading or trailing elements are never ignored), and
/// [`ProofError::RootMismatch`] if the recomputed root differs from `root`.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let wrong_size = ProofError::WrongProofSize { len: proof.len() };
    // `fn`/`sn` of the RFC: positions of the node and of the last node on the current level.
    let mut f_n = index;
    let mut s_n = size - 1;
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return Err(wrong_size);
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            // A right-edge node with no right sibling is promoted unchanged through the levels.
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(wrong_size);
    }
    // Roots are public values, so a constant-time comparison buys nothing here.
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Verifies a consistency proof between a tree of `size1` leaves with root `root1` and a tree of
/// `size2` leaves with root `root2`, exactly as RFC 9162 section 2.1.4.2 specifies for
/// `0 < size1 < size2`.
///
/// Cases outside the RFC algorithm's domain:
/// - `size1 > size2`: [`ProofError::SizeOrder`].
/// - `size1 == size2 > 0`: the proof must be empty (RFC 9162 section 2.1.4.1 defines
///   `PROOF(m, D[m])` as empty) and `root1 == root2`.
/// - **`size1 == 0` is always rejected** with [`ProofError::EmptyOldTree`], whatever `size2`,
///   the roots or the proof. Every tree extends the empty tree, so such a proof would commit to
///   nothing; accepting it would let a log "prove" consistency with a checkpoint the client never
///   held. This is the behaviour of the shared test vectors
///   (`consistency/additional/size1-is-zero-and-does-not-equal-size2.json` and the other
///   size-zero files all expect an error) and deliberately diverges from transparency-dev/merkle,
///   which accepts an empty proof from size 0. A client with no earlier checkpoint should simply
///   trust-on-first-use the first signed tree head instead of asking for a proof.
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &Hash,
    root2: &Hash,
) -> Result<(), ProofError> {
    if size1 > size2 {
        return Err(ProofError::SizeOrder { size1, size2 });
    }
    if size1 == 0 {
        return Err(ProofError::EmptyOldTree);
    }
    let wrong_size = ProofError::WrongProofSize { len: proof.len() };
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(wrong_size);
        }
        if root1 != root2 {
            return Err(ProofError::RootMismatch);
        }
        return Ok(());
    }
    // Step 1: an empty proof never proves 0 < size1 < size2.
    let Some((first, rest)) = proof.split_first() else {
        return Err(wrong_size);
    };
    // Step 2: when the old tree is a complete subtree of the new one the proof omits its root, so
    // the walk is seeded with `root1` and starts at the first proof element.
    let (seed, path) = if size1.is_power_of_two() {
        (root1, proof)
    } else {
        (first, rest)
    };
    // Step 3.
    let mut f_n = size1 - 1;
    let mut s_n = size2 - 1;
    // Step 4: skip the levels where the old tree's last node is a right child fully inside the
    // seed subtree.
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    // Step 5.
    let mut fr = *seed;
    let mut sr = *seed;
    // Step 6.
    for c in path {
        if s_n == 0 {
            return Err(wrong_size);
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    // Step 7.
    if s_n != 0 {
        return Err(wrong_size);
    }
    if fr != *root1 {
        return Err(ProofError::OldRootMismatch);
    }
    if sr != *root2 {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
