//! `part`: a bdev that is a contiguous range of blocks of another bdev,
//! after SPDK's bdev_part (the library under its split and GPT modules).
//!
//! The management service carves its volumes out of each data cluster's
//! drive with parts: it records where every part lies, so the same volume
//! always maps onto the same blocks, and creates them again after a
//! restart. Parts of one base share a claim on it; two parts of the same
//! base never overlap, which this module checks independently of whoever
//! asked.

use shoal_appliance::locks::Recover;
use std::collections::BTreeMap;
use std::ops::Range;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use uuid::Uuid;

use super::{
    BackendChannel, Bdev, BdevBackend, BdevError, BdevRegistry, BdevSpec, IoChannel, IoFuture,
    IoKind, IoRequest,
};

/// The claim every part holds on its base, shared by all parts of it.
const CLAIM_OWNER: &str = "part";

/// What `bdev_part_create` asks for.
#[derive(Debug, Clone)]
pub struct PartConfig {
    pub name: String,
    pub base_bdev: String,
    pub offset_blocks: u64,
    pub num_blocks: u64,
    pub uuid: Option<Uuid>,
}

/// The blocks of one base bdev that parts occupy, and by whom.
type Occupied = Vec<(String, Range<u64>)>;

/// What parts occupy, by base bdev id.
static OCCUPIED: Mutex<BTreeMap<u64, Occupied>> = Mutex::new(BTreeMap::new());

struct Part {
    base: Arc<Bdev>,
    offset_blocks: u64,
    /// Grows with `prepare_growth` (the range it reserves grows with it).
    num_blocks: std::sync::atomic::AtomicU64,
    name: String,
}

impl Part {
    fn num_blocks(&self) -> u64 {
        self.num_blocks.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Validates `config`, reserves its range of the base, claims the base
/// (shared with the base's other parts) and registers the part.
pub fn create_part(registry: &BdevRegistry, config: PartConfig) -> Result<Arc<Bdev>, BdevError> {
    let base = registry.get(&config.base_bdev)?;
    let end = config
        .offset_blocks
        .checked_add(config.num_blocks)
        .filter(|end| *end <= base.num_blocks())
        .ok_or_else(|| {
            BdevError::Invalid(format!(
                "blocks {}+{} are beyond {}'s {} blocks",
                config.offset_blocks,
                config.num_blocks,
                base.name(),
                base.num_blocks()
            ))
        })?;
    let range = config.offset_blocks..end;
    if config.num_blocks == 0 {
        return Err(BdevError::Invalid("num_blocks must be at least 1".into()));
    }
    if registry.get(&config.name).is_ok() {
        return Err(BdevError::Exists(config.name));
    }
    reserve(&base, &config.name, range.clone())?;
    if let Err(e) = base.claim_shared(CLAIM_OWNER) {
        free(base.id(), &config.name, &range);
        return Err(e);
    }
    let spec = BdevSpec {
        name: config.name.clone(),
        uuid: config.uuid,
        block_size: base.block_size(),
        num_blocks: config.num_blocks,
    };
    let part = Part {
        base: Arc::clone(&base),
        offset_blocks: config.offset_blocks,
        num_blocks: std::sync::atomic::AtomicU64::new(config.num_blocks),
        name: config.name.clone(),
    };
    registry.register(spec, Box::new(part)).inspect_err(|_| {
        base.release_claim();
        free(base.id(), &config.name, &range);
    })
}

/// Records `range` of `base` for part `name`, unless another part has any
/// of those blocks.
fn reserve(base: &Bdev, name: &str, range: Range<u64>) -> Result<(), BdevError> {
    let mut occupied = OCCUPIED.locked();
    let parts = occupied.entry(base.id()).or_default();
    if let Some((other, taken)) = parts
        .iter()
        .find(|(_, taken)| taken.start < range.end && range.start < taken.end)
    {
        return Err(BdevError::Invalid(format!(
            "blocks {}..{} of {} overlap part {other} (blocks {}..{})",
            range.start,
            range.end,
            base.name(),
            taken.start,
            taken.end
        )));
    }
    parts.push((name.to_string(), range));
    Ok(())
}

/// Extends part `name`'s reservation on `base` from `from` to `to`, if no
/// other part has any of the blocks in between.
fn extend(base: &Bdev, name: &str, from: &Range<u64>, to: &Range<u64>) -> Result<(), BdevError> {
    let mut occupied = OCCUPIED.locked();
    let parts = occupied.entry(base.id()).or_default();
    if let Some((other, taken)) = parts.iter().find(|(part, taken)| {
        !(part == name && taken == from) && taken.start < to.end && to.start < taken.end
    }) {
        return Err(BdevError::Invalid(format!(
            "blocks {}..{} of {} are taken by part {other} (blocks {}..{})",
            from.end,
            to.end,
            base.name(),
            taken.start,
            taken.end
        )));
    }
    let entry = parts
        .iter_mut()
        .find(|(part, taken)| part == name && taken == from)
        .expect("a registered part has its reservation");
    entry.1 = to.clone();
    Ok(())
}

fn free(base_id: u64, name: &str, range: &Range<u64>) {
    let mut occupied = OCCUPIED.locked();
    if let Some(parts) = occupied.get_mut(&base_id) {
        parts.retain(|(part, taken)| !(part == name && taken == range));
        if parts.is_empty() {
            occupied.remove(&base_id);
        }
    }
}

impl BdevBackend for Part {
    fn module(&self) -> &'static str {
        "part"
    }

    fn product_name(&self) -> &'static str {
        "Part of a bdev"
    }

