//! What every handler reaches: accounts, sessions, the store, and facts
//! about this appliance.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crate::auth::accounts::Accounts;
use crate::auth::sessions::Sessions;
use crate::store::Store;

pub struct Inner {
    pub store: Store,
    pub accounts: Accounts,
    pub sessions: Sessions,
    /// ServiceRoot UUID: generated once, persisted, stable across restarts.
    pub service_uuid: uuid::Uuid,
    pub started: SystemTime,
    pub supervisor_socket: PathBuf,
    /// Recent supervisor status (see `resources::appliance`).
    pub status_cache: crate::resources::appliance::StatusCache,
    pub https_port: u16,
    pub http_redirect_port: Option<u16>,
    /// Shipped DMTF schema files (`csdl/`, `json-schema/`).
    pub schema_dir: PathBuf,
    /// The service's own router, for query options that include other
    /// resources (`$expand`, `$filter`, `only`). Set once it is built.
    pub router: std::sync::OnceLock<axum::Router>,
    /// The OpenAPI document of every route, built with the router.
    pub openapi: std::sync::OnceLock<serde_json::Value>,
    /// The storage model's lock, observations and reconciler wake-up.
    pub storage: crate::storage::Storage,
    /// Long operations (TaskService).
    pub tasks: crate::tasks::Tasks,
    /// The event bus, and the destinations fed from it (EventService).
    pub events: Arc<crate::events::Events>,
    pub subscriptions: crate::events::subscriptions::Subscriptions,
}

/// Shared by every handler (cheap to clone).
#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Ends what account `account_id` holds open: its sessions and its SSE
    /// streams, except the session `keep` (the caller's own, after it
    /// changed its own password) and the streams opened with it.
    pub fn end_account_access(&self, account_id: &str, keep: Option<&str>) {
        self.sessions.close_account(account_id, keep);
        self.subscriptions.close_sse_of(account_id, keep);
    }
}
