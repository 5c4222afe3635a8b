//! A thin pool's low-space warnings (Swordfish
//! `LowSpaceWarningThresholdPercents`): which thresholds the pool's
//! remaining capacity, `(AllocatedBytes - ConsumedBytes) / AllocatedBytes`
//! in percent, has gone below or back above since the last look. Pure; the
//! events are published by `events::pools`.

/// Most thresholds a pool takes.
pub const MAX_THRESHOLDS: usize = 8;

/// One threshold passed: `below` when the remaining capacity went under
/// it (a warning), else when it came back to it or above (cleared).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crossing {
    pub threshold: u8,
    pub below: bool,
}

/// Why `thresholds` cannot be a pool's, if they cannot: each 1 to 99,
/// distinct, at most [`MAX_THRESHOLDS`].
pub fn check(thresholds: &[u64]) -> Result<Vec<u8>, String> {
    if thresholds.len() > MAX_THRESHOLDS {
        return Err(format!("at most {MAX_THRESHOLDS} thresholds"));
    }
    let mut checked = Vec::with_capacity(thresholds.len());
    for &t in thresholds {
        let percent = u8::try_from(t)
            .ok()
            .filter(|p| (1..=99).contains(p))
            .ok_or_else(|| format!("{t} is no percentage from 1 to 99"))?;
        if checked.contains(&percent) {
            return Err(format!("{t} is named twice"));
        }
        checked.push(percent);
    }
    checked.sort_unstable_by(|a, b| b.cmp(a));
    Ok(checked)
}

/// The remaining capacity in whole percent (rounded down, so a pool is
/// never reported roomier than it is); 0 for a pool of no capacity.
pub fn remaining_percent(total: u64, free: u64) -> u8 {
    (u128::from(free.min(total)) * 100)
        .checked_div(u128::from(total))
        .map_or(0, |p| p as u8)
}

/// The thresholds crossed from `before` to `now` (remaining percent). A
/// first look (`before` `None`) warns of every threshold already passed,
/// so a pool that is low when the service starts is not kept quiet.
pub fn crossings(thresholds: &[u8], before: Option<u8>, now: u8) -> Vec<Crossing> {
    thresholds
        .iter()
        .filter_map(|&threshold| {
            let was_below = before.map(|b| b < threshold);
            let is_below = now < threshold;
            match (was_below, is_below) {
                (Some(false) | None, true) => Some(Crossing {
                    threshold,
                    below: true,
                }),
                (Some(true), false) => Some(Crossing {
                    threshold,
                    below: false,
                }),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn below(threshold: u8) -> Crossing {
        Crossing {
            threshold,
            below: true,
        }
    }

    fn cleared(threshold: u8) -> Crossing {
        Crossing {
            threshold,
            below: false,
        }
    }

    #[test]
    fn each_threshold_warns_once_going_down_and_clears_once_coming_back() {
        let t = [50, 20, 10];
        assert_eq!(crossings(&t, Some(80), 60), []);
        assert_eq!(crossings(&t, Some(60), 49), [below(50)]);
        // Several at once, in the order given.
        assert_eq!(crossings(&t, Some(49), 5), [below(20), below(10)]);
        assert_eq!(crossings(&t, Some(5), 5), []);
        // Exactly at a threshold is not below it.
        assert_eq!(crossings(&t, Some(5), 20), [cleared(20), cleared(10)]);
        assert_eq!(crossings(&t, Some(20), 100), [cleared(50)]);
        // A first look warns of what is passed already, clears nothing.
        assert_eq!(crossings(&t, None, 15), [below(50), below(20)]);
        assert_eq!(crossings(&t, None, 90), []);
        assert_eq!(crossings(&[], Some(90), 0), []);
    }

    #[test]
    fn thresholds_are_distinct_percentages_highest_first() {
        assert_eq!(check(&[10, 50, 20]), Ok(vec![50, 20, 10]));
        assert_eq!(check(&[]), Ok(vec![]));
        assert!(check(&[0]).is_err());
        assert!(check(&[100]).is_err());
        assert!(check(&[300]).is_err());
        assert!(check(&[10, 10]).is_err());
        assert!(check(&[1, 2, 3, 4, 5, 6, 7, 8, 9]).is_err());
        assert_eq!(remaining_percent(100, 15), 15);
        assert_eq!(remaining_percent(3, 2), 66);
        assert_eq!(remaining_percent(0, 0), 0);
        assert_eq!(remaining_percent(10, 20), 100);
    }
}
