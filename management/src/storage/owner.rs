//! Which data cluster owns a redundant volume: the one that holds its raid
//! bdev, computes its mirrors or parity and orders its writes.
//! Every other serving cluster forwards the volume's I/O there, so writes
//! that reach different clusters can never interleave on the legs.
//!
//! The choice is a pure, sticky function: an owner keeps the volume while
//! it runs (a move costs the forwarders a retarget and the raid a fresh
//! assembly); otherwise the first running cluster among those holding the
//! volume's legs, starting at a point rotated by the volume id so that
//! owners spread over the clusters. Legs' clusters are preferred because
//! the owner then reads one leg locally.

/// The owner of a volume whose legs live on `leg_clusters`.
/// `current` is the owner recorded so far (or found holding the raid after
/// a management restart), `running[c]` whether cluster `c` takes requests.
/// `None` when no cluster that holds a leg is running.
pub fn choose_owner(
    current: Option<u32>,
    running: &[bool],
    leg_clusters: &[u32],
    volume_id: u64,
) -> Option<u32> {
    let is_running = |cluster: u32| running.get(cluster as usize).copied().unwrap_or(false);
    if let Some(owner) = current
        && is_running(owner)
    {
        return Some(owner);
    }
    let mut candidates: Vec<u32> = leg_clusters.to_vec();
    candidates.sort_unstable();
    candidates.dedup();
    if candidates.is_empty() {
        return None;
    }
    let start = (volume_id % candidates.len() as u64) as usize;
    (0..candidates.len())
        .map(|i| candidates[(start + i) % candidates.len()])
        .find(|&cluster| is_running(cluster))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [bool; 4] = [true; 4];

    #[test]
    fn a_running_owner_keeps_its_volume() {
        assert_eq!(choose_owner(Some(2), &ALL, &[0, 1, 2, 3], 7), Some(2));
        // Even when it holds no leg (it was chosen when it did).
        assert_eq!(choose_owner(Some(3), &ALL, &[0, 1], 0), Some(3));
    }

    #[test]
    fn new_owners_rotate_over_the_legs_clusters_by_volume_id() {
        let legs = [3, 1, 0, 2];
        let owners: Vec<_> = (0..4)
            .map(|id| choose_owner(None, &ALL, &legs, id))
            .collect();
        assert_eq!(owners, [Some(0), Some(1), Some(2), Some(3)]);
    }

    #[test]
    fn a_dead_owner_is_replaced_by_the_next_running_leg_cluster() {
        let running = [true, false, true, true];
        assert_eq!(choose_owner(Some(1), &running, &[0, 1, 2, 3], 1), Some(2));
        let running = [false, false, true, true];
        assert_eq!(choose_owner(Some(1), &running, &[0, 1], 1), None);
        assert_eq!(choose_owner(None, &running, &[1, 2], 0), Some(2));
    }

    #[test]
    fn unknown_clusters_are_not_running() {
        assert_eq!(choose_owner(Some(9), &ALL, &[9, 1], 0), Some(1));
        assert_eq!(choose_owner(None, &ALL, &[], 0), None);
    }
}
