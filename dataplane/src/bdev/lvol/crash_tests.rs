//! Power cuts at every metadata write of a script that uses every
//! operation: after each cut the store must open, hold every acknowledged
//! operation, have the cut one wholly or not at all, keep the owner
//! table, extents and allocation map in agreement (no cluster both free
//! and used, none leaked), and finish the script to the very state an
//! uncut run reaches.

use uuid::Uuid;

use super::device::testing::CrashingDevice;
use super::store::{LvolStore, StoreError};
use super::store_tests::{State, base, describe, options, write};

#[derive(Debug, Clone, Copy)]
enum Op {
    Create(&'static str, u64, bool),
    Write(&'static str, u64),
    Snapshot(&'static str, &'static str),
    Clone(&'static str, &'static str),
    Resize(&'static str, u64),
    /// Plan, fill, commit; `true` inflates, `false` decouples.
    Inflate(&'static str, bool),
    /// An unmap of logical clusters `.1 .. .2`.
    Unmap(&'static str, u64, u64),
    Delete(&'static str),
    /// A delete that must be refused (a snapshot with clones).
    DeleteRefused(&'static str),
}

const SCRIPT: &[Op] = &[
    Op::Create("thick", 6, false),
    Op::Create("thin", 20, true),
    Op::Write("thin", 0),
    Op::Write("thin", 5),
    Op::Write("thin", 19),
    Op::Snapshot("thin", "snap1"),
    Op::Write("thin", 0),
    Op::Write("thin", 7),
    // Frees 7; 0 stays, hiding snap1's data there.
    Op::Unmap("thin", 0, 8),
    Op::Clone("snap1", "clone"),
    Op::Write("clone", 5),
    Op::Resize("thin", 30),
    Op::Resize("clone", 3),
    Op::Resize("thick", 8),
    Op::Snapshot("clone", "snap2"),
    Op::Write("clone", 1),
    Op::Unmap("clone", 0, 3),
    Op::DeleteRefused("snap1"),
    Op::Inflate("thin", true),
    Op::Inflate("clone", false),
    Op::Delete("snap2"),
    Op::Delete("snap1"),
    Op::Delete("thick"),
    Op::Resize("thin", 10),
    // A snapshot with one child is merged into it.
    Op::Snapshot("thin", "snap3"),
    Op::Write("thin", 2),
    Op::Write("thin", 4),
    Op::Delete("snap3"),
    Op::Create("late", 4, false),
];

fn id(store: &LvolStore<CrashingDevice>, name: &str) -> Uuid {
    store.find(name).unwrap_or_else(|| panic!("{name}")).uuid()
}

/// Runs one operation; `Err` only for a lost metadata write.
fn apply(store: &mut LvolStore<CrashingDevice>, op: Op) -> Result<(), StoreError> {
    match op {
        Op::Create(name, size, thin) => store.create_lvol(name, size, thin).map(drop),
        Op::Write(name, logical) => write(store, id(store, name), logical).map(drop),
        Op::Snapshot(origin, name) => store.snapshot(id(store, origin), name).map(drop),
        Op::Clone(snap, name) => store.clone_snapshot(id(store, snap), name).map(drop),
        Op::Resize(name, size) => store.resize(id(store, name), size),
        Op::Inflate(name, all) => {
            let plan = store.plan_inflate(id(store, name), all)?;
            // (The bdev copies each step's source into its target here.)
            store.commit_inflate(plan)
        }
        Op::Unmap(name, start, end) => store.unmap_clusters(id(store, name), start..end).map(drop),
        Op::Delete(name) => store.delete(id(store, name)),
        Op::DeleteRefused(name) => match store.delete(id(store, name)) {
            Err(StoreError::HasClones { .. }) => Ok(()),
            other => panic!("delete of {name}: {other:?}"),
        },
    }
}

/// The uncut run: the state after each operation (index 0: formatted,
/// empty) and the writes it took.
fn reference() -> (Vec<State>, u64) {
    let mut store = LvolStore::format(base(), options()).unwrap();
    let mut states = vec![describe(&store)];
    for &op in SCRIPT {
        apply(&mut store, op).unwrap();
        store.audit().unwrap();
        states.push(describe(&store));
    }
    (states, store.device().writes())
}

/// Where a cut run stopped.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// During the format: nothing was acknowledged.
    Format,
    /// During operation `n` of the script (operations before it done).
    At(usize),
    Never,
}

/// Runs `ops[from..]` on `store` until the device loses power.
fn run_from(store: &mut LvolStore<CrashingDevice>, from: usize) -> Cut {
    for (n, &op) in SCRIPT.iter().enumerate().skip(from) {
        match apply(store, op) {
            Ok(()) => {}
            Err(StoreError::Device(_)) => return Cut::At(n),
            Err(e) => panic!("operation {n} {op:?}: {e}"),
        }
    }
    Cut::Never
}

/// Opens the base a cut left and checks it against the states around the
/// cut; returns the store and the operation to resume at.
fn reopen_after(
    device: &CrashingDevice,
    cut: Cut,
    states: &[State],
    what: &str,
) -> Option<(LvolStore<CrashingDevice>, usize)> {
    let store = match (cut, LvolStore::open(device.durable())) {
        (Cut::Format, Err(StoreError::NoStore { .. })) => return None,
        (_, Err(e)) => panic!("{what}: the store does not open: {e}"),
        (_, Ok(store)) => store,
    };
    store.audit().unwrap_or_else(|e| panic!("{what}: {e}"));
    let now = describe(&store);
    let resume = match cut {
        Cut::Format => {
            assert_eq!(now, states[0], "{what}: a whole format is empty");
            0
        }
        Cut::At(n) => {
            // Operations 0..n were acknowledged: state n at least; the cut
            // one is all there (state n + 1) or not at all.
            if now == states[n + 1] {
                n + 1
            } else {
                assert_eq!(now, states[n], "{what}: operation {n} half done");
                n
            }
        }
        Cut::Never => {
            assert_eq!(&now, states.last().unwrap(), "{what}");
            SCRIPT.len()
        }
    };
    Some((store, resume))
}

/// Starts a run on a fresh base that loses power at write `k`.
fn cut_run(k: u64, tear: bool) -> (CrashingDevice, Cut) {
    let device = base();
    device.crash_at_write(k, tear);
    let mut store = match LvolStore::format(device.clone(), options()) {
        Ok(store) => store,
        Err(StoreError::Device(_)) => return (device, Cut::Format),
        Err(e) => panic!("format: {e}"),
    };
    let cut = run_from(&mut store, 0);
    (device, cut)
}

#[test]
fn a_cut_at_any_metadata_write_loses_nothing_acknowledged_and_leaks_nothing() {
    let (states, total_writes) = reference();
    assert!(
        total_writes > 60,
        "the script commits often: {total_writes}"
    );
    let format_writes = LvolStore::format(base(), options())
        .unwrap()
        .device()
        .writes();
    let (mut cuts, mut reopened) = (0, 0);
    for tear in [false, true] {
        for k in 0..total_writes {
            let what = format!("cut at write {k}{}", if tear { " (torn)" } else { "" });
            let (device, cut) = cut_run(k, tear);
            assert!(!matches!(cut, Cut::Never), "{what}: no cut");
            cuts += 1;
            let Some((mut store, resume)) = reopen_after(&device, cut, &states, &what) else {
                assert!(k < format_writes, "{what}: no store after the format");
                continue;
            };
            reopened += 1;
            // The reopened store works: it finishes the script exactly as
            // the uncut run did (its first commit rewrites the copy that
            // lost whole).
            assert!(matches!(run_from(&mut store, resume), Cut::Never), "{what}");
            assert_eq!(&describe(&store), states.last().unwrap(), "{what}");
            let again = LvolStore::open(store.device().durable()).unwrap();
            assert_eq!(&describe(&again), states.last().unwrap(), "{what}");
        }
    }
    assert_eq!(cuts, 2 * total_writes);
    // A cut in the format leaves no store, but for a tear of its last
    // write (the super block) past the fields, which lands whole: every
    // later cut reopens one.
    assert_eq!(reopened, 2 * (total_writes - format_writes) + 1);
}

/// A small deterministic generator (no crate for it): xorshift64.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn two_hundred_runs_cut_again_and_again_end_where_the_uncut_run_ends() {
    let (states, total_writes) = reference();
    let mut rng = Rng(0x5eed_1a57_0001);
    for run in 0..200 {
        let k = rng.below(total_writes);
        let tear = rng.below(2) == 1;
        let what = format!("run {run}: first cut at {k}");
        let (device, cut) = cut_run(k, tear);
        let mut opened = reopen_after(&device, cut, &states, &what);
        // Cut each restarted run again, until one runs to the end.
        for cut_again in 0.. {
            let Some((mut store, resume)) = opened else {
                break;
            };
            if resume == SCRIPT.len() {
                assert_eq!(&describe(&store), states.last().unwrap(), "{what}");
                break;
            }
            // Past the first commit after a reopen (it rewrites the copy
            // that lost whole: 36 pages and a super block) often enough.
            let k = rng.below(120);
            let tear = rng.below(2) == 1;
            store.device().crash_at_write(k, tear);
            let cut = run_from(&mut store, resume);
            let device = store.device().clone();
            let what = format!("{what}, cut {cut_again} at {k} after resuming at {resume}");
            opened = reopen_after(&device, cut, &states, &what);
        }
    }
}
