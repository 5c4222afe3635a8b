//! `raid`: virtual bdevs built on other bdevs, SPDK's `bdev_raid` levels:
//! raid0 (striping) and concat here, raid1 and raid10 (mirrors that survive
//! failed legs, with rebuild, resync and check) in [`mirror`].
//!
//! A raid bdev claims its base bdevs. raid0 and concat split requests at
//! strip (raid0) or leg (concat) boundaries; the pieces go to the legs
//! concurrently as views of the request's buffer, so no data is copied, and
//! the request fails if any piece fails.

pub mod array;
pub mod journal;
#[cfg(test)]
mod journal_tests;
pub mod legs;
pub mod map;
pub mod mirror;
#[cfg(test)]
mod mirror_tests;
pub mod parity;
pub mod parity_map;
pub mod process;
pub mod regions;
pub mod stripe;
#[cfg(test)]
mod stripe_tests;
pub mod superblock;

use std::rc::Rc;
use std::sync::Arc;

use futures_util::future::join_all;
use serde_json::{Value, json};
use uuid::Uuid;

use self::map::{Chunk, ConcatMap, StripeMap};
use super::{
    BackendChannel, Bdev, BdevBackend, BdevError, BdevRegistry, BdevSpec, IoChannel, IoCompletion,
    IoError, IoFuture, IoKind, IoRequest,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaidLevel {
    Raid0,
    Raid1,
    Raid10,
    /// One XOR parity strip per stripe (SPDK's name).
    Raid5f,
    /// Two Reed-Solomon parity strips per stripe (P+Q).
    Raid6,
    Concat,
}

impl RaidLevel {
    /// Accepts SPDK's spellings: "raid0"/"0", "raid1"/"1", "raid10"/"10",
    /// "concat".
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "raid0" | "0" => Some(Self::Raid0),
            "raid1" | "1" => Some(Self::Raid1),
            "raid10" | "10" => Some(Self::Raid10),
            "raid5f" | "5f" => Some(Self::Raid5f),
            "raid6" | "6" => Some(Self::Raid6),
            "concat" => Some(Self::Concat),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Raid0 => "raid0",
            Self::Raid1 => "raid1",
            Self::Raid10 => "raid10",
            Self::Raid5f => "raid5f",
            Self::Raid6 => "raid6",
            Self::Concat => "concat",
        }
    }

    /// The level's code in a superblock.
    pub fn code(self) -> u8 {
        match self {
            Self::Raid0 => 0,
            Self::Raid1 => 1,
            Self::Raid10 => 10,
            Self::Raid5f => 5,
            Self::Raid6 => 6,
            Self::Concat => 100,
        }
    }

    /// Mirrored levels, built by [`mirror`].
    pub fn is_mirrored(self) -> bool {
        matches!(self, Self::Raid1 | Self::Raid10)
    }

    /// Parity levels, built by [`stripe`].
    pub fn is_parity(self) -> bool {
        matches!(self, Self::Raid5f | Self::Raid6)
    }

    /// Levels that survive failed legs (and keep a superblock).
    pub fn is_redundant(self) -> bool {
        self.is_mirrored() || self.is_parity()
    }
}

/// What `bdev_raid_create` asks for.
#[derive(Debug, Clone)]
pub struct RaidConfig {
    pub name: String,
    pub level: RaidLevel,
    /// Strip size for raid0, raid10 and concat; must be 0 for raid1.
    pub strip_size_kb: u32,
    /// Base bdev names, one per slot. With a superblock, a name not (yet)
    /// registered leaves its slot missing, as long as every mirror column
    /// keeps a leg.
    pub base_bdevs: Vec<String>,
    pub uuid: Option<Uuid>,
    /// Keep the array's description and write-intent bitmap on the legs
    /// (mirrored levels only), so it can be assembled again anywhere.
    pub superblock: bool,
}

