//! Merkle trees over an invoice line's events, as in RFC 6962 §2.1: a leaf
//! is `SHA-256(0x00 ‖ event id (16 bytes) ‖ validation hash (hex text))`,
//! a node `SHA-256(0x01 ‖ left ‖ right)`, and a list of `n` leaves splits at
//! the largest power of two below `n`. The domain bytes keep a leaf from
//! passing for a node. Leaves are in the line's order (stored order).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub type Hash = [u8; 32];

pub fn leaf(event: Uuid, validation_hash: &str) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(event.as_bytes());
    h.update(validation_hash.as_bytes());
    h.finalize().into()
}

fn node(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

fn root_of(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node(&root_of(&leaves[..k]), &root_of(&leaves[k..]))
        }
    }
}

/// The root of a line's events, hex; `None` for a line with no events.
pub fn root<'a>(events: impl IntoIterator<Item = (&'a Uuid, &'a str)>) -> Option<String> {
    let leaves: Vec<Hash> = events.into_iter().map(|(id, h)| leaf(*id, h)).collect();
    (!leaves.is_empty()).then(|| hex::encode(root_of(&leaves)))
}

/// Which side a proof's sibling hash is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Left,
    Right,
}

/// The audit path of one leaf: siblings from the leaf up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Proof {
    pub index: usize,
    pub size: usize,
    /// Siblings from the leaf up: `[side, hash]` pairs.
    #[schema(value_type = Vec<Vec<String>>)]
    pub path: Vec<(Side, String)>,
}

/// The proof for leaf `index` of `leaves`.
pub fn proof(leaves: &[Hash], index: usize) -> Option<Proof> {
    if index >= leaves.len() {
        return None;
    }
    let mut path = Vec::new();
    let (mut lo, mut hi, mut i) = (0usize, leaves.len(), index);
    let mut stack = Vec::new();
    while hi - lo > 1 {
        let k = split(hi - lo);
        if i < k {
            stack.push((Side::Right, root_of(&leaves[lo + k..hi])));
            hi = lo + k;
        } else {
            stack.push((Side::Left, root_of(&leaves[lo..lo + k])));
            lo += k;
            i -= k;
        }
    }
    while let Some((side, hash)) = stack.pop() {
        path.push((side, hex::encode(hash)));
    }
    Some(Proof {
        index,
        size: leaves.len(),
        path,
    })
}

/// The root a leaf and its proof lead to, hex; `None` for a malformed proof.
pub fn root_from_proof(leaf: Hash, proof: &Proof) -> Option<String> {
    let mut acc = leaf;
    for (side, sibling) in &proof.path {
        let sibling: Hash = hex::decode(sibling).ok()?.try_into().ok()?;
        acc = match side {
            Side::Left => node(&sibling, &acc),
            Side::Right => node(&acc, &sibling),
        };
    }
    Some(hex::encode(acc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: usize) -> Vec<(Uuid, String)> {
        (0..n)
            .map(|i| (Uuid::from_u128(i as u128 + 1), format!("{:064x}", i * 7919)))
            .collect()
    }

    #[test]
    fn a_single_leaf_is_its_own_root_and_order_matters() {
        let l = leaves(2);
        let one = root(l.iter().take(1).map(|(i, h)| (i, h.as_str()))).unwrap();
        assert_eq!(one, hex::encode(leaf(l[0].0, &l[0].1)));
        let ab = root(l.iter().map(|(i, h)| (i, h.as_str()))).unwrap();
        let ba = root(l.iter().rev().map(|(i, h)| (i, h.as_str()))).unwrap();
        assert_ne!(ab, ba);
        assert_eq!(root(std::iter::empty()), None);
    }

    #[test]
    fn changing_any_hash_changes_the_root() {
        let mut l = leaves(5);
        let before = root(l.iter().map(|(i, h)| (i, h.as_str())));
        l[3].1.replace_range(0..1, "f");
        assert_ne!(before, root(l.iter().map(|(i, h)| (i, h.as_str()))));
    }

    proptest! {
        #[test]
        fn every_proof_leads_to_the_root(n in 1usize..70, pick in 0usize..70) {
            let l = leaves(n);
            let hashes: Vec<Hash> = l.iter().map(|(i, h)| leaf(*i, h)).collect();
            let expected = root(l.iter().map(|(i, h)| (i, h.as_str()))).unwrap();
            let index = pick % n;
            let p = proof(&hashes, index).unwrap();
            prop_assert_eq!(root_from_proof(hashes[index], &p), Some(expected.clone()));
            // Another leaf with this proof does not.
            if n > 1 {
                let other = (index + 1) % n;
                prop_assert_ne!(root_from_proof(hashes[other], &p), Some(expected));
            }
        }
    }
}
