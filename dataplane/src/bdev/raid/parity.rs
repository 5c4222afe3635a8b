//! The erasure code of one raid5f or raid6 stripe: `data` data shards
//! (one strip per data leg) protected by `parity` parity shards.
//!
//! - One parity shard (raid5f) is plain XOR, as SPDK's raid5f and md raid5
//!   write it: the cheapest code there is, and a scrub or an outside tool
//!   can check it without knowing any field.
//! - Two parity shards (raid6) are Reed-Solomon over GF(2^8) from the
//!   `reed-solomon-erasure` crate (systematic, Vandermonde-derived matrix,
//!   any two of the `data + 2` shards restore the others). Its two parity
//!   rows are the crate's, not md's "P = XOR, Q = Σ 2^i·D_i", so the layout
//!   on the legs is Shoal's own, like the rest of the raid metadata.
//!
//! Why that crate: it is the Rust GF(2^8) code with SIMD that builds with
//! the toolchains Shoal supports (its `simd-accel` C kernels use AVX2 on
//! x86-64 and NEON on aarch64), and it has been in wide production use for
//! years. `reed-solomon-simd` is better kept but works over GF(2^16) and
//! its decoder pays a fixed cost of a 65536-entry transform per call
//! (~0.4 ms measured), which would dominate every degraded 4 KiB read.
//!
//! The code works byte by byte down the shards, so the same byte range of
//! every shard is a stripe of its own: a degraded read of a few blocks
//! rebuilds only those blocks, not whole strips.

use std::fmt;

use reed_solomon_erasure::galois_8::ReedSolomon;

/// Fewer than two data shards is a mirror, which raid1 does better.
pub const MIN_DATA_SHARDS: usize = 2;
/// Wider stripes gain little capacity and make every read-modify-write and
/// every rebuild read more legs; GF(2^8) itself would allow 254.
pub const MAX_DATA_SHARDS: usize = 32;
/// raid5f (1) and raid6 (2).
pub const MAX_PARITY_SHARDS: usize = 2;
/// Every shard length must be a non-zero multiple of this. The crate's
/// vector kernels take 32 bytes (AVX2) or 64 (AVX-512) at a time and finish
/// tails byte by byte through a table; blocks are at least 512 bytes, so
/// this forbids nothing the raid levels do and keeps every byte on the
/// vector path.
pub const SHARD_LEN_MULTIPLE: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error(
        "a stripe of {data} data and {parity} parity shards is not supported \
         (data {MIN_DATA_SHARDS}..={MAX_DATA_SHARDS}, parity 1..={MAX_PARITY_SHARDS})"
    )]
    Geometry { data: usize, parity: usize },
    #[error("expected {expected} {kind} shards, got {got}")]
    ShardCount {
        kind: ShardKind,
        expected: usize,
        got: usize,
    },
    #[error("expected {expected} presence flags (one per shard), got {got}")]
    PresenceCount { expected: usize, got: usize },
    #[error("shard length {len} is not a non-zero multiple of {SHARD_LEN_MULTIPLE} bytes")]
    ShardLength { len: usize },
    #[error("shards differ in length: {first} and {other} bytes")]
    UnequalShards { first: usize, other: usize },
    #[error("{missing} shards are missing; this stripe restores at most {parity}")]
    TooManyMissing { missing: usize, parity: usize },
    #[error("data shard {index} does not exist in a stripe of {data} data shards")]
    DataIndex { index: usize, data: usize },
    /// The crate refused what the checks above let through: a bug here.
    #[error("erasure code library: {0}")]
    Library(String),
}

impl From<reed_solomon_erasure::Error> for CodeError {
    fn from(error: reed_solomon_erasure::Error) -> Self {
        CodeError::Library(error.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardKind {
    Data,
    Parity,
    /// Data then parity, as `reconstruct` takes them.
    All,
}

impl fmt::Display for ShardKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ShardKind::Data => "data",
            ShardKind::Parity => "parity",
            ShardKind::All => "data and parity",
        })
    }
}

enum Parity {
    Xor,
    ReedSolomon(Box<ReedSolomon>),
}

/// The code of one stripe geometry. Building it precomputes the coding
/// matrix, so make one per volume and keep it.
pub struct StripeCode {
    data: usize,
    parity: usize,
    code: Parity,
}

impl fmt::Debug for StripeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeCode")
            .field("data", &self.data)
            .field("parity", &self.parity)
            .finish()
    }
}