/// A redundant raid bdev (mirror or parity), for the RPCs that change
/// its legs or start its processes.
pub enum Redundant<'a> {
    Mirror(&'a mirror::MirrorRaid),
    Parity(&'a stripe::StripeRaid),
}

impl<'a> Redundant<'a> {
    /// `bdev` as a redundant raid, if it is one.
    pub fn of(bdev: &'a Bdev) -> Option<Self> {
        let any = bdev.backend().as_any()?;
        if let Some(raid) = any.downcast_ref::<mirror::MirrorRaid>() {
            return Some(Self::Mirror(raid));
        }
        any.downcast_ref::<stripe::StripeRaid>().map(Self::Parity)
    }

    pub fn legs(&self) -> &legs::Legs {
        match self {
            Self::Mirror(raid) => &raid.state.legs,
            Self::Parity(raid) => &raid.state.legs,
        }
    }

    pub async fn add_base_bdev(
        &self,
        registry: &BdevRegistry,
        base: &str,
    ) -> Result<(), BdevError> {
        match self {
            Self::Mirror(raid) => mirror::add_base_bdev(raid, registry, base).await,
            Self::Parity(raid) => stripe::add_base_bdev(raid, registry, base).await,
        }
    }

    pub async fn remove_base_bdev(&self, base: &str) -> Result<(), BdevError> {
        match self {
            Self::Mirror(raid) => mirror::remove_base_bdev(raid, base).await,
            Self::Parity(raid) => stripe::remove_base_bdev(raid, base).await,
        }
    }

    /// Queues a check (scrub) of the mirrors or the parity.
    pub fn request_check(&self, repair: bool) -> Result<(), String> {
        match self {
            Self::Mirror(raid) => process::request_check(&raid.state, repair),
            Self::Parity(raid) => process::request_check(&raid.state, repair),
        }
    }
}

/// Most legs one raid bdev may have.
pub const MAX_BASE_BDEVS: usize = 64;

enum Layout {
    Stripe(StripeMap),
    Concat(ConcatMap),
}

struct Raid {
    state: Arc<RaidState>,
}

/// What the raid bdev and its channels on every reactor share.
struct RaidState {
    name: String,
    level: RaidLevel,
    strip_size_kb: u32,
    legs: Vec<Arc<Bdev>>,
    layout: Layout,
}

/// Validates `config`, claims the base bdevs and registers the raid bdev.
/// Mirrored levels read their legs' superblocks, so this runs on a reactor.
pub async fn create_raid(
    registry: &BdevRegistry,
    config: RaidConfig,
) -> Result<Arc<Bdev>, BdevError> {
    check_names(&config)?;
    if config.level.is_mirrored() {
        return mirror::assemble(registry, config).await;
    }
    if config.level.is_parity() {
        return stripe::assemble(registry, config).await;
    }
    if config.superblock {
        return Err(BdevError::Invalid(format!(
            "{} takes no superblock (only the redundant levels keep one)",
            config.level.name()
        )));
    }
    create_striped(registry, config)
}

fn check_names(config: &RaidConfig) -> Result<(), BdevError> {
    if config.base_bdevs.is_empty() || config.base_bdevs.len() > MAX_BASE_BDEVS {
        return Err(BdevError::Invalid(format!(
            "{} needs 1 to {MAX_BASE_BDEVS} base bdevs, got {}",
            config.level.name(),
            config.base_bdevs.len()
        )));
    }
    for (i, name) in config.base_bdevs.iter().enumerate() {
        if config.base_bdevs[..i].contains(name) {
            return Err(BdevError::Invalid(format!(
                "base bdev {name} is listed twice"
            )));
        }
    }
    Ok(())
}

/// raid0 and concat.
fn create_striped(registry: &BdevRegistry, config: RaidConfig) -> Result<Arc<Bdev>, BdevError> {
    let legs = config
        .base_bdevs
        .iter()
        .map(|name| registry.get(name))
        .collect::<Result<Vec<_>, _>>()?;
    let block_size = legs[0].block_size();
    if let Some(odd) = legs.iter().find(|l| l.block_size() != block_size) {
        return Err(BdevError::Invalid(format!(
            "base bdev {} has {}-byte blocks, {} has {block_size}: all legs need the same block size",
            odd.name(),
            odd.block_size(),
            legs[0].name()
        )));
    }
    let (layout, num_blocks) = plan_layout(&config, &legs, block_size)?;

    let mut claimed = Vec::new();
    for leg in &legs {
        if let Err(e) = leg.claim(&config.name) {
            claimed.iter().for_each(|l: &&Arc<Bdev>| l.release_claim());
            return Err(e);
        }
        claimed.push(leg);
    }
    let raid = RaidState {
        name: config.name.clone(),
        level: config.level,
        strip_size_kb: config.strip_size_kb,
        legs: legs.clone(),
        layout,
    };
    let spec = BdevSpec {
        name: config.name,
        uuid: config.uuid,
        block_size,
        num_blocks,
    };
    let raid = Raid {
        state: Arc::new(raid),
    };
    registry.register(spec, Box::new(raid)).inspect_err(|_| {
        legs.iter().for_each(|l| l.release_claim());
    })
}

fn plan_layout(
    config: &RaidConfig,
    legs: &[Arc<Bdev>],
    block_size: u32,
) -> Result<(Layout, u64), BdevError> {
    let smallest = legs
        .iter()
        .map(|l| l.num_blocks())
        .min()
        .expect("at least one leg");
    match config.level {
        RaidLevel::Raid1 | RaidLevel::Raid10 | RaidLevel::Raid5f | RaidLevel::Raid6 => {
            unreachable!("redundant levels are assembled by mirror and stripe")
        }
        RaidLevel::Raid0 | RaidLevel::Concat => {
            let strip_bytes = u64::from(config.strip_size_kb) * 1024;
            if !config.strip_size_kb.is_power_of_two() || strip_bytes < u64::from(block_size) {
                return Err(BdevError::Invalid(format!(
                    "strip_size_kb {} must be a power of two of at least one block ({block_size} bytes)",
                    config.strip_size_kb
                )));
            }
            let strip_blocks = strip_bytes / u64::from(block_size);
            if config.level == RaidLevel::Concat {
                let sizes: Vec<u64> = legs.iter().map(|l| l.num_blocks()).collect();
                let map = ConcatMap::new(&sizes);
                let blocks = map.volume_blocks();
                return Ok((Layout::Concat(map), blocks));
            }
            let map = StripeMap {
                legs: legs.len(),
                strip_blocks,
            };
            let blocks = map.volume_blocks(smallest);
            if blocks == 0 {
                return Err(BdevError::Invalid(format!(
                    "the smallest base bdev ({smallest} blocks) is smaller than one {}-KiB strip",
                    config.strip_size_kb
                )));
            }
            Ok((Layout::Stripe(map), blocks))
        }
    }
}

impl RaidState {
    /// `bdev_raid_get_bdevs`' description of this raid.
    pub fn info(&self) -> Value {
        json!({
            "name": self.name,
            "raid_level": self.level.name(),
            "strip_size_kb": self.strip_size_kb,
            "state": "online",
            "superblock": false,
            "num_base_bdevs": self.legs.len(),
            "num_base_bdevs_discovered": self.legs.len(),
            "num_base_bdevs_operational": self.legs.len(),
            "base_bdevs_list": self.legs.iter().map(|leg| json!({
                "name": leg.name(),
                "uuid": leg.uuid().to_string(),
                "is_configured": true,
                "data_offset": 0,
                "data_size": leg.num_blocks(),
            })).collect::<Vec<_>>(),
        })
    }
}

impl BdevBackend for Raid {
    fn module(&self) -> &'static str {
        "raid"
    }

    fn product_name(&self) -> &'static str {
        "Raid Volume"
    }

    fn supports(&self, kind: IoKind) -> bool {
        self.state.legs.iter().all(|leg| leg.supports(kind))
    }

    fn create_channel(&self) -> Box<dyn BackendChannel> {
        Box::new(RaidChannel {
            legs: self.state.legs.iter().map(|leg| leg.channel()).collect(),
            raid: Arc::clone(&self.state),
        })
    }

    fn driver_specific(&self) -> Option<(&'static str, Value)> {
        Some(("raid", self.state.info()))
    }

    fn base_bdevs(&self) -> Vec<Arc<Bdev>> {
        self.state.legs.clone()
    }

    /// raid0 and raid1 grow as far as their legs have grown (raid0's strip
    /// map does not depend on the leg size, so every block stays where it
    /// was); concat would move its later legs and does not grow.
    fn prepare_growth(&self, blocks: u64) -> Result<(), BdevError> {
        let smallest = self
            .state
            .legs
            .iter()
            .map(|l| l.num_blocks())
            .min()
            .expect("at least one leg");
        let room = match &self.state.layout {
            Layout::Stripe(map) => map.volume_blocks(smallest),
            Layout::Concat(_) => {
                return Err(BdevError::Invalid(format!(
                    "concat {} cannot grow: its later legs would move",
                    self.state.name
                )));
            }
        };
        if blocks > room {
            return Err(BdevError::Invalid(format!(
                "{} can grow to {room} blocks with its legs as they are, not {blocks}",
                self.state.name
            )));
        }
        Ok(())
    }

    /// How large the legs let the raid be now.
    fn growth_room(&self) -> Option<u64> {
        let smallest = self.state.legs.iter().map(|l| l.num_blocks()).min()?;
        match &self.state.layout {
            Layout::Stripe(map) => Some(map.volume_blocks(smallest)),
            Layout::Concat(_) => None,
        }
    }
}

