//! Address mapping of raid5f and raid6: which leg, and where on it, each
//! volume block lives, and where each stripe keeps its parity. Pure
//! arithmetic, tested against a model.
//!
//! A stripe is one strip of `strip_blocks` on every leg, at the same leg
//! offset; `parity` of those strips hold parity, the others data. The
//! parity rotates by one leg per stripe (from the last leg down, as SPDK's
//! raid5f does) so that no leg takes all the parity writes, and the data
//! strips follow the parity cyclically, so a sequential read of any
//! `data_legs` strips touches that many different legs.

use super::map::Chunk;
use super::parity::{MAX_PARITY_SHARDS, MIN_DATA_SHARDS};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParityMapError {
    #[error(
        "{legs} legs with {parity} parity: need 1..={MAX_PARITY_SHARDS} parity \
         and at least {MIN_DATA_SHARDS} data legs"
    )]
    Geometry { legs: usize, parity: usize },
    #[error("a strip must have at least one block")]
    EmptyStrip,
}

/// Where one volume block lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub stripe: u64,
    /// Which data strip of the stripe (the shard index in the code).
    pub data_index: usize,
    pub leg: usize,
    pub leg_offset: u64,
}

/// What a leg holds in a given stripe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegRole {
    Data(usize),
    /// Parity shard `n` of the code (0 for raid5f; 0 and 1 for raid6).
    Parity(usize),
}

/// The part of a request that falls in one stripe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StripePiece {
    pub stripe: u64,
    /// First data block of the piece, counted from the stripe's first.
    pub stripe_offset: u64,
    /// How far into the request the piece starts, in blocks.
    pub request_offset: u64,
    pub num_blocks: u64,
    /// The piece is all the stripe's data: a write can compute the parity
    /// from it alone (full-stripe write), without reading anything.
    pub full_stripe: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParityMap {
    legs: usize,
    parity: usize,
    strip_blocks: u64,
}

impl ParityMap {
    pub fn new(legs: usize, parity: usize, strip_blocks: u64) -> Result<Self, ParityMapError> {
        if !(1..=MAX_PARITY_SHARDS).contains(&parity) || legs < parity + MIN_DATA_SHARDS {
            return Err(ParityMapError::Geometry { legs, parity });
        }
        if strip_blocks == 0 {
            return Err(ParityMapError::EmptyStrip);
        }
        Ok(Self {
            legs,
            parity,
            strip_blocks,
        })
    }

    pub fn legs(&self) -> usize {
        self.legs
    }

    pub fn parity_legs_per_stripe(&self) -> usize {
        self.parity
    }

    pub fn data_legs(&self) -> usize {
        self.legs - self.parity
    }

    pub fn strip_blocks(&self) -> u64 {
        self.strip_blocks
    }

    /// Data blocks in one stripe.
    pub fn stripe_blocks(&self) -> u64 {
        self.strip_blocks * self.data_legs() as u64
    }

    /// Volume size for legs of `leg_blocks` blocks each: whole stripes only.
    pub fn volume_blocks(&self, leg_blocks: u64) -> u64 {
        self.stripes(leg_blocks) * self.stripe_blocks()
    }

    /// Whole stripes on legs of `leg_blocks` blocks.
    pub fn stripes(&self, leg_blocks: u64) -> u64 {
        leg_blocks / self.strip_blocks
    }

    /// The leg of parity shard `index` in `stripe`: P on the rotating leg,
    /// Q (raid6) on the next one.
    pub fn parity_leg(&self, stripe: u64, index: usize) -> usize {
        debug_assert!(index < self.parity);
        (self.first_parity_leg(stripe) + index) % self.legs
    }

    /// The legs holding `stripe`'s parity, in shard order.
    pub fn parity_legs(&self, stripe: u64) -> impl Iterator<Item = usize> + use<> {
        let map = *self;
        (0..self.parity).map(move |index| map.parity_leg(stripe, index))
    }

    /// The leg holding data strip `data_index` of `stripe`.
    pub fn data_leg(&self, stripe: u64, data_index: usize) -> usize {
        debug_assert!(data_index < self.data_legs());
        (self.first_parity_leg(stripe) + self.parity + data_index) % self.legs
    }

    /// What `leg` holds in `stripe` (rebuild and scrub walk legs).
    pub fn leg_role(&self, stripe: u64, leg: usize) -> LegRole {
        debug_assert!(leg < self.legs);
        // Position of the leg in the stripe's cyclic order from P.
        let position = (leg + self.legs - self.first_parity_leg(stripe)) % self.legs;
        if position < self.parity {
            LegRole::Parity(position)
        } else {
            LegRole::Data(position - self.parity)
        }
    }

    /// Where volume block `lba` lives.
    pub fn locate(&self, lba: u64) -> Location {
        let stripe = lba / self.stripe_blocks();
        let in_stripe = lba % self.stripe_blocks();
        let data_index = (in_stripe / self.strip_blocks) as usize;
        Location {
            stripe,
            data_index,
            leg: self.data_leg(stripe, data_index),
            leg_offset: stripe * self.strip_blocks + in_stripe % self.strip_blocks,
        }
    }