impl StripeCode {
    pub fn new(data: usize, parity: usize) -> Result<Self, CodeError> {
        if !(MIN_DATA_SHARDS..=MAX_DATA_SHARDS).contains(&data)
            || !(1..=MAX_PARITY_SHARDS).contains(&parity)
        {
            return Err(CodeError::Geometry { data, parity });
        }
        let code = if parity == 1 {
            Parity::Xor
        } else {
            Parity::ReedSolomon(Box::new(ReedSolomon::new(data, parity)?))
        };
        Ok(Self { data, parity, code })
    }

    pub fn data_shards(&self) -> usize {
        self.data
    }

    pub fn parity_shards(&self) -> usize {
        self.parity
    }

    pub fn total_shards(&self) -> usize {
        self.data + self.parity
    }

    /// Computes every parity shard from the data shards, overwriting it.
    pub fn encode(&self, data: &[&[u8]], parity: &mut [&mut [u8]]) -> Result<(), CodeError> {
        self.check_counts(data.len(), parity.len())?;
        check_lengths(
            data.iter()
                .map(|s| s.len())
                .chain(parity.iter().map(|s| s.len())),
        )?;
        match &self.code {
            Parity::Xor => {
                let (first, rest) = data.split_first().expect("at least MIN_DATA_SHARDS");
                parity[0].copy_from_slice(first);
                for shard in rest {
                    xor_into(parity[0], shard);
                }
            }
            Parity::ReedSolomon(rs) => rs.encode_sep(data, parity)?,
        }
        Ok(())
    }

    /// Recomputes the parity and compares it with `parity` (scrubbing).
    /// False means the stripe is inconsistent; which shard is wrong the
    /// code cannot tell.
    pub fn verify(&self, data: &[&[u8]], parity: &[&[u8]]) -> Result<bool, CodeError> {
        self.check_counts(data.len(), parity.len())?;
        let len = check_lengths(data.iter().chain(parity).map(|s| s.len()))?;
        let mut expected = vec![vec![0u8; len]; self.parity];
        let mut expected_refs: Vec<&mut [u8]> =
            expected.iter_mut().map(Vec::as_mut_slice).collect();
        self.encode(data, &mut expected_refs)?;
        Ok(expected.iter().zip(parity).all(|(e, p)| e == p))
    }

    /// Rebuilds, in place, the shards whose `present` flag is false from
    /// the others. `shards` are the data shards then the parity shards;
    /// a missing one is a buffer of the same length for the result (what
    /// it holds is ignored). At most `parity_shards()` may be missing.
    pub fn reconstruct(&self, shards: &mut [&mut [u8]], present: &[bool]) -> Result<(), CodeError> {
        let total = self.total_shards();
        if shards.len() != total {
            return Err(CodeError::ShardCount {
                kind: ShardKind::All,
                expected: total,
                got: shards.len(),
            });
        }
        if present.len() != total {
            return Err(CodeError::PresenceCount {
                expected: total,
                got: present.len(),
            });
        }
        check_lengths(shards.iter().map(|s| s.len()))?;
        let missing = present.iter().filter(|&&p| !p).count();
        if missing == 0 {
            return Ok(());
        }
        if missing > self.parity {
            return Err(CodeError::TooManyMissing {
                missing,
                parity: self.parity,
            });
        }
        match &self.code {
            Parity::Xor => {
                // Every shard is the XOR of all the others, parity included.
                let lost = present.iter().position(|&p| !p).expect("one is missing");
                let target = std::mem::take(&mut shards[lost]);
                target.fill(0);
                for (i, shard) in shards.iter().enumerate() {
                    if i != lost {
                        xor_into(target, shard);
                    }
                }
                shards[lost] = target;
            }
            Parity::ReedSolomon(rs) => {
                let mut flagged: Vec<(&mut [u8], bool)> = shards
                    .iter_mut()
                    .zip(present)
                    .map(|(shard, &here)| (&mut **shard, here))
                    .collect();
                rs.reconstruct(&mut flagged)?;
            }
        }
        Ok(())
    }

