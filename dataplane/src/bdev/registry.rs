//! The bdevs of this dataplane by name. Only the control path (JSON-RPC)
//! takes its lock; the I/O path holds `Arc<Bdev>`s and channels.

use shoal_appliance::locks::Recover;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{Bdev, BdevBackend, BdevError, BdevSpec};

/// Bdev ids are unique in the process (reactors key their channels by
/// id), even across registries.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

#[derive(Default)]
pub struct BdevRegistry {
    bdevs: Mutex<BTreeMap<String, Arc<Bdev>>>,
    /// Bumped on every registration and removal, so caches built from
    /// [`list`](Self::list) know when to rebuild without taking the lock.
    epoch: AtomicU64,
}

impl BdevRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a new bdev; names and UUIDs are unique.
    pub fn register(
        &self,
        spec: BdevSpec,
        backend: Box<dyn BdevBackend>,
    ) -> Result<Arc<Bdev>, BdevError> {
        spec.validate()?;
        let mut bdevs = self.bdevs.locked();
        if bdevs.contains_key(&spec.name) || Self::aliased(&bdevs, &spec.name).is_some() {
            return Err(BdevError::Exists(spec.name));
        }
        if let Some(uuid) = spec.uuid
            && let Some(other) = bdevs.values().find(|b| b.uuid() == uuid)
        {
            return Err(BdevError::Invalid(format!(
                "uuid {uuid} is already used by bdev {}",
                other.name()
            )));
        }
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let bdev = Arc::new(Bdev::new(id, spec, backend));
        bdevs.insert(bdev.name().to_string(), Arc::clone(&bdev));
        self.epoch.fetch_add(1, Ordering::Release);
        tracing::info!(
            bdev = bdev.name(),
            module = bdev.backend().module(),
            block_size = bdev.block_size(),
            num_blocks = bdev.num_blocks(),
            "bdev registered"
        );
        Ok(bdev)
    }

    /// A bdev by name, alias or UUID.
    pub fn get(&self, name: &str) -> Result<Arc<Bdev>, BdevError> {
        let bdevs = self.bdevs.locked();
        bdevs
            .get(name)
            .or_else(|| Self::aliased(&bdevs, name))
            .or_else(|| bdevs.values().find(|b| b.uuid().to_string() == name))
            .cloned()
            .ok_or_else(|| BdevError::NotFound(name.to_string()))
    }

    fn aliased<'a>(bdevs: &'a BTreeMap<String, Arc<Bdev>>, alias: &str) -> Option<&'a Arc<Bdev>> {
        bdevs
            .values()
            .find(|b| b.aliases.locked().iter().any(|a| a == alias))
    }

    /// Gives bdev `name` the alias `alias`, unique among every name and
    /// alias here; it goes with the bdev.
    pub fn add_alias(&self, name: &str, alias: &str) -> Result<(), BdevError> {
        let bdevs = self.bdevs.locked();
        if bdevs.contains_key(alias) || Self::aliased(&bdevs, alias).is_some() {
            return Err(BdevError::Exists(alias.to_string()));
        }
        let bdev = bdevs
            .get(name)
            .ok_or_else(|| BdevError::NotFound(name.to_string()))?;
        bdev.aliases.locked().push(alias.to_string());
        // Caches of names (the interconnect's targets) take aliases too.
        self.epoch.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Changes whenever the set of bdevs or their aliases does.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn list(&self) -> Vec<Arc<Bdev>> {
        self.bdevs.locked().values().cloned().collect()
    }

    /// Removes bdev `name` of `module`. Refused while the bdev is claimed or
    /// exported. Releases the claims it held on its base bdevs. The caller
    /// releases the reactors' channels.
    pub fn unregister(&self, name: &str, module: &str) -> Result<Arc<Bdev>, BdevError> {
        let mut bdevs = self.bdevs.locked();
        let bdev = bdevs
            .get(name)
            .ok_or_else(|| BdevError::NotFound(name.to_string()))?;
        if bdev.backend().module() != module {
            return Err(BdevError::NotFound(format!(
                "{name} (it is a {} bdev, not {module})",
                bdev.backend().module()
            )));
        }
        if let Some(owner) = bdev.claimed_by() {
            return Err(BdevError::Busy {
                name: name.to_string(),
                user: format!("bdev {owner}"),
            });
        }
        if let Some(export) = bdev.exports().first() {
            return Err(BdevError::Busy {
                name: name.to_string(),
                user: export.clone(),
            });
        }
        let bdev = bdevs.remove(name).expect("present");
        self.epoch.fetch_add(1, Ordering::Release);
        for base in bdev.backend().base_bdevs() {
            base.release_claim();
        }
        // The module's teardown runs outside the lock: whatever it does
        // (and a panic in it) cannot leave the map half-updated or hold up
        // the control path.
        drop(bdevs);
        tracing::info!(bdev = name, "bdev unregistered");
        bdev.backend().unregistered();
        Ok(bdev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bdev::{BackendChannel, IoKind};

    /// A module whose teardown panics, as a bug in any module's could.
    struct PanicsOnTeardown;

    impl BdevBackend for PanicsOnTeardown {
        fn module(&self) -> &'static str {
            "test"
        }
        fn product_name(&self) -> &'static str {
            "Teardown bug"
        }
        fn supports(&self, _kind: IoKind) -> bool {
            false
        }
        fn create_channel(&self) -> Box<dyn BackendChannel> {
            unreachable!("the test does no I/O")
        }
        fn unregistered(&self) {
            panic!("teardown bug");
        }
    }

    fn spec(name: &str) -> BdevSpec {
        BdevSpec {
            name: name.to_string(),
            uuid: None,
            block_size: 512,
            num_blocks: 8,
        }
    }

    #[test]
    fn a_panic_inside_a_registry_operation_leaves_the_registry_usable_and_consistent() {
        let registry = BdevRegistry::new();
        registry
            .register(spec("keep"), Box::new(PanicsOnTeardown))
            .unwrap();
        registry
            .register(spec("buggy"), Box::new(PanicsOnTeardown))
            .unwrap();
        let epoch = registry.epoch();
        let outcome = std::panic::catch_unwind(|| registry.unregister("buggy", "test"));
        assert!(outcome.is_err(), "the teardown panicked");
        // The removal is complete (not half done) and every later call works.
        assert!(matches!(registry.get("buggy"), Err(BdevError::NotFound(_))));
        assert!(registry.epoch() > epoch);
        let names: Vec<_> = registry
            .list()
            .iter()
            .map(|b| b.name().to_string())
            .collect();
        assert_eq!(names, ["keep"]);
        registry
            .register(spec("buggy"), Box::new(PanicsOnTeardown))
            .unwrap();
        assert_eq!(registry.list().len(), 2);
    }

    #[test]
    fn a_poisoned_registry_lock_is_recovered_not_propagated() {
        let registry = BdevRegistry::new();
        registry
            .register(spec("a"), Box::new(PanicsOnTeardown))
            .unwrap();
        let poisoned = std::panic::catch_unwind(|| {
            let _held = registry.bdevs.lock().unwrap();
            panic!("a handler bug while holding the registry lock");
        });
        assert!(poisoned.is_err());
        assert!(registry.bdevs.is_poisoned());
        assert_eq!(registry.list().len(), 1);
        assert!(registry.get("a").is_ok());
        registry
            .register(spec("b"), Box::new(PanicsOnTeardown))
            .unwrap();
        assert_eq!(registry.list().len(), 2);
    }

    #[test]
    fn an_alias_finds_its_bdev_is_unique_and_goes_with_it() {
        let registry = BdevRegistry::new();
        let named = registry
            .register(spec("uuid-name"), Box::new(PanicsOnTeardown))
            .unwrap();
        registry
            .register(spec("other"), Box::new(PanicsOnTeardown))
            .unwrap();
        registry.add_alias("uuid-name", "lvs/vol").unwrap();
        assert_eq!(registry.get("lvs/vol").unwrap().id(), named.id());
        assert_eq!(named.describe()["aliases"], serde_json::json!(["lvs/vol"]));
        // Unique among names and aliases, both ways.
        for taken in ["lvs/vol", "other"] {
            assert!(matches!(
                registry.add_alias("other", taken),
                Err(BdevError::Exists(_))
            ));
        }
        registry.add_alias("uuid-name", "plain").unwrap();
        assert!(matches!(
            registry.register(spec("plain"), Box::new(PanicsOnTeardown)),
            Err(BdevError::Exists(_))
        ));
        assert!(matches!(
            registry.add_alias("missing", "x"),
            Err(BdevError::NotFound(_))
        ));
        // The teardown panics by design; the alias went with the bdev.
        let _ = std::panic::catch_unwind(|| registry.unregister("uuid-name", "test"));
        assert!(matches!(
            registry.get("lvs/vol"),
            Err(BdevError::NotFound(_))
        ));
        registry.add_alias("other", "lvs/vol").unwrap();
    }
}
