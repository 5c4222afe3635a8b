//! Reactors: one thread per core of the data cluster, SPDK style.
//!
//! A reactor is a pinned OS thread that runs everything scheduled on it to
//! completion: thread messages (closures sent from other threads, SPDK's
//! `spdk_thread_send_msg`), pollers ([`poller`]) and the futures of I/O
//! front-ends. State that belongs to a reactor (I/O channels, connections)
//! lives in thread-locals and is never shared, so the I/O path takes no
//! locks; other threads reach it only by message.
//!
//! Each reactor drives a single-threaded tokio runtime: when nothing is
//! runnable it parks in epoll until a socket, timer or message wakes it, so
//! an idle appliance uses no CPU. Park and unpark times give the busy/idle
//! accounting `framework_get_reactors` reports.

pub mod acceptor;
pub mod poller;

use shoal_appliance::locks::Recover;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use shoal_appliance::clock::monotonic_ns;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// A message: a closure run on the target reactor.
type Message = Box<dyn FnOnce() + Send>;

/// Counters one reactor publishes for other threads to read.
#[derive(Debug, Default)]
pub struct ReactorStats {
    /// Nanoseconds spent parked (idle).
    idle_ns: AtomicU64,
    /// When the reactor last parked, 0 while running.
    parked_at_ns: AtomicU64,
    /// Set by the reactor's tick poller; stale means the reactor is stuck.
    last_tick_ns: AtomicU64,
    /// When the reactor started.
    started_ns: AtomicU64,
    /// Messages executed.
    messages: AtomicU64,
}

impl ReactorStats {
    fn on_park(&self) {
        self.parked_at_ns.store(monotonic_ns(), Ordering::Relaxed);
    }

    fn on_unpark(&self) {
        let parked = self.parked_at_ns.swap(0, Ordering::Relaxed);
        if parked != 0 {
            self.idle_ns
                .fetch_add(monotonic_ns().saturating_sub(parked), Ordering::Relaxed);
        }
    }

    /// Idle nanoseconds so far, including a park in progress.
    pub fn idle_ns(&self) -> u64 {
        let parked = self.parked_at_ns.load(Ordering::Relaxed);
        let current = if parked == 0 {
            0
        } else {
            monotonic_ns().saturating_sub(parked)
        };
        self.idle_ns.load(Ordering::Relaxed) + current
    }

    /// Busy nanoseconds so far.
    pub fn busy_ns(&self) -> u64 {
        let started = self.started_ns.load(Ordering::Relaxed);
        monotonic_ns()
            .saturating_sub(started)
            .saturating_sub(self.idle_ns())
    }

    pub fn last_tick_ns(&self) -> u64 {
        self.last_tick_ns.load(Ordering::Relaxed)
    }

    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }
}

/// How other threads reach one reactor.
#[derive(Debug, Clone)]
pub struct ReactorHandle {
    index: u32,
    cpu: Option<usize>,
    sender: mpsc::UnboundedSender<Message>,
    stats: Arc<ReactorStats>,
}

impl ReactorHandle {
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The CPU the reactor is pinned to, if pinned.
    pub fn cpu(&self) -> Option<usize> {
        self.cpu
    }

    pub fn stats(&self) -> &ReactorStats {
        &self.stats
    }

    /// Runs `f` on this reactor (SPDK's `spdk_thread_send_msg`). Returns
    /// false when the reactor has stopped.
    pub fn send(&self, f: impl FnOnce() + Send + 'static) -> bool {
        self.sender.send(Box::new(f)).is_ok()
    }

    /// Runs `f` on this reactor and waits for its result.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Option<R> {
        let (reply, answer) = oneshot::channel();
        if !self.send(move || {
            let _ = reply.send(f());
        }) {
            return None;
        }
        answer.await.ok()
    }

    /// Starts a task on this reactor. `make` runs there and may build a
    /// future that is not `Send` (it uses reactor-local state).
    pub fn spawn<F, Fut>(&self, make: F) -> bool
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        self.send(move || {
            tokio::task::spawn_local(make());
        })
    }
}

thread_local! {
    static CURRENT: std::cell::Cell<Option<u32>> = const { std::cell::Cell::new(None) };
}

/// Index of the reactor running the calling code, `None` off-reactor.
pub fn current() -> Option<u32> {
    CURRENT.with(|c| c.get())
}

/// The reactors of this data cluster.
pub struct Reactors {
    handles: Vec<ReactorHandle>,
    threads: std::sync::Mutex<Vec<JoinHandle<()>>>,
    stop: CancellationToken,
}

/// How often each reactor proves it is alive.
pub const TICK_INTERVAL: Duration = Duration::from_millis(50);