    /// Brings `parity` up to date after data shard `index` changed from
    /// `old` to `new` (read-modify-write of part of a stripe): the code is
    /// linear, so the parity changes by the code of the difference alone,
    /// and the other data shards need not be read. `old`, `new` and each
    /// parity shard cover the same byte range of their strips.
    pub fn update_parity(
        &self,
        index: usize,
        old: &[u8],
        new: &[u8],
        parity: &mut [&mut [u8]],
    ) -> Result<(), CodeError> {
        if index >= self.data {
            return Err(CodeError::DataIndex {
                index,
                data: self.data,
            });
        }
        if parity.len() != self.parity {
            return Err(CodeError::ShardCount {
                kind: ShardKind::Parity,
                expected: self.parity,
                got: parity.len(),
            });
        }
        let len = check_lengths(
            [old.len(), new.len()]
                .into_iter()
                .chain(parity.iter().map(|s| s.len())),
        )?;
        match &self.code {
            Parity::Xor => {
                xor_into(parity[0], old);
                xor_into(parity[0], new);
            }
            Parity::ReedSolomon(rs) => {
                let mut delta = old.to_vec();
                xor_into(&mut delta, new);
                // The crate has no delta update. Its single-shard encode
                // writes (shard 0) or adds (the others) that shard's share
                // of the parity; into zeroed buffers both give exactly the
                // share of the difference, which is then added.
                let mut share = vec![vec![0u8; len]; self.parity];
                rs.encode_single_sep(index, &delta, &mut share)?;
                for (target, share) in parity.iter_mut().zip(&share) {
                    xor_into(target, share);
                }
            }
        }
        Ok(())
    }

    fn check_counts(&self, data: usize, parity: usize) -> Result<(), CodeError> {
        if data != self.data {
            return Err(CodeError::ShardCount {
                kind: ShardKind::Data,
                expected: self.data,
                got: data,
            });
        }
        if parity != self.parity {
            return Err(CodeError::ShardCount {
                kind: ShardKind::Parity,
                expected: self.parity,
                got: parity,
            });
        }
        Ok(())
    }
}

/// All lengths equal and a non-zero multiple of `SHARD_LEN_MULTIPLE`;
/// returns that length.
fn check_lengths(mut lengths: impl Iterator<Item = usize>) -> Result<usize, CodeError> {
    let first = lengths.next().unwrap_or(0);
    if first == 0 || !first.is_multiple_of(SHARD_LEN_MULTIPLE) {
        return Err(CodeError::ShardLength { len: first });
    }
    match lengths.find(|&len| len != first) {
        Some(other) => Err(CodeError::UnequalShards { first, other }),
        None => Ok(first),
    }
}

