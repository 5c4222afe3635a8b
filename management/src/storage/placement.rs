//! Where volumes go: free space on each data cluster's drive, derived from
//! the extents recorded for every volume, and the choice of extents for a
//! new volume's legs. Pure functions of recorded state, so a restart always
//! sees the same map.

use super::model::{
    ALLOCATION_UNIT_BYTES, DRIVE_RESERVED_BYTES, Extent, Leg, MAX_STRIP_BYTES, RaidType, Volume,
};

// A leg of whole allocation units is then a whole number of strips of any
// allowed size, so a capacity of whole units per data leg is always whole
// stripes (see `layout`).
const _: () = assert!(ALLOCATION_UNIT_BYTES.is_multiple_of(MAX_STRIP_BYTES));

/// One data cluster's drive as the cluster reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drive {
    pub cluster: u32,
    pub block_size: u32,
    pub num_blocks: u64,
}

impl Drive {
    fn unit_blocks(&self) -> u64 {
        ALLOCATION_UNIT_BYTES / u64::from(self.block_size)
    }

    /// The blocks volumes may use: after the reserved start, up to the
    /// last whole allocation unit.
    pub fn usable(&self) -> std::ops::Range<u64> {
        let unit = self.unit_blocks();
        let start = DRIVE_RESERVED_BYTES / u64::from(self.block_size);
        let end = self.num_blocks / unit * unit;
        start..end.max(start)
    }

    pub fn usable_bytes(&self) -> u64 {
        let usable = self.usable();
        (usable.end - usable.start) * u64::from(self.block_size)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error(
        "leg {leg} of the volume on data cluster {cluster}'s drive cannot grow in place: {why}"
    )]
    NoRoomToGrow {
        leg: usize,
        cluster: u32,
        why: String,
    },
    #[error(
        "the drive of data cluster {cluster} has {free_bytes} bytes free; this volume needs {needed_bytes} there"
    )]
    Insufficient {
        cluster: u32,
        needed_bytes: u64,
        free_bytes: u64,
    },
}

/// Bytes each of `legs` legs holds for a volume of at least
/// `capacity_bytes`: the capacity split evenly, rounded up to whole
/// allocation units (so every leg is also a whole number of strips).
pub fn leg_bytes(capacity_bytes: u64, legs: u32) -> u64 {
    let per_leg = capacity_bytes.div_ceil(u64::from(legs.max(1)));
    per_leg.div_ceil(ALLOCATION_UNIT_BYTES) * ALLOCATION_UNIT_BYTES
}

/// How a new volume lies on its legs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegLayout {
    /// What each leg takes on its drive: its share of the data plus the
    /// raid's superblock area, if the volume has one.
    pub leg_bytes: u64,
    /// The volume's capacity: what was asked for, rounded up.
    pub capacity_bytes: u64,
}

/// The layout of a `raid_type` volume of at least `capacity_bytes` over
/// `legs` legs. Each data leg's share is whole allocation units, hence
/// whole strips: a RAID5/RAID6 volume is always a whole number of stripes
/// (data legs x strip), which the parity raids require. The capacity is
/// rounded *up* to that rather than refused, as for every other type: a
/// host asking for 32 MiB of RAID5 on four legs gets 33 MiB (three data
/// legs of 11 MiB), never less than it asked for.
pub fn layout(raid_type: RaidType, capacity_bytes: u64, legs: u32) -> LegLayout {
    let data_legs = raid_type.data_legs(legs).max(1);
    let share = leg_bytes(capacity_bytes, data_legs);
    LegLayout {
        leg_bytes: share + raid_type.leg_metadata_bytes(),
        capacity_bytes: share * u64::from(data_legs),
    }
}

/// The extents of `drive` that no volume occupies, in order.
pub fn free_extents(drive: &Drive, volumes: &[Volume]) -> Vec<Extent> {
    let mut used: Vec<Extent> = volumes
        .iter()
        .flat_map(|v| v.legs.iter())
        .filter(|leg| leg.cluster == drive.cluster)
        .flat_map(|leg| leg.extents.iter().copied())
        .collect();
    used.sort_by_key(|e| e.offset_blocks);
    let usable = drive.usable();
    let mut free = Vec::new();
    let mut at = usable.start;
    for extent in used {
        if extent.offset_blocks > at {
            free.push(Extent {
                offset_blocks: at,
                num_blocks: extent.offset_blocks.min(usable.end) - at,
            });
        }
        at = at.max(extent.end());
    }
    if at < usable.end {
        free.push(Extent {
            offset_blocks: at,
            num_blocks: usable.end - at,
        });
    }
    free.retain(|e| e.num_blocks > 0);
    free
}

pub fn free_bytes(drive: &Drive, volumes: &[Volume]) -> u64 {
    free_extents(drive, volumes)
        .iter()
        .map(|e| e.num_blocks * u64::from(drive.block_size))
        .sum()
}

