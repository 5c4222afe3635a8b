//! Event destinations: push subscriptions (kept in sled, delivered by HTTP
//! POST with bounded retries) and the open SSE streams (in memory; each
//! stream is one destination, and deleting it ends the stream).

use shoal_appliance::locks::Recover;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::destination::{self, Policy};
use super::filter::Filter;
use super::{EventRecord, Events};
use crate::store::{Store, StoreError, Table};

/// Most push subscriptions, and most SSE streams open at once.
pub const MAX_SUBSCRIPTIONS: usize = 32;
pub const MAX_SSE_STREAMS: usize = 16;
/// SSE streams one account may hold open: one user cannot take every
/// stream slot.
pub const MAX_SSE_STREAMS_PER_ACCOUNT: usize = 4;
/// Events waiting for one destination; beyond it the oldest are dropped
/// (and the loss logged): a dead destination cannot hold memory.
const QUEUE_DEPTH: usize = 256;
/// Longest wait for a destination to answer one delivery.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Retries after a failed delivery, and the wait before the first (it
/// doubles for each further one). PATCHable on EventService.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub interval_s: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            interval_s: 5,
        }
    }
}

pub const MAX_RETRY_ATTEMPTS: u32 = 10;
pub const MAX_RETRY_INTERVAL_S: u64 = 600;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: u64,
    pub destination: String,
    pub context: String,
    pub filter: Filter,
    pub verify_certificate: bool,
}

/// Who opened an SSE stream: the stream lasts no longer than their access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOwner {
    pub account_id: String,
    /// The session it was opened with; `None` for HTTP Basic.
    pub session_id: Option<String>,
}

/// An open SSE stream, as a destination.
#[derive(Debug, Clone)]
pub struct SseDestination {
    pub id: u64,
    pub context: String,
    pub filter: Filter,
    pub owner: StreamOwner,
    pub stop: CancellationToken,
}

/// Why no SSE stream was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseRefused {
    Full,
    AccountLimit,
}

/// IDs of SSE destinations start here, so they never meet a push
/// subscription's (which count from 1 and are persisted).
const SSE_ID_BASE: u64 = 1_000_000_000;

struct Entry {
    subscription: Subscription,
    queue: mpsc::Sender<Arc<EventRecord>>,
}

#[derive(Clone)]
pub struct Subscriptions {
    store: Store,
    push: Arc<Mutex<BTreeMap<u64, Entry>>>,
    sse: Arc<Mutex<BTreeMap<u64, SseDestination>>>,
    next_sse: Arc<std::sync::atomic::AtomicU64>,
    retry: Arc<Mutex<RetryPolicy>>,
    /// What destinations may reach.
    destinations: Policy,
    /// Made with the first push subscription: the HTTP clients and their
    /// root certificates cost megabytes a service without subscriptions
    /// does not need.
    clients: Arc<std::sync::OnceLock<Clients>>,
}

/// HTTP clients for deliveries: one that checks certificates, one that
/// does not (VerifyCertificate false).
#[derive(Clone)]
struct Clients {
    verifying: reqwest::Client,
    trusting: reqwest::Client,
}

impl Clients {
    fn new(policy: Policy) -> Self {
        let build = |trust: bool| {
            reqwest::Client::builder()
                .timeout(DELIVERY_TIMEOUT)
                .danger_accept_invalid_certs(trust)
                .redirect(reqwest::redirect::Policy::none())
                .dns_resolver(Arc::new(destination::Resolver { policy }))
                .build()
                .expect("an HTTP client builds")
        };
        Self {
            verifying: build(false),
            trusting: build(true),
        }
    }
}