    fn supports(&self, kind: IoKind) -> bool {
        self.base.supports(kind)
    }

    fn create_channel(&self) -> Box<dyn BackendChannel> {
        Box::new(PartChannel {
            base: self.base.channel(),
            offset_blocks: self.offset_blocks,
        })
    }

    fn driver_specific(&self) -> Option<(&'static str, Value)> {
        Some((
            "part",
            json!({
                "base_bdev": self.base.name(),
                "offset_blocks": self.offset_blocks,
                "num_blocks": self.num_blocks(),
            }),
        ))
    }

    fn base_bdevs(&self) -> Vec<Arc<Bdev>> {
        vec![Arc::clone(&self.base)]
    }

    fn unregistered(&self) {
        let range = self.offset_blocks..self.offset_blocks + self.num_blocks();
        free(self.base.id(), &self.name, &range);
    }

    /// Takes the blocks right after the part, if they lie in the base and
    /// no other part has them.
    fn prepare_growth(&self, blocks: u64) -> Result<(), BdevError> {
        let current = self.offset_blocks..self.offset_blocks + self.num_blocks();
        let end = self
            .offset_blocks
            .checked_add(blocks)
            .filter(|end| *end <= self.base.num_blocks())
            .ok_or_else(|| {
                BdevError::Invalid(format!(
                    "blocks {}+{blocks} are beyond {}'s {} blocks",
                    self.offset_blocks,
                    self.base.name(),
                    self.base.num_blocks()
                ))
            })?;
        extend(&self.base, &self.name, &current, &(self.offset_blocks..end))?;
        self.num_blocks
            .store(blocks, std::sync::atomic::Ordering::Release);
        Ok(())
    }
}

struct PartChannel {
    base: Rc<IoChannel>,
    offset_blocks: u64,
}