/// Chooses `leg_bytes` on each drive of `drives` (in stripe order): the
/// smallest free extent that holds the whole leg, else free extents from
/// the start of the drive until the leg is full.
pub fn allocate(
    drives: &[Drive],
    volumes: &[Volume],
    leg_bytes: u64,
) -> Result<Vec<Leg>, PlacementError> {
    drives
        .iter()
        .map(|drive| {
            let needed = leg_bytes / u64::from(drive.block_size);
            let free = free_extents(drive, volumes);
            let insufficient = || PlacementError::Insufficient {
                cluster: drive.cluster,
                needed_bytes: leg_bytes,
                free_bytes: free_bytes(drive, volumes),
            };
            if let Some(best) = free
                .iter()
                .filter(|e| e.num_blocks >= needed)
                .min_by_key(|e| e.num_blocks)
            {
                return Ok(Leg {
                    cluster: drive.cluster,
                    extents: vec![Extent {
                        offset_blocks: best.offset_blocks,
                        num_blocks: needed,
                    }],
                });
            }
            let mut extents = Vec::new();
            let mut missing = needed;
            for extent in free {
                if missing == 0 {
                    break;
                }
                let take = extent.num_blocks.min(missing);
                extents.push(Extent {
                    offset_blocks: extent.offset_blocks,
                    num_blocks: take,
                });
                missing -= take;
            }
            if missing > 0 {
                return Err(insufficient());
            }
            Ok(Leg {
                cluster: drive.cluster,
                extents,
            })
        })
        .collect()
}