    /// Splits `[offset, offset + num_blocks)` at stripe boundaries.
    pub fn split(&self, offset: u64, num_blocks: u64) -> Vec<StripePiece> {
        let stripe_blocks = self.stripe_blocks();
        let mut pieces = Vec::new();
        let mut done = 0;
        while done < num_blocks {
            let lba = offset + done;
            let stripe_offset = lba % stripe_blocks;
            let len = (stripe_blocks - stripe_offset).min(num_blocks - done);
            pieces.push(StripePiece {
                stripe: lba / stripe_blocks,
                stripe_offset,
                request_offset: done,
                num_blocks: len,
                full_stripe: stripe_offset == 0 && len == stripe_blocks,
            });
            done += len;
        }
        pieces
    }

    /// Splits a piece at strip boundaries into the leg I/Os of its data;
    /// `request_offset`s stay relative to the request the piece came from.
    pub fn data_chunks(&self, piece: &StripePiece) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        let mut done = 0;
        while done < piece.num_blocks {
            let in_stripe = piece.stripe_offset + done;
            let data_index = (in_stripe / self.strip_blocks) as usize;
            let in_strip = in_stripe % self.strip_blocks;
            let len = (self.strip_blocks - in_strip).min(piece.num_blocks - done);
            chunks.push(Chunk {
                leg: self.data_leg(piece.stripe, data_index),
                leg_offset: piece.stripe * self.strip_blocks + in_strip,
                request_offset: piece.request_offset + done,
                num_blocks: len,
            });
            done += len;
        }
        chunks
    }

    fn first_parity_leg(&self, stripe: u64) -> usize {
        self.legs - 1 - (stripe % self.legs as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    /// The model, written the long way: for each stripe, mark its parity
    /// legs (P counting down from the last leg, Q after it), then deal the
    /// data strips to the remaining legs walking on from the last parity
    /// leg, wrapping around. Returns the volume block by block as
    /// (stripe, data index, leg, leg offset).
    fn model(legs: usize, parity: usize, strip: u64, leg_blocks: u64) -> Vec<Location> {
        let mut blocks = Vec::new();
        for stripe in 0..leg_blocks / strip {
            let mut is_parity = vec![false; legs];
            let p = legs - 1 - (stripe as usize % legs);
            let mut last = p;
            for n in 0..parity {
                last = (p + n) % legs;
                is_parity[last] = true;
            }
            let mut data_legs = Vec::new();
            let mut leg = last;
            while data_legs.len() < legs - parity {
                leg = (leg + 1) % legs;
                if !is_parity[leg] {
                    data_legs.push(leg);
                }
            }
            for (data_index, &leg) in data_legs.iter().enumerate() {
                for b in 0..strip {
                    blocks.push(Location {
                        stripe,
                        data_index,
                        leg,
                        leg_offset: stripe * strip + b,
                    });
                }
            }
        }
        blocks
    }

    fn geometry() -> impl Strategy<Value = (usize, usize, u64, u64)> {
        (1usize..=2, 0usize..5, 1u64..9, 1u64..13).prop_map(|(parity, extra_legs, strip, rows)| {
            (parity + MIN_DATA_SHARDS + extra_legs, parity, strip, rows)
        })
    }

    proptest! {
        #[test]
        fn locate_matches_the_model((legs, parity, strip, rows) in geometry(), spare in 0u64..8) {
            let leg_blocks = rows * strip + spare % strip;
            let map = ParityMap::new(legs, parity, strip).unwrap();
            let model = model(legs, parity, strip, leg_blocks);
            prop_assert_eq!(map.volume_blocks(leg_blocks), model.len() as u64);
            for (lba, expected) in model.iter().enumerate() {
                prop_assert_eq!(map.locate(lba as u64), *expected, "block {}", lba);
            }
        }

        #[test]
        fn data_and_parity_tile_the_legs((legs, parity, strip, rows) in geometry()) {
            let leg_blocks = rows * strip;
            let map = ParityMap::new(legs, parity, strip).unwrap();
            let mut used = HashSet::new();
            for lba in 0..map.volume_blocks(leg_blocks) {
                let at = map.locate(lba);
                prop_assert!(at.leg_offset < leg_blocks);
                prop_assert!(
                    map.parity_legs(at.stripe).all(|p| p != at.leg),
                    "block {} on a parity leg of its stripe", lba
                );
                prop_assert_eq!(map.leg_role(at.stripe, at.leg), LegRole::Data(at.data_index));
                prop_assert!(used.insert((at.leg, at.leg_offset)), "block {} shares a place", lba);
            }
            for stripe in 0..map.stripes(leg_blocks) {
                let parity_legs: Vec<usize> = map.parity_legs(stripe).collect();
                let distinct: HashSet<usize> = parity_legs.iter().copied().collect();
                prop_assert_eq!(distinct.len(), parity);
                for (index, &leg) in parity_legs.iter().enumerate() {
                    prop_assert_eq!(map.leg_role(stripe, leg), LegRole::Parity(index));
                    for b in 0..strip {
                        prop_assert!(used.insert((leg, stripe * strip + b)));
                    }
                }
            }
            // Every block of every leg is data or parity of exactly one stripe.
            prop_assert_eq!(used.len() as u64, legs as u64 * leg_blocks);
        }

        #[test]
        fn split_pieces_and_chunks_match_locate(
            (legs, parity, strip, rows) in geometry(),
            start_frac in 0.0f64..1.0,
            len_frac in 0.0f64..1.0,
        ) {
            let map = ParityMap::new(legs, parity, strip).unwrap();
            let volume = map.volume_blocks(rows * strip);
            let offset = ((volume - 1) as f64 * start_frac) as u64;
            let num_blocks = 1 + (((volume - offset - 1) as f64) * len_frac) as u64;
            let mut covered = 0;
            for piece in map.split(offset, num_blocks) {
                prop_assert_eq!(piece.request_offset, covered, "pieces are contiguous");
                prop_assert!(piece.num_blocks > 0);
                prop_assert!(piece.stripe_offset + piece.num_blocks <= map.stripe_blocks());
                prop_assert_eq!(
                    piece.full_stripe,
                    piece.stripe_offset == 0 && piece.num_blocks == map.stripe_blocks()
                );
                let mut in_piece = 0;
                for chunk in map.data_chunks(&piece) {
                    prop_assert_eq!(chunk.request_offset, piece.request_offset + in_piece);
                    prop_assert!(chunk.num_blocks > 0);
                    for b in 0..chunk.num_blocks {
                        let at = map.locate(offset + chunk.request_offset + b);
                        prop_assert_eq!(at.stripe, piece.stripe);
                        prop_assert_eq!((at.leg, at.leg_offset), (chunk.leg, chunk.leg_offset + b));
                    }
                    in_piece += chunk.num_blocks;
                }
                prop_assert_eq!(in_piece, piece.num_blocks);
                covered += piece.num_blocks;
            }
            prop_assert_eq!(covered, num_blocks);
        }
    }

    #[test]
    fn parity_visits_every_leg_once_per_rotation() {
        for (legs, parity) in [(3, 1), (5, 1), (4, 2), (6, 2)] {
            let map = ParityMap::new(legs, parity, 4).unwrap();
            let mut times_p = vec![0; legs];
            for stripe in 0..legs as u64 * 3 {
                times_p[map.parity_leg(stripe, 0)] += 1;
            }
            assert_eq!(times_p, vec![3; legs], "{legs} legs, {parity} parity");
        }
    }

    #[test]
    fn raid5f_on_three_legs_rotates_from_the_last_leg() {
        let map = ParityMap::new(3, 1, 8).unwrap();
        let layout: Vec<(usize, Vec<usize>)> = (0..3)
            .map(|s| {
                let p = map.parity_leg(s, 0);
                (p, (0..2).map(|d| map.data_leg(s, d)).collect())
            })
            .collect();
        assert_eq!(
            layout,
            vec![(2, vec![0, 1]), (1, vec![2, 0]), (0, vec![1, 2])]
        );
    }

    #[test]
    fn a_write_across_three_stripes_has_one_full_stripe() {
        // raid6 on 6 legs, strips of 4 blocks: 16 data blocks a stripe.
        let map = ParityMap::new(6, 2, 4).unwrap();
        let pieces = map.split(10, 6 + 16 + 3);
        assert_eq!(
            pieces,
            vec![
                StripePiece {
                    stripe: 0,
                    stripe_offset: 10,
                    request_offset: 0,
                    num_blocks: 6,
                    full_stripe: false
                },
                StripePiece {
                    stripe: 1,
                    stripe_offset: 0,
                    request_offset: 6,
                    num_blocks: 16,
                    full_stripe: true
                },
                StripePiece {
                    stripe: 2,
                    stripe_offset: 0,
                    request_offset: 22,
                    num_blocks: 3,
                    full_stripe: false
                },
            ]
        );
        // Stripe 0: P on leg 5, Q on leg 0, data on legs 1..=4.
        let chunks = map.data_chunks(&pieces[0]);
        assert_eq!(
            chunks,
            vec![
                Chunk {
                    leg: 3,
                    leg_offset: 2,
                    request_offset: 0,
                    num_blocks: 2
                },
                Chunk {
                    leg: 4,
                    leg_offset: 0,
                    request_offset: 2,
                    num_blocks: 4
                },
            ]
        );
    }

    #[test]
    fn impossible_geometries_are_refused() {
        for (legs, parity) in [(2, 1), (3, 2), (5, 0), (8, 3)] {
            assert_eq!(
                ParityMap::new(legs, parity, 8),
                Err(ParityMapError::Geometry { legs, parity })
            );
        }
        assert_eq!(ParityMap::new(4, 1, 0), Err(ParityMapError::EmptyStrip));
    }
}