struct RaidChannel {
    legs: Vec<Rc<IoChannel>>,
    raid: Arc<RaidState>,
}

impl BackendChannel for RaidChannel {
    fn submit(&self, io: IoRequest) -> IoFuture {
        let raid = Arc::clone(&self.raid);
        let legs = self.legs.clone();
        match &self.raid.layout {
            Layout::Stripe(map) => {
                let chunks = map.split(io.offset_blocks, io.num_blocks);
                Box::pin(split_io(raid, legs, io, chunks))
            }
            Layout::Concat(map) => {
                let chunks = map.split(io.offset_blocks, io.num_blocks);
                Box::pin(split_io(raid, legs, io, chunks))
            }
        }
    }
}

/// raid0 and concat: each chunk to its leg, concurrently.
async fn split_io(
    raid: Arc<RaidState>,
    legs: Vec<Rc<IoChannel>>,
    io: IoRequest,
    chunks: Vec<Chunk>,
) -> IoCompletion {
    if matches!(io.kind, IoKind::Flush | IoKind::Reset) {
        let all = legs
            .iter()
            .map(|leg| leg.submit(IoRequest::range(io.kind, 0, 0)));
        let result = first_error(join_all(all).await);
        return IoCompletion::new(io.buf, result);
    }
    let block_size = raid.legs[0].block_size() as usize;
    // One chunk: forward the request itself, no views needed.
    if let [chunk] = chunks.as_slice() {
        let forwarded = IoRequest {
            offset_blocks: chunk.leg_offset,
            ..io
        };
        return legs[chunk.leg].submit(forwarded).await;
    }
    let pieces = chunks.iter().map(|chunk| {
        let buf = io.buf.as_ref().map(|buf| {
            // SAFETY: chunks cover disjoint ranges of the request, and the
            // parent buffer is not touched until every piece completed.
            unsafe {
                buf.view(
                    chunk.request_offset as usize * block_size,
                    chunk.num_blocks as usize * block_size,
                )
            }
        });
        legs[chunk.leg].submit(IoRequest {
            kind: io.kind,
            offset_blocks: chunk.leg_offset,
            num_blocks: chunk.num_blocks,
            buf,
            fua: io.fua,
        })
    });
    let result = first_error(join_all(pieces).await);
    IoCompletion::new(io.buf, result)
}