impl Reactors {
    /// Starts `count` reactors. With `pin`, reactor `i` is pinned to
    /// `cpus[i % cpus.len()]`; otherwise it runs wherever the process may.
    pub fn start(count: u32, cpus: &[usize], pin: bool) -> std::io::Result<Self> {
        let stop = CancellationToken::new();
        let mut handles = Vec::new();
        let mut threads = Vec::new();
        for index in 0..count {
            let cpu = (pin && !cpus.is_empty()).then(|| cpus[index as usize % cpus.len()]);
            let (sender, receiver) = mpsc::unbounded_channel();
            let stats = Arc::new(ReactorStats::default());
            let thread = std::thread::Builder::new()
                .name(format!("reactor_{index}"))
                .spawn({
                    let stats = Arc::clone(&stats);
                    let stop = stop.clone();
                    move || run_reactor(index, cpu, receiver, stats, stop)
                })?;
            handles.push(ReactorHandle {
                index,
                cpu,
                sender,
                stats,
            });
            threads.push(thread);
        }
        Ok(Self {
            handles,
            threads: std::sync::Mutex::new(threads),
            stop,
        })
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    pub fn get(&self, index: u32) -> Option<&ReactorHandle> {
        self.handles.get(index as usize)
    }

    pub fn iter(&self) -> impl Iterator<Item = &ReactorHandle> {
        self.handles.iter()
    }

    /// True when every reactor ticked within `max_age`: none is stuck.
    pub fn all_alive(&self, max_age: Duration) -> bool {
        let now = monotonic_ns();
        self.handles
            .iter()
            .all(|h| now.saturating_sub(h.stats.last_tick_ns()) <= max_age.as_nanos() as u64)
    }

    /// Runs `f` on every reactor and collects the results in reactor order.
    pub async fn call_all<R, F>(&self, f: F) -> Vec<R>
    where
        R: Send + 'static,
        F: Fn() -> R + Send + Sync + Clone + 'static,
    {
        let mut results = Vec::with_capacity(self.handles.len());
        for handle in &self.handles {
            if let Some(result) = handle.call(f.clone()).await {
                results.push(result);
            }
        }
        results
    }

    /// Handles of every reactor, for code that spreads work over them.
    pub fn handles(&self) -> Vec<ReactorHandle> {
        self.handles.clone()
    }

    /// Stops every reactor: tasks are dropped, threads joined. Must not be
    /// called from a reactor.
    pub fn shutdown(&self) {
        self.stop.cancel();
        for handle in &self.handles {
            // Wake a parked reactor so it sees the cancellation.
            handle.send(|| {});
        }
        let threads = std::mem::take(&mut *self.threads.locked());
        for thread in threads {
            let _ = thread.join();
        }
    }
}

fn run_reactor(
    index: u32,
    cpu: Option<usize>,
    mut messages: mpsc::UnboundedReceiver<Message>,
    stats: Arc<ReactorStats>,
    stop: CancellationToken,
) {
    CURRENT.with(|c| c.set(Some(index)));
    if let Some(cpu) = cpu {
        let pinned = shoal_appliance::topology::cpu_set(&[cpu])
            .and_then(|set| nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set));
        if let Err(e) = pinned {
            tracing::warn!(reactor = index, cpu, "cannot pin reactor: {e}");
        }
    }
    let park_stats = Arc::clone(&stats);
    let unpark_stats = Arc::clone(&stats);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(move || park_stats.on_park())
        .on_thread_unpark(move || unpark_stats.on_unpark())
        .build()
        .expect("reactor runtime");
    stats.started_ns.store(monotonic_ns(), Ordering::Relaxed);
    stats.last_tick_ns.store(monotonic_ns(), Ordering::Relaxed);
    let local = tokio::task::LocalSet::new();
    tracing::debug!(reactor = index, ?cpu, "reactor running");
    local.block_on(&runtime, async {
        let tick_stats = Arc::clone(&stats);
        let _tick = poller::Poller::register("reactor_tick", Some(TICK_INTERVAL), move || {
            tick_stats
                .last_tick_ns
                .store(monotonic_ns(), Ordering::Relaxed);
            poller::PollStatus::Idle
        });
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                message = messages.recv() => match message {
                    Some(message) => {
                        message();
                        stats.messages.fetch_add(1, Ordering::Relaxed);
                    }
                    None => break,
                },
            }
        }
    });
    tracing::debug!(reactor = index, "reactor stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn messages_run_on_the_target_reactor_and_answer() {
        let reactors = Reactors::start(3, &[], false).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let seen = runtime.block_on(reactors.call_all(current));
        assert_eq!(seen, vec![Some(0), Some(1), Some(2)]);
        assert_eq!(current(), None);

        // A spawned task may hold reactor-local (!Send) state.
        let (tx, rx) = std::sync::mpsc::channel();
        reactors.get(1).unwrap().spawn(move || async move {
            let local = Rc::new(41);
            tokio::task::yield_now().await;
            tx.send((*local + 1, current())).unwrap();
        });
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            (42, Some(1))
        );
        reactors.shutdown();
    }

    #[test]
    fn idle_reactors_sleep_and_tick() {
        let reactors = Reactors::start(2, &[], false).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(reactors.all_alive(Duration::from_millis(200)));
        for handle in reactors.iter() {
            let stats = handle.stats();
            // Parked nearly all the time: busy well under a tenth.
            assert!(
                stats.busy_ns() * 10 < stats.idle_ns(),
                "busy {} idle {}",
                stats.busy_ns(),
                stats.idle_ns()
            );
        }
        reactors.shutdown();
    }
}