impl BackendChannel for PartChannel {
    fn submit(&self, mut io: IoRequest) -> IoFuture {
        // A flush or reset covers the whole base; everything else moves by
        // the part's offset (the channel already checked it is in range).
        if !matches!(io.kind, IoKind::Flush | IoKind::Reset) {
            io.offset_blocks += self.offset_blocks;
        }
        let base = Rc::clone(&self.base);
        Box::pin(async move { base.submit(io).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bdev::IoBuf;
    use crate::bdev::channel::submit;
    use crate::bdev::malloc::create_malloc;
    use crate::bdev::testing::block_on;

    fn base(registry: &BdevRegistry, name: &str) -> Arc<Bdev> {
        let spec = BdevSpec {
            name: name.into(),
            uuid: None,
            block_size: 512,
            num_blocks: 64,
        };
        create_malloc(registry, spec).unwrap()
    }

    fn config(name: &str, base: &str, offset: u64, blocks: u64) -> PartConfig {
        PartConfig {
            name: name.into(),
            base_bdev: base.into(),
            offset_blocks: offset,
            num_blocks: blocks,
            uuid: None,
        }
    }

    #[test]
    fn a_part_reads_and_writes_its_range_of_the_base() {
        let registry = BdevRegistry::new();
        let drive = base(&registry, "drive");
        let part = create_part(&registry, config("p", "drive", 16, 8)).unwrap();
        assert_eq!((part.num_blocks(), part.block_size()), (8, 512));
        block_on(async {
            let mut buf = IoBuf::new(512);
            buf.as_mut_slice().fill(0xab);
            let done = submit(&part, IoRequest::write(7, buf, 512)).await;
            assert!(done.result.is_ok());
            // Block 7 of the part is block 23 of the base.
            let read = submit(&drive, IoRequest::read(23, IoBuf::new(512), 512)).await;
            assert!(read.buf.unwrap().as_slice().iter().all(|b| *b == 0xab));
            // The channel keeps a part's I/O inside the part.
            let beyond = submit(&part, IoRequest::read(8, IoBuf::new(512), 512)).await;
            assert!(beyond.result.is_err());
        });
    }

    #[test]
    fn parts_share_their_base_and_never_overlap() {
        let registry = BdevRegistry::new();
        let drive = base(&registry, "drive");
        create_part(&registry, config("a", "drive", 0, 32)).unwrap();
        create_part(&registry, config("b", "drive", 32, 32)).unwrap();
        let overlap = create_part(&registry, config("c", "drive", 31, 2)).unwrap_err();
        assert!(overlap.to_string().contains("overlap part"), "{overlap}");
        assert!(create_part(&registry, config("d", "drive", 60, 8)).is_err());
        assert!(create_part(&registry, config("a", "drive", 0, 0)).is_err());
        // The base is claimed by the parts: no raid, no writable export,
        // no deletion while any part stands.
        assert_eq!(drive.claimed_by().as_deref(), Some("part"));
        assert!(drive.claim("raid0").is_err());
        assert!(drive.add_export("nbd export drive", true).is_err());
        assert!(registry.unregister("drive", "malloc").is_err());
        registry.unregister("a", "part").unwrap();
        assert!(drive.claimed_by().is_some());
        // The freed range can be used again.
        create_part(&registry, config("c", "drive", 0, 16)).unwrap();
        registry.unregister("b", "part").unwrap();
        registry.unregister("c", "part").unwrap();
        assert_eq!(drive.claimed_by(), None);
        registry.unregister("drive", "malloc").unwrap();
    }

    #[test]
    fn a_part_grows_into_free_blocks_only() {
        let registry = BdevRegistry::new();
        base(&registry, "drive");
        let a = create_part(&registry, config("a", "drive", 0, 16)).unwrap();
        create_part(&registry, config("b", "drive", 32, 16)).unwrap();
        a.grow(32).unwrap();
        assert_eq!(a.num_blocks(), 32);
        let taken = a.grow(33).unwrap_err();
        assert!(taken.to_string().contains("part b"), "{taken}");
        assert!(a.grow(8).is_err(), "a bdev never shrinks");
        let b = registry.get("b").unwrap();
        assert!(b.grow(40).is_err(), "beyond the base");
        b.grow(32).unwrap();
        // The grown range is reserved, and freed with the part.
        assert!(create_part(&registry, config("c", "drive", 20, 4)).is_err());
        registry.unregister("a", "part").unwrap();
        create_part(&registry, config("c", "drive", 0, 32)).unwrap();
        block_on(async {
            let done = submit(&b, IoRequest::read(31, IoBuf::new(512), 512)).await;
            assert!(done.result.is_ok(), "the grown range is readable");
        });
    }

    #[test]
    fn a_writable_export_keeps_parts_away() {
        let registry = BdevRegistry::new();
        let drive = base(&registry, "drive");
        drive.add_export("nbd export drive", true).unwrap();
        assert!(create_part(&registry, config("p", "drive", 0, 8)).is_err());
        drive.remove_export("nbd export drive");
        drive.add_export("nbd export ro", false).unwrap();
        create_part(&registry, config("p", "drive", 0, 8)).unwrap();
    }
}