/// The legs of `volume` grown to `leg_bytes` each, every leg extended in
/// place: its one extent takes the free blocks right after it. Growing
/// this way keeps every existing block where it is (the stripe map does
/// not depend on the leg size).
pub fn grow(
    drives: &[Drive],
    volumes: &[Volume],
    volume: &Volume,
    leg_bytes: u64,
) -> Result<Vec<Leg>, PlacementError> {
    let others: Vec<Volume> = volumes
        .iter()
        .filter(|v| v.id != volume.id)
        .cloned()
        .collect();
    volume
        .legs
        .iter()
        .enumerate()
        .map(|(index, leg)| {
            let no_room = |why: String| PlacementError::NoRoomToGrow {
                leg: index,
                cluster: leg.cluster,
                why,
            };
            let drive = drives
                .iter()
                .find(|d| d.cluster == leg.cluster)
                .ok_or_else(|| no_room("the drive is not known".into()))?;
            let [extent] = leg.extents.as_slice() else {
                return Err(no_room(format!(
                    "it lies in {} pieces of free space",
                    leg.extents.len()
                )));
            };
            let wanted = leg_bytes / u64::from(drive.block_size);
            let end = extent.offset_blocks + wanted;
            let free_after = free_extents(drive, &others)
                .into_iter()
                .find(|free| {
                    free.offset_blocks <= extent.offset_blocks && extent.offset_blocks < free.end()
                })
                .map_or(extent.end(), |free| free.end());
            if end > free_after {
                return Err(no_room(format!(
                    "{} bytes after it are free, {} more are needed",
                    (free_after - extent.end()) * u64::from(drive.block_size),
                    (wanted - extent.num_blocks) * u64::from(drive.block_size)
                )));
            }
            Ok(Leg {
                cluster: leg.cluster,
                extents: vec![Extent {
                    offset_blocks: extent.offset_blocks,
                    num_blocks: wanted,
                }],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn drive(cluster: u32, mib: u64) -> Drive {
        Drive {
            cluster,
            block_size: 512,
            num_blocks: mib * MIB / 512,
        }
    }

    fn volume(id: u64, legs: Vec<Leg>) -> Volume {
        super::super::model::test_volume(id, legs)
    }

    #[test]
    fn legs_are_whole_allocation_units() {
        assert_eq!(leg_bytes(1 << 30, 4), 256 * MIB);
        assert_eq!(leg_bytes(1, 4), MIB);
        assert_eq!(leg_bytes(3 * MIB + 1, 3), 2 * MIB);
        assert_eq!(leg_bytes(10 * MIB, 1), 10 * MIB);
    }

    #[test]
    fn parity_volumes_are_whole_stripes_with_the_superblock_area_on_every_leg() {
        let strip = 64 << 10;
        for (raid_type, capacity, legs, leg_bytes, rounded) in [
            // Two data legs of 16 MiB, each leg 4 MiB more.
            (RaidType::Raid6, 32 * MIB, 4, 20 * MIB, 32 * MIB),
            // Three data legs: 32 MiB rounds up to 3 x 11 MiB.
            (RaidType::Raid5, 32 * MIB, 4, 15 * MIB, 33 * MIB),
            (RaidType::Raid5, 100 * MIB + 1, 3, 55 * MIB, 102 * MIB),
            (RaidType::Raid6, 1, 5, 5 * MIB, 3 * MIB),
            (RaidType::Raid6, 64 * MIB, 34, 6 * MIB, 64 * MIB),
            // The mirrors as before: RAID10 over 4 has two data legs.
            (RaidType::Raid10, 32 * MIB, 4, 20 * MIB, 32 * MIB),
            (RaidType::Raid1, 32 * MIB, 2, 36 * MIB, 32 * MIB),
            // Striped volumes hold no superblock.
            (RaidType::Raid0, 32 * MIB, 4, 8 * MIB, 32 * MIB),
        ] {
            let got = layout(raid_type, capacity, legs);
            assert_eq!(
                got,
                LegLayout {
                    leg_bytes,
                    capacity_bytes: rounded
                },
                "{raid_type:?} {capacity} over {legs}"
            );
            let data_legs = u64::from(raid_type.data_legs(legs));
            assert_eq!(
                rounded % (data_legs * strip),
                0,
                "{raid_type:?}: whole stripes"
            );
            // Whole stripes for the largest strip too.
            assert_eq!(rounded % (data_legs * MAX_STRIP_BYTES), 0);
        }
    }

    #[test]
    fn the_reserved_start_and_the_ragged_end_are_never_used() {
        let mut d = drive(0, 8);
        d.num_blocks += 100; // not a whole MiB
        assert_eq!(d.usable(), 2048..16384);
        assert_eq!(d.usable_bytes(), 7 * MIB);
        assert_eq!(
            free_extents(&d, &[]),
            vec![Extent {
                offset_blocks: 2048,
                num_blocks: 14336
            }]
        );
        assert_eq!(drive(0, 1).usable_bytes(), 0);
    }

    #[test]
    fn allocation_fills_gaps_and_never_overlaps() {
        let drives = [drive(0, 9), drive(1, 9)];
        let mut volumes = Vec::new();
        for id in 1..=4 {
            let legs = allocate(&drives, &volumes, 2 * MIB).unwrap();
            volumes.push(volume(id, legs));
        }
        // 8 usable MiB per drive, 2 per leg: full.
        let full = allocate(&drives, &volumes, MIB).unwrap_err();
        assert_eq!(
            full,
            PlacementError::Insufficient {
                cluster: 0,
                needed_bytes: MIB,
                free_bytes: 0
            }
        );
        // Free volumes 1 and 3: two 2 MiB holes; a 3 MiB leg takes both.
        volumes.retain(|v| v.id % 2 == 0);
        let legs = allocate(&drives, &volumes, 3 * MIB).unwrap();
        assert_eq!(legs[0].extents.len(), 2);
        assert_eq!(legs[0].blocks() * 512, 3 * MIB);
        volumes.push(volume(5, legs));
        // Every block is used at most once.
        for d in &drives {
            let mut extents: Vec<Extent> = volumes
                .iter()
                .flat_map(|v| v.legs.iter().filter(|l| l.cluster == d.cluster))
                .flat_map(|l| l.extents.clone())
                .collect();
            extents.sort_by_key(|e| e.offset_blocks);
            for pair in extents.windows(2) {
                assert!(pair[0].end() <= pair[1].offset_blocks, "{pair:?}");
            }
            assert!(extents.iter().all(|e| e.offset_blocks >= 2048));
        }
        assert_eq!(free_bytes(&drives[0], &volumes), MIB);
    }

    #[test]
    fn legs_grow_only_into_the_free_space_right_after_them() {
        let drives = [drive(0, 17), drive(1, 17)];
        let a = volume(1, allocate(&drives, &[], 4 * MIB).unwrap());
        let b = volume(
            2,
            allocate(&drives, std::slice::from_ref(&a), 4 * MIB).unwrap(),
        );
        let volumes = [a.clone(), b.clone()];
        // a is followed by b: no room.
        let blocked = grow(&drives, &volumes, &a, 5 * MIB).unwrap_err();
        assert!(
            matches!(blocked, PlacementError::NoRoomToGrow { leg: 0, .. }),
            "{blocked}"
        );
        // b is followed by the free tail (8 MiB).
        let grown = grow(&drives, &volumes, &b, 12 * MIB).unwrap();
        assert_eq!(
            grown[1].extents[0].offset_blocks,
            b.legs[1].extents[0].offset_blocks
        );
        assert_eq!(grown[1].blocks() * 512, 12 * MIB);
        assert!(grow(&drives, &volumes, &b, 13 * MIB).is_err());
        // Once b is gone, a can take its room.
        assert_eq!(
            grow(&drives, std::slice::from_ref(&a), &a, 16 * MIB).unwrap()[0].blocks() * 512,
            16 * MIB
        );
    }

    #[test]
    fn the_tightest_hole_is_preferred() {
        let drives = [drive(0, 17)];
        let a = volume(1, allocate(&drives, &[], 4 * MIB).unwrap());
        let b = volume(
            2,
            allocate(&drives, std::slice::from_ref(&a), 2 * MIB).unwrap(),
        );
        let c = volume(
            3,
            allocate(&drives, &[a.clone(), b.clone()], 6 * MIB).unwrap(),
        );
        // Holes after deleting a and c: 4 MiB at the start, and c's 6 MiB
        // run together with the free tail (10 MiB). A 3 MiB leg goes into
        // the 4 MiB hole.
        let volumes = [b];
        let _ = c;
        let legs = allocate(&drives, &volumes, 3 * MIB).unwrap();
        assert_eq!(legs[0].extents[0].offset_blocks, 2048);
    }
}
