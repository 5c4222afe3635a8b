//! Address mapping of the raid levels: which leg, and where on it, each
//! block of the volume lives. Pure arithmetic, tested against a model.

/// One piece of a request after splitting: `num_blocks` blocks at
/// `leg_offset` on leg `leg`, which are the request's blocks starting
/// `request_offset` blocks into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    pub leg: usize,
    pub leg_offset: u64,
    pub request_offset: u64,
    pub num_blocks: u64,
}

/// RAID0: strips of `strip_blocks` dealt round-robin over the legs.
#[derive(Debug, Clone, Copy)]
pub struct StripeMap {
    pub legs: usize,
    pub strip_blocks: u64,
}

impl StripeMap {
    /// Volume size for legs of `leg_blocks` blocks each: whole strips only.
    pub fn volume_blocks(&self, leg_blocks: u64) -> u64 {
        (leg_blocks / self.strip_blocks) * self.strip_blocks * self.legs as u64
    }

    /// Where volume block `lba` lives: (leg, block on that leg).
    pub fn locate(&self, lba: u64) -> (usize, u64) {
        let strip = lba / self.strip_blocks;
        let leg = (strip % self.legs as u64) as usize;
        let leg_strip = strip / self.legs as u64;
        (leg, leg_strip * self.strip_blocks + lba % self.strip_blocks)
    }

    /// Splits `[offset, offset + num_blocks)` at strip boundaries.
    pub fn split(&self, offset: u64, num_blocks: u64) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        let mut done = 0;
        while done < num_blocks {
            let lba = offset + done;
            let (leg, leg_offset) = self.locate(lba);
            let left_in_strip = self.strip_blocks - lba % self.strip_blocks;
            let len = left_in_strip.min(num_blocks - done);
            chunks.push(Chunk {
                leg,
                leg_offset,
                request_offset: done,
                num_blocks: len,
            });
            done += len;
        }
        chunks
    }
}

/// Concat: the legs one after another.
#[derive(Debug, Clone)]
pub struct ConcatMap {
    /// First volume block of each leg, plus the volume size at the end.
    starts: Vec<u64>,
}

impl ConcatMap {
    pub fn new(leg_blocks: &[u64]) -> Self {
        let mut starts = Vec::with_capacity(leg_blocks.len() + 1);
        let mut total = 0u64;
        starts.push(0);
        for &blocks in leg_blocks {
            total += blocks;
            starts.push(total);
        }
        Self { starts }
    }

    pub fn volume_blocks(&self) -> u64 {
        *self.starts.last().expect("at least the 0 start")
    }

    /// Splits `[offset, offset + num_blocks)` at leg boundaries.
    pub fn split(&self, offset: u64, num_blocks: u64) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        let mut done = 0;
        while done < num_blocks {
            let lba = offset + done;
            // The leg whose range holds lba: last start <= lba.
            let leg = self.starts.partition_point(|&s| s <= lba) - 1;
            let leg_end = self.starts[leg + 1];
            let len = (leg_end - lba).min(num_blocks - done);
            chunks.push(Chunk {
                leg,
                leg_offset: lba - self.starts[leg],
                request_offset: done,
                num_blocks: len,
            });
            done += len;
        }
        chunks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The model: a volume block by block, built by walking strips in order.
    fn stripe_model(legs: usize, strip: u64, leg_blocks: u64) -> Vec<(usize, u64)> {
        let strips_per_leg = leg_blocks / strip;
        let mut blocks = Vec::new();
        for row in 0..strips_per_leg {
            for leg in 0..legs {
                for b in 0..strip {
                    blocks.push((leg, row * strip + b));
                }
            }
        }
        blocks
    }

    fn check_chunks(chunks: &[Chunk], offset: u64, num_blocks: u64, model: &[(usize, u64)]) {
        let mut covered = 0;
        for chunk in chunks {
            assert_eq!(
                chunk.request_offset, covered,
                "chunks are in order and contiguous"
            );
            assert!(chunk.num_blocks > 0);
            for b in 0..chunk.num_blocks {
                let lba = offset + chunk.request_offset + b;
                assert_eq!(
                    model[lba as usize],
                    (chunk.leg, chunk.leg_offset + b),
                    "block {lba}"
                );
            }
            covered += chunk.num_blocks;
        }
        assert_eq!(covered, num_blocks);
    }

    proptest! {
        #[test]
        fn stripe_split_matches_the_model(
            legs in 1usize..6,
            strip in 1u64..17,
            rows in 1u64..9,
            extra in 0u64..16,
            start_frac in 0.0f64..1.0,
            len_frac in 0.0f64..1.0,
        ) {
            let leg_blocks = rows * strip + extra % strip;
            let map = StripeMap { legs, strip_blocks: strip };
            let volume = map.volume_blocks(leg_blocks);
            let model = stripe_model(legs, strip, leg_blocks);
            prop_assert_eq!(volume, model.len() as u64);
            let offset = ((volume - 1) as f64 * start_frac) as u64;
            let num_blocks = 1 + (((volume - offset - 1) as f64) * len_frac) as u64;
            check_chunks(&map.split(offset, num_blocks), offset, num_blocks, &model);
        }

        #[test]
        fn concat_split_matches_the_model(
            legs in proptest::collection::vec(1u64..40, 1..6),
            start_frac in 0.0f64..1.0,
            len_frac in 0.0f64..1.0,
        ) {
            let map = ConcatMap::new(&legs);
            let model: Vec<(usize, u64)> = legs
                .iter()
                .enumerate()
                .flat_map(|(leg, &n)| (0..n).map(move |b| (leg, b)))
                .collect();
            let volume = map.volume_blocks();
            prop_assert_eq!(volume, model.len() as u64);
            let offset = ((volume - 1) as f64 * start_frac) as u64;
            let num_blocks = 1 + (((volume - offset - 1) as f64) * len_frac) as u64;
            check_chunks(&map.split(offset, num_blocks), offset, num_blocks, &model);
        }
    }

    #[test]
    fn a_request_across_three_strips() {
        let map = StripeMap {
            legs: 2,
            strip_blocks: 8,
        };
        assert_eq!(
            map.split(6, 12),
            vec![
                Chunk {
                    leg: 0,
                    leg_offset: 6,
                    request_offset: 0,
                    num_blocks: 2
                },
                Chunk {
                    leg: 1,
                    leg_offset: 0,
                    request_offset: 2,
                    num_blocks: 8
                },
                Chunk {
                    leg: 0,
                    leg_offset: 8,
                    request_offset: 10,
                    num_blocks: 2
                },
            ]
        );
    }
}