fn first_error(completions: Vec<IoCompletion>) -> Result<(), IoError> {
    completions
        .into_iter()
        .find_map(|c| c.result.err())
        .map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bdev::IoBuf;
    use crate::bdev::channel::submit;
    use crate::bdev::malloc::create_malloc;
    use crate::bdev::testing::block_on;

    fn malloc(registry: &BdevRegistry, name: &str, blocks: u64) -> Arc<Bdev> {
        let spec = BdevSpec {
            name: name.into(),
            uuid: None,
            block_size: 512,
            num_blocks: blocks,
        };
        create_malloc(registry, spec).unwrap()
    }

    fn config(name: &str, level: RaidLevel, strip_size_kb: u32, legs: &[&str]) -> RaidConfig {
        RaidConfig {
            name: name.into(),
            level,
            strip_size_kb,
            base_bdevs: legs.iter().map(|s| s.to_string()).collect(),
            uuid: None,
            superblock: false,
        }
    }

    /// Every block of the volume gets its own index as content.
    fn pattern(blocks: u64) -> IoBuf {
        let mut buf = IoBuf::new(blocks as usize * 512);
        for (i, block) in buf.as_mut_slice().chunks_mut(512).enumerate() {
            block.fill((i % 251) as u8);
        }
        buf
    }

    #[test]
    fn raid0_places_strips_round_robin_and_reads_back() {
        let registry = BdevRegistry::new();
        let legs = [malloc(&registry, "a", 70), malloc(&registry, "b", 64)];
        let raid = block_on(create_raid(
            &registry,
            config("r0", RaidLevel::Raid0, 4, &["a", "b"]),
        ))
        .unwrap();
        // Whole 8-block strips of the smaller leg, times two legs.
        assert_eq!(raid.num_blocks(), 128);
        block_on(async {
            let written = submit(&raid, IoRequest::write(0, pattern(128), 512)).await;
            assert!(written.result.is_ok());
            let read = submit(&raid, IoRequest::read(0, IoBuf::new(128 * 512), 512)).await;
            assert_eq!(read.buf.unwrap().as_slice(), pattern(128).as_slice());
            // Strip 1 (volume blocks 8..16) is leg b's first strip.
            let leg = submit(&legs[1], IoRequest::read(0, IoBuf::new(8 * 512), 512)).await;
            assert!(
                leg.buf
                    .unwrap()
                    .as_slice()
                    .chunks(512)
                    .enumerate()
                    .all(|(i, b)| b[0] == (8 + i) as u8)
            );
            // An unaligned request across three strips.
            let read = submit(&raid, IoRequest::read(5, IoBuf::new(20 * 512), 512)).await;
            let whole = pattern(128);
            assert_eq!(
                read.buf.unwrap().as_slice(),
                &whole.as_slice()[5 * 512..25 * 512]
            );
        });
    }

    #[test]
    fn claims_prevent_reuse_and_deletion_until_the_raid_goes() {
        let registry = BdevRegistry::new();
        malloc(&registry, "a", 64);
        malloc(&registry, "b", 64);
        block_on(create_raid(
            &registry,
            config("r1", RaidLevel::Raid1, 0, &["a", "b"]),
        ))
        .unwrap();
        let again = block_on(create_raid(
            &registry,
            config("r2", RaidLevel::Concat, 4, &["a"]),
        ))
        .unwrap_err();
        assert!(matches!(again, BdevError::Busy { .. }), "{again}");
        let delete = registry.unregister("a", "malloc").unwrap_err();
        assert!(matches!(delete, BdevError::Busy { .. }), "{delete}");
        registry.unregister("r1", "raid").unwrap();
        registry.unregister("a", "malloc").unwrap();
    }

    #[test]
    fn bad_configurations_are_refused_and_claim_nothing() {
        let registry = BdevRegistry::new();
        malloc(&registry, "a", 64);
        malloc(&registry, "b", 64);
        let cases = [
            config("x", RaidLevel::Raid1, 0, &["a"]),
            config("x", RaidLevel::Raid0, 3, &["a", "b"]),
            config("x", RaidLevel::Raid0, 64, &["a", "b"]),
            config("x", RaidLevel::Raid1, 4, &["a", "b"]),
            config("x", RaidLevel::Raid0, 4, &["a", "a"]),
            config("x", RaidLevel::Raid0, 4, &["a", "missing"]),
        ];
        for case in cases {
            assert!(
                block_on(create_raid(&registry, case.clone())).is_err(),
                "{case:?}"
            );
        }
        assert!(registry.list().iter().all(|b| b.claimed_by().is_none()));
    }

    /// A leg that fails every I/O.
    struct Broken;
    struct BrokenChannel;
    impl BdevBackend for Broken {
        fn module(&self) -> &'static str {
            "broken"
        }
        fn product_name(&self) -> &'static str {
            "Broken disk"
        }
        fn supports(&self, _: IoKind) -> bool {
            true
        }
        fn create_channel(&self) -> Box<dyn BackendChannel> {
            Box::new(BrokenChannel)
        }
    }
    impl BackendChannel for BrokenChannel {
        fn submit(&self, io: IoRequest) -> IoFuture {
            Box::pin(std::future::ready(IoCompletion::new(
                io.buf,
                Err(IoError::Io),
            )))
        }
    }

    #[test]
    fn raid1_survives_a_failing_leg_and_fails_cleanly_without_legs() {
        let registry = BdevRegistry::new();
        malloc(&registry, "good", 64);
        let spec = BdevSpec {
            name: "bad".into(),
            uuid: None,
            block_size: 512,
            num_blocks: 64,
        };
        registry.register(spec, Box::new(Broken)).unwrap();
        let raid = block_on(create_raid(
            &registry,
            config("m", RaidLevel::Raid1, 0, &["bad", "good"]),
        ))
        .unwrap();
        block_on(async {
            assert!(
                submit(&raid, IoRequest::write(0, pattern(64), 512))
                    .await
                    .result
                    .is_ok()
            );
            for _ in 0..4 {
                let read = submit(&raid, IoRequest::read(0, IoBuf::new(64 * 512), 512)).await;
                assert!(read.result.is_ok());
                assert_eq!(read.buf.unwrap().as_slice(), pattern(64).as_slice());
            }
        });
        let info = raid.describe()["driver_specific"]["raid"].clone();
        assert_eq!(info["num_base_bdevs_operational"], 1);
        assert_eq!(info["state"], "online");

        let registry = BdevRegistry::new();
        for name in ["x", "y"] {
            let spec = BdevSpec {
                name: name.into(),
                uuid: None,
                block_size: 512,
                num_blocks: 8,
            };
            registry.register(spec, Box::new(Broken)).unwrap();
        }
        let raid = block_on(create_raid(
            &registry,
            config("dead", RaidLevel::Raid1, 0, &["x", "y"]),
        ))
        .unwrap();
        block_on(async {
            let write = submit(&raid, IoRequest::write(0, pattern(8), 512)).await;
            assert_eq!(write.result, Err(IoError::Io));
            let read = submit(&raid, IoRequest::read(0, IoBuf::new(512), 512)).await;
            assert_eq!(read.result, Err(IoError::Io));
        });
        assert_eq!(
            raid.describe()["driver_specific"]["raid"]["state"],
            "offline"
        );
    }

    #[test]
    fn concat_appends_legs() {
        let registry = BdevRegistry::new();
        malloc(&registry, "a", 10);
        let b = malloc(&registry, "b", 20);
        let raid = block_on(create_raid(
            &registry,
            config("c", RaidLevel::Concat, 1, &["a", "b"]),
        ))
        .unwrap();
        assert_eq!(raid.num_blocks(), 30);
        block_on(async {
            assert!(
                submit(&raid, IoRequest::write(0, pattern(30), 512))
                    .await
                    .result
                    .is_ok()
            );
            let leg = submit(&b, IoRequest::read(0, IoBuf::new(512), 512)).await;
            assert_eq!(leg.buf.unwrap().as_slice()[0], 10);
        });
    }
}