impl Subscriptions {
    /// Loads the stored subscriptions and starts delivering to them, and
    /// the fan-out from the bus to every destination's queue.
    pub fn start(store: Store, events: &Events, destinations: Policy) -> Result<Self, StoreError> {
        let retry = store
            .get::<RetryPolicy>(Table::Settings, "event_retry")?
            .unwrap_or_default();
        let subscriptions = Self {
            store: store.clone(),
            push: Arc::default(),
            sse: Arc::default(),
            next_sse: Arc::new(std::sync::atomic::AtomicU64::new(SSE_ID_BASE)),
            retry: Arc::new(Mutex::new(retry)),
            destinations,
            clients: Arc::default(),
        };
        for subscription in store.list::<Subscription>(Table::Subscriptions)? {
            subscriptions.run(subscription);
        }
        let fan_out = subscriptions.clone();
        let mut bus = events.subscribe();
        tokio::spawn(async move {
            loop {
                match bus.recv().await {
                    Ok(record) => fan_out.offer(&record),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!("event delivery fell behind; {missed} events not delivered")
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(subscriptions)
    }

    /// Queues `record` for every push destination that wants it.
    fn offer(&self, record: &Arc<EventRecord>) {
        let push = self.push.locked();
        for entry in push.values() {
            if entry.subscription.filter.matches(record)
                && entry.queue.try_send(Arc::clone(record)).is_err()
            {
                tracing::warn!(
                    subscription = entry.subscription.id,
                    "event {} dropped: {} events already wait for {}",
                    record.id,
                    QUEUE_DEPTH,
                    destination::redacted(&entry.subscription.destination)
                );
            }
        }
    }

    /// Starts the delivery worker of `subscription`; it ends when the
    /// subscription is removed.
    fn run(&self, subscription: Subscription) {
        let (queue, mut waiting) = mpsc::channel::<Arc<EventRecord>>(QUEUE_DEPTH);
        let policy = self.destinations;
        let clients = self.clients.get_or_init(|| Clients::new(policy));
        let client = if subscription.verify_certificate {
            clients.verifying.clone()
        } else {
            clients.trusting.clone()
        };
        let retry = Arc::clone(&self.retry);
        let destinations = self.destinations;
        let target = subscription.clone();
        tokio::spawn(async move {
            while let Some(record) = waiting.recv().await {
                let policy = *retry.locked();
                deliver(&client, &target, &record, policy, destinations).await;
            }
        });
        self.push.locked().insert(
            subscription.id,
            Entry {
                subscription,
                queue,
            },
        );
    }

    /// What destinations may reach.
    pub fn destination_policy(&self) -> Policy {
        self.destinations
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        *self.retry.locked()
    }

    pub async fn set_retry_policy(&self, policy: RetryPolicy) -> Result<(), StoreError> {
        self.store
            .put(Table::Settings, "event_retry", &policy)
            .await?;
        *self.retry.locked() = policy;
        Ok(())
    }

    pub fn list(&self) -> Vec<Subscription> {
        let push = self.push.locked();
        push.values().map(|e| e.subscription.clone()).collect()
    }

    pub fn get(&self, id: u64) -> Option<Subscription> {
        let push = self.push.locked();
        push.get(&id).map(|e| e.subscription.clone())
    }

    /// Records and starts a push subscription; `None` at the limit.
    pub async fn create(
        &self,
        destination: String,
        context: String,
        filter: Filter,
        verify_certificate: bool,
    ) -> Result<Option<Subscription>, StoreError> {
        if self.push.locked().len() >= MAX_SUBSCRIPTIONS {
            return Ok(None);
        }
        let id = self.store.next_id("subscription").await?;
        let subscription = Subscription {
            id,
            destination,
            context,
            filter,
            verify_certificate,
        };
        self.store
            .put(Table::Subscriptions, &id.to_string(), &subscription)
            .await?;
        self.run(subscription.clone());
        Ok(Some(subscription))
    }

    /// Removes push subscription or SSE stream `id`; false if none.
    pub async fn delete(&self, id: u64) -> Result<bool, StoreError> {
        if let Some(sse) = self.sse.locked().remove(&id) {
            sse.stop.cancel();
            return Ok(true);
        }
        let removed = self.push.locked().remove(&id);
        if removed.is_none() {
            return Ok(false);
        }
        self.store
            .remove(Table::Subscriptions, &id.to_string())
            .await?;
        Ok(true)
    }

    /// Registers an SSE stream as a destination, unless the service or
    /// the owner's account holds as many as it may.
    pub fn open_sse(
        &self,
        filter: Filter,
        owner: StreamOwner,
    ) -> Result<SseDestination, SseRefused> {
        let mut sse = self.sse.locked();
        if sse.len() >= MAX_SSE_STREAMS {
            return Err(SseRefused::Full);
        }
        let held = sse
            .values()
            .filter(|s| s.owner.account_id == owner.account_id)
            .count();
        if held >= MAX_SSE_STREAMS_PER_ACCOUNT {
            return Err(SseRefused::AccountLimit);
        }
        let id = self
            .next_sse
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let destination = SseDestination {
            id,
            context: format!("SSE stream {id}"),
            filter,
            owner,
            stop: CancellationToken::new(),
        };
        sse.insert(id, destination.clone());
        Ok(destination)
    }

    /// Ends the SSE streams of account `account_id`, except those opened
    /// with session `keep`.
    pub fn close_sse_of(&self, account_id: &str, keep: Option<&str>) {
        let mut sse = self.sse.locked();
        sse.retain(|_, stream| {
            let ends = stream.owner.account_id == account_id
                && (keep.is_none() || stream.owner.session_id.as_deref() != keep);
            if ends {
                stream.stop.cancel();
            }
            !ends
        });
    }

    /// The stream ended (the client went away, or it was deleted).
    pub fn close_sse(&self, id: u64) {
        self.sse.locked().remove(&id);
    }

    pub fn sse_streams(&self) -> Vec<SseDestination> {
        self.sse.locked().values().cloned().collect()
    }

    pub fn sse_stream(&self, id: u64) -> Option<SseDestination> {
        self.sse.locked().get(&id).cloned()
    }
}

/// POSTs `record` to the subscription's destination, retrying with a
/// doubling wait; gives up (and logs) after the policy's attempts.
async fn deliver(
    client: &reqwest::Client,
    subscription: &Subscription,
    record: &EventRecord,
    policy: RetryPolicy,
    destinations: Policy,
) {
    let shown = destination::redacted(&subscription.destination);
    // Recorded by an earlier release, or under a laxer policy: checked
    // again (host names are checked on what they resolve to, by the
    // client's resolver).
    if let Err(refused) = destination::check(&subscription.destination, destinations) {
        tracing::warn!(
            subscription = subscription.id,
            "event {} not delivered to {shown}: {refused}",
            record.id
        );
        return;
    }
    let payload = record.payload(&subscription.context);
    let mut wait = Duration::from_secs(policy.interval_s);
    for attempt in 0..=policy.attempts {
        let sent = client
            .post(&subscription.destination)
            .header("content-type", "application/json")
            .json(&payload)
            .send()
            .await;
        let failure = match sent {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => format!("answered {}", response.status()),
            Err(e) => e.to_string(),
        };
        if attempt == policy.attempts {
            tracing::warn!(
                subscription = subscription.id,
                "event {} not delivered to {shown} after {} attempts: {failure}",
                record.id,
                attempt + 1
            );
            return;
        }
        tracing::debug!(
            subscription = subscription.id,
            "delivery of event {} failed ({failure}); retrying in {wait:?}",
            record.id
        );
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(MAX_RETRY_INTERVAL_S));
    }
}
