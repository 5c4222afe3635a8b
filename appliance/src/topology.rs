//! How the control cluster and the data clusters map onto this machine's CPUs.
//!
//! Cores are handed out in order from the CPUs this process may run on: the
//! control cluster first, then data cluster 0, 1, ... When the machine has
//! fewer CPUs than cores asked for, the assignment wraps around and clusters
//! share CPUs; pinning is then off unless the config insists, because pinned
//! clusters sharing a CPU cannot be balanced by the scheduler.

use serde::Serialize;

use crate::config::{Pinning, TopologyConfig};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placement {
    /// CPUs the cluster's cores run on, ascending, without duplicates.
    pub cpus: Vec<usize>,
    /// Cores (reactor threads) the cluster runs.
    pub cores: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Topology {
    /// CPUs this process was allowed to run on at start.
    pub machine_cpus: Vec<usize>,
    pub control: Placement,
    pub data: Vec<Placement>,
    /// Cores asked for in total, control cluster included.
    pub cores_requested: usize,
    /// True when more cores were asked for than CPUs exist.
    pub shared_cpus: bool,
    /// True when processes are pinned to their placement.
    pub pinned: bool,
}

impl Topology {
    /// Plans the topology on the CPUs in `machine_cpus`.
    pub fn plan(config: &TopologyConfig, machine_cpus: &[usize]) -> Self {
        let machine_cpus: Vec<usize> = if machine_cpus.is_empty() {
            vec![0]
        } else {
            machine_cpus.to_vec()
        };
        let mut next = 0usize;
        let mut take = |cores: u32| {
            let mut cpus: Vec<usize> = (0..cores as usize)
                .map(|k| machine_cpus[(next + k) % machine_cpus.len()])
                .collect();
            next += cores as usize;
            cpus.sort_unstable();
            cpus.dedup();
            Placement { cpus, cores }
        };
        let control = take(config.control_cores);
        let data = (0..config.data_clusters)
            .map(|_| take(config.cores_per_cluster))
            .collect();
        let cores_requested = next;
        let shared_cpus = cores_requested > machine_cpus.len();
        let pinned = match config.pinning {
            Pinning::Always => true,
            Pinning::Never => false,
            Pinning::Auto => !shared_cpus,
        };
        Self {
            machine_cpus,
            control,
            data,
            cores_requested,
            shared_cpus,
            pinned,
        }
    }

    /// Plans on the CPUs the calling process may use.
    pub fn plan_for_this_machine(config: &TopologyConfig) -> Self {
        Self::plan(config, &allowed_cpus())
    }

    /// One line for the log describing the plan.
    pub fn summary(&self) -> String {
        let layout = format!(
            "{} data clusters x {} cores + {} control cores = {} cores on {} CPUs",
            self.data.len(),
            self.data.first().map_or(0, |p| p.cores),
            self.control.cores,
            self.cores_requested,
            self.machine_cpus.len()
        );
        match (self.shared_cpus, self.pinned) {
            (false, true) => format!("{layout}: every cluster pinned to its own CPUs"),
            (false, false) => format!("{layout}: pinning disabled by topology.pinning"),
            (true, false) => format!("{layout}: clusters share CPUs, so they are not pinned"),
            (true, true) => format!(
                "{layout}: clusters share CPUs and are pinned anyway (topology.pinning = \"always\")"
            ),
        }
    }
}

/// CPUs in this process's affinity mask.
pub fn allowed_cpus() -> Vec<usize> {
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count())
            .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

/// Builds the affinity mask for `cpus`.
pub fn cpu_set(cpus: &[usize]) -> nix::Result<nix::sched::CpuSet> {
    let mut set = nix::sched::CpuSet::new();
    for &cpu in cpus {
        set.set(cpu)?;
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(clusters: u32, cores: u32, pinning: Pinning) -> TopologyConfig {
        TopologyConfig {
            data_clusters: clusters,
            cores_per_cluster: cores,
            control_cores: 1,
            pinning,
        }
    }

    #[test]
    fn enough_cpus_gives_each_cluster_its_own_and_pins() {
        let t = Topology::plan(&config(4, 2, Pinning::Auto), &(0..16).collect::<Vec<_>>());
        assert_eq!(t.control.cpus, vec![0]);
        assert_eq!(t.data[0].cpus, vec![1, 2]);
        assert_eq!(t.data[3].cpus, vec![7, 8]);
        assert!(!t.shared_cpus && t.pinned);
    }

    #[test]
    fn two_cpus_for_five_cores_share_and_do_not_pin() {
        let t = Topology::plan(&config(4, 1, Pinning::Auto), &[0, 1]);
        assert_eq!(t.control.cpus, vec![0]);
        let data: Vec<_> = t.data.iter().map(|p| p.cpus.clone()).collect();
        assert_eq!(data, vec![vec![1], vec![0], vec![1], vec![0]]);
        assert!(t.shared_cpus && !t.pinned);
        assert!(t.summary().contains("share CPUs"), "{}", t.summary());
    }

    #[test]
    fn a_cluster_wider_than_the_machine_gets_each_cpu_once() {
        let t = Topology::plan(&config(1, 4, Pinning::Always), &[2, 5]);
        assert_eq!(t.data[0].cpus, vec![2, 5]);
        assert_eq!(t.data[0].cores, 4);
        assert!(t.shared_cpus && t.pinned);
    }

    #[test]
    fn affinity_of_this_process_is_not_empty() {
        assert!(!allowed_cpus().is_empty());
    }
}