/// `dst ^= src`. A plain loop over equal slices: the compiler vectorises
/// it, which is all XOR parity needs.
fn xor_into(dst: &mut [u8], src: &[u8]) {
    debug_assert_eq!(dst.len(), src.len());
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LEN: usize = 4 * SHARD_LEN_MULTIPLE;

    /// Data shards whose bytes differ by shard and by position.
    fn sample_data(count: usize, len: usize, seed: u8) -> Vec<Vec<u8>> {
        (0..count)
            .map(|shard| {
                (0..len)
                    .map(|byte| (byte * 31 + shard * 97 + byte / 7) as u8 ^ seed)
                    .collect()
            })
            .collect()
    }

    fn refs(shards: &[Vec<u8>]) -> Vec<&[u8]> {
        shards.iter().map(Vec::as_slice).collect()
    }

    fn muts(shards: &mut [Vec<u8>]) -> Vec<&mut [u8]> {
        shards.iter_mut().map(Vec::as_mut_slice).collect()
    }

    fn encoded(code: &StripeCode, data: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut parity = vec![vec![0u8; data[0].len()]; code.parity_shards()];
        code.encode(&refs(data), &mut muts(&mut parity)).unwrap();
        parity
    }

    /// Loses the shards in `lost` (filled with junk), reconstructs and
    /// checks every shard is back as it was.
    fn lose_and_restore(code: &StripeCode, stripe: &[Vec<u8>], lost: &[usize]) {
        let mut damaged = stripe.to_vec();
        let mut present = vec![true; stripe.len()];
        for &i in lost {
            damaged[i].fill(0xa5);
            present[i] = false;
        }
        code.reconstruct(&mut muts(&mut damaged), &present).unwrap();
        assert_eq!(damaged, stripe, "lost {lost:?}");
    }

    fn full_stripe(code: &StripeCode, data: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        let parity = encoded(code, &data);
        data.into_iter().chain(parity).collect()
    }

    #[test]
    fn every_single_and_double_erasure_restores_the_stripe() {
        for data_shards in 2..=6 {
            for parity_shards in 1..=MAX_PARITY_SHARDS {
                let code = StripeCode::new(data_shards, parity_shards).unwrap();
                let stripe = full_stripe(&code, sample_data(data_shards, LEN, 0));
                let total = code.total_shards();
                for a in 0..total {
                    lose_and_restore(&code, &stripe, &[a]);
                    if parity_shards == 2 {
                        for b in a + 1..total {
                            lose_and_restore(&code, &stripe, &[a, b]);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn single_parity_is_plain_xor() {
        let code = StripeCode::new(4, 1).unwrap();
        let data = sample_data(4, LEN, 3);
        let parity = encoded(&code, &data);
        let xor: Vec<u8> = (0..LEN)
            .map(|i| data.iter().fold(0, |acc, shard| acc ^ shard[i]))
            .collect();
        assert_eq!(parity[0], xor);
        // XOR of a whole consistent stripe, parity included, is zero.
        let stripe: Vec<Vec<u8>> = data.into_iter().chain(parity).collect();
        assert!((0..LEN).all(|i| stripe.iter().fold(0, |acc, s| acc ^ s[i]) == 0));
    }

    #[test]
    fn raid6_restores_two_data_shards_from_p_and_q() {
        let code = StripeCode::new(4, 2).unwrap();
        let stripe = full_stripe(&code, sample_data(4, 64 * 1024, 9));
        lose_and_restore(&code, &stripe, &[1, 3]);
    }

    #[test]
    fn three_missing_in_raid6_is_an_error() {
        let code = StripeCode::new(4, 2).unwrap();
        let mut stripe = full_stripe(&code, sample_data(4, LEN, 0));
        let present = [false, true, false, true, false, true];
        assert_eq!(
            code.reconstruct(&mut muts(&mut stripe), &present),
            Err(CodeError::TooManyMissing {
                missing: 3,
                parity: 2
            })
        );
        let code = StripeCode::new(3, 1).unwrap();
        let mut stripe = full_stripe(&code, sample_data(3, LEN, 0));
        assert_eq!(
            code.reconstruct(&mut muts(&mut stripe), &[false, false, true, true]),
            Err(CodeError::TooManyMissing {
                missing: 2,
                parity: 1
            })
        );
    }

    #[test]
    fn unsupported_geometries_are_refused() {
        for (data, parity) in [(1, 1), (0, 2), (MAX_DATA_SHARDS + 1, 2), (4, 0), (4, 3)] {
            assert_eq!(
                StripeCode::new(data, parity).unwrap_err(),
                CodeError::Geometry { data, parity }
            );
        }
        assert!(StripeCode::new(MAX_DATA_SHARDS, MAX_PARITY_SHARDS).is_ok());
    }

    #[test]
    fn wrong_shard_lengths_are_errors_not_panics() {
        for parity_shards in 1..=MAX_PARITY_SHARDS {
            let code = StripeCode::new(3, parity_shards).unwrap();
            let good = vec![0u8; LEN];
            let short = vec![0u8; LEN - SHARD_LEN_MULTIPLE];
            let odd = vec![0u8; LEN + 1];
            let empty: Vec<u8> = Vec::new();
            let mut parity = vec![vec![0u8; LEN]; parity_shards];

            let unequal = [good.as_slice(), short.as_slice(), good.as_slice()];
            assert_eq!(
                code.encode(&unequal, &mut muts(&mut parity)),
                Err(CodeError::UnequalShards {
                    first: LEN,
                    other: LEN - SHARD_LEN_MULTIPLE
                })
            );
            let unaligned = [odd.as_slice(), odd.as_slice(), odd.as_slice()];
            let mut odd_parity = vec![vec![0u8; LEN + 1]; parity_shards];
            assert_eq!(
                code.encode(&unaligned, &mut muts(&mut odd_parity)),
                Err(CodeError::ShardLength { len: LEN + 1 })
            );
            let empties = [empty.as_slice(), empty.as_slice(), empty.as_slice()];
            let mut empty_parity = vec![Vec::new(); parity_shards];
            assert_eq!(
                code.encode(&empties, &mut muts(&mut empty_parity)),
                Err(CodeError::ShardLength { len: 0 })
            );
            // Parity of the wrong length.
            let data = [good.as_slice(), good.as_slice(), good.as_slice()];
            let mut bad_parity = vec![vec![0u8; LEN * 2]; parity_shards];
            assert!(matches!(
                code.encode(&data, &mut muts(&mut bad_parity)),
                Err(CodeError::UnequalShards { .. })
            ));
            assert!(matches!(
                code.verify(&data, &refs(&bad_parity)),
                Err(CodeError::UnequalShards { .. })
            ));
            // A missing shard's buffer of the wrong length.
            let mut stripe: Vec<Vec<u8>> = vec![good.clone(); 3 + parity_shards];
            stripe[0] = short.clone();
            let mut present = vec![true; stripe.len()];
            present[0] = false;
            assert!(matches!(
                code.reconstruct(&mut muts(&mut stripe), &present),
                Err(CodeError::UnequalShards { .. })
            ));
            assert!(matches!(
                code.update_parity(1, &good, &short, &mut muts(&mut parity)),
                Err(CodeError::UnequalShards { .. })
            ));
        }
    }

    #[test]
    fn wrong_shard_counts_are_errors() {
        let code = StripeCode::new(4, 2).unwrap();
        let data = sample_data(3, LEN, 0);
        let mut parity = vec![vec![0u8; LEN]; 2];
        assert_eq!(
            code.encode(&refs(&data), &mut muts(&mut parity)),
            Err(CodeError::ShardCount {
                kind: ShardKind::Data,
                expected: 4,
                got: 3
            })
        );
        let data = sample_data(4, LEN, 0);
        let mut one_parity = vec![vec![0u8; LEN]; 1];
        assert_eq!(
            code.encode(&refs(&data), &mut muts(&mut one_parity)),
            Err(CodeError::ShardCount {
                kind: ShardKind::Parity,
                expected: 2,
                got: 1
            })
        );
        let mut stripe = full_stripe(&code, data);
        assert_eq!(
            code.reconstruct(&mut muts(&mut stripe), &[true; 5]),
            Err(CodeError::PresenceCount {
                expected: 6,
                got: 5
            })
        );
        assert_eq!(
            code.update_parity(
                4,
                &stripe[0].clone(),
                &stripe[1].clone(),
                &mut muts(&mut parity)
            ),
            Err(CodeError::DataIndex { index: 4, data: 4 })
        );
    }

    #[test]
    fn verify_tells_a_consistent_stripe_from_a_flipped_byte() {
        for parity_shards in 1..=MAX_PARITY_SHARDS {
            let code = StripeCode::new(5, parity_shards).unwrap();
            let mut data = sample_data(5, LEN, 1);
            let mut parity = encoded(&code, &data);
            assert!(code.verify(&refs(&data), &refs(&parity)).unwrap());
            data[2][17] ^= 0x40;
            assert!(!code.verify(&refs(&data), &refs(&parity)).unwrap());
            data[2][17] ^= 0x40;
            parity[parity_shards - 1][LEN - 1] ^= 1;
            assert!(!code.verify(&refs(&data), &refs(&parity)).unwrap());
        }
    }

    #[test]
    fn a_byte_range_of_every_shard_is_a_stripe_of_its_own() {
        // What lets a degraded read rebuild only the blocks it reads.
        let code = StripeCode::new(4, 2).unwrap();
        let stripe = full_stripe(&code, sample_data(4, 8 * SHARD_LEN_MULTIPLE, 5));
        let range = 3 * SHARD_LEN_MULTIPLE..5 * SHARD_LEN_MULTIPLE;
        let piece: Vec<Vec<u8>> = stripe.iter().map(|s| s[range.clone()].to_vec()).collect();
        assert!(code.verify(&refs(&piece[..4]), &refs(&piece[4..])).unwrap());
        lose_and_restore(&code, &piece, &[0, 2]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_up_to_parity_erasures_restore_random_stripes(
            data_shards in 2usize..=6,
            parity_shards in 1usize..=MAX_PARITY_SHARDS,
            multiples in 1usize..=4,
            bytes in proptest::collection::vec(any::<u8>(), 6 * 4 * SHARD_LEN_MULTIPLE),
            lost_seed in any::<u64>(),
        ) {
            let code = StripeCode::new(data_shards, parity_shards).unwrap();
            let len = multiples * SHARD_LEN_MULTIPLE;
            let data: Vec<Vec<u8>> = bytes.chunks(len).take(data_shards).map(<[u8]>::to_vec).collect();
            let stripe = full_stripe(&code, data);
            let total = code.total_shards();
            let first = (lost_seed % total as u64) as usize;
            let second = ((lost_seed / 7) % total as u64) as usize;
            let mut lost = vec![first];
            if parity_shards == 2 && second != first {
                lost.push(second);
            }
            lose_and_restore(&code, &stripe, &lost);
        }

        #[test]
        fn parity_updated_from_a_delta_equals_a_fresh_encode(
            data_shards in 2usize..=6,
            parity_shards in 1usize..=MAX_PARITY_SHARDS,
            index_seed in any::<usize>(),
            new_bytes in proptest::collection::vec(any::<u8>(), LEN),
        ) {
            let code = StripeCode::new(data_shards, parity_shards).unwrap();
            let mut data = sample_data(data_shards, LEN, 7);
            let mut parity = encoded(&code, &data);
            let index = index_seed % data_shards;
            code.update_parity(index, &data[index], &new_bytes, &mut muts(&mut parity)).unwrap();
            data[index] = new_bytes;
            prop_assert_eq!(parity, encoded(&code, &data));
        }
    }
}
