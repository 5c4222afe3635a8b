//! The process lifecycle of the management service: open the store, make
//! sure an administrator exists, serve Redfish over HTTPS (and the HTTP
//! redirect) while heartbeating, stop cleanly on SIGTERM.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use shoal_appliance::participant::{Participant, SlotId};
use tokio_util::sync::CancellationToken;

use crate::args::Args;
use crate::auth::accounts::Accounts;
use crate::auth::sessions::Sessions;
use crate::http::{server, tls};
use crate::state::{AppState, Inner};
use crate::store::{Store, Table};

/// Runs until SIGTERM/SIGINT, then shuts down cleanly.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let participant = Arc::new(
        Participant::join(&args.region, SlotId::Control)
            .with_context(|| format!("cannot join the shared region {}", args.region.display()))?,
    );
    let dir = args.state_dir.join("management");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let store = Store::open(&dir.join("db")).context("cannot open the management database")?;
    let state = build_state(&args, store).await?;
    state.storage.set_key_dir(&dir);
    let host_name = args.host_name();

    let identity = match (&args.tls_certificate, &args.tls_private_key) {
        (Some(certificate), Some(key)) => tls::Identity::Supplied {
            certificate: certificate.clone(),
            key: key.clone(),
        },
        _ => tls::Identity::Generated {
            dir: dir.join("tls"),
            host_name: host_name.clone(),
        },
    };
    let tls = tls::server_config(&identity)?;
    let https = tokio::net::TcpListener::bind(args.https_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.https_listen))?;
    let stop = CancellationToken::new();
    let app = crate::redfish::router(state.clone());
    let _ = state.router.set(app.clone());
    let https_task = tokio::spawn(server::serve_https(https, tls, app, stop.clone()));
    let reconciler = tokio::spawn(crate::storage::run_reconciler(state.clone(), stop.clone()));
    let cluster_watch = tokio::spawn(crate::events::clusters::watch(state.clone(), stop.clone()));
    let volume_watch = tokio::spawn(crate::events::volumes::watch(state.clone(), stop.clone()));
    let pool_watch = tokio::spawn(crate::events::pools::watch(state.clone(), stop.clone()));
    let store_recovery = tokio::spawn(recover_store(state.store.clone(), stop.clone()));
    let redirect_task = match args.http_redirect_listen {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address}"))?;
            Some(tokio::spawn(server::serve_redirect(
                listener,
                host_name.clone(),
                args.https_listen.port(),
                stop.clone(),
            )))
        }
        None => None,
    };
    tracing::info!(
        https = %args.https_listen,
        http_redirect = ?args.http_redirect_listen,
        "Redfish service listening on https://{}/redfish/v1",
        args.https_listen
    );

    let heartbeat_every = Duration::from_millis(args.heartbeat_interval_ms);
    participant
        .run_until_stopped(
            heartbeat_every,
            || true,
            || async {
                stop.cancel();
                let _ = https_task.await;
                let _ = reconciler.await;
                let _ = cluster_watch.await;
                let _ = volume_watch.await;
                let _ = pool_watch.await;
                let _ = store_recovery.await;
                if let Some(task) = redirect_task {
                    let _ = task.await;
                }
            },
        )
        .await
        .context("cannot install signal handlers")
}

/// How often a read-only store (full state file system) looks for room.
const STORE_RECOVERY_PERIOD: Duration = Duration::from_secs(2);

/// Reopens the real database once the full state file system has room.
async fn recover_store(store: Store, stop: CancellationToken) {
    let mut tick = tokio::time::interval(STORE_RECOVERY_PERIOD);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if store.read_only_reason().is_some() {
            let store = store.clone();
            let _ = tokio::task::spawn_blocking(move || store.try_recover()).await;
        }
    }
}

/// Accounts (bootstrapping `admin`), sessions and the service UUID.
async fn build_state(args: &Args, store: Store) -> anyhow::Result<AppState> {
    let accounts = Accounts::new(store.clone());
    if let Some(path) = accounts
        .bootstrap(&args.state_dir)
        .await
        .context("cannot create the first administrator")?
    {
        tracing::warn!(
            "created account 'admin' with a generated password, written to {} (change it)",
            path.display()
        );
    }
    let service_uuid = match store.get::<uuid::Uuid>(Table::Settings, "service_uuid")? {
        Some(uuid) => uuid,
        None => {
            let uuid = uuid::Uuid::new_v4();
            store.put(Table::Settings, "service_uuid", &uuid).await?;
            uuid
        }
    };
    // A SessionTimeout PATCHed through Redfish outlives restarts.
    let timeout = store
        .get::<u64>(Table::Settings, "session_timeout_s")?
        .unwrap_or(args.session_timeout_s);
    let events = Arc::new(crate::events::Events::default());
    let tasks = crate::tasks::Tasks::load(store.clone(), Arc::clone(&events))
        .await
        .context("cannot load the task records")?;
    let destinations = crate::events::destination::Policy {
        allow_local: args.event_destinations_allow_local,
    };
    let subscriptions =
        crate::events::subscriptions::Subscriptions::start(store.clone(), &events, destinations)
            .context("cannot load the event subscriptions")?;
    Ok(AppState(Arc::new(Inner {
        tasks,
        events,
        subscriptions,
        store,
        accounts,
        sessions: Sessions::new(Duration::from_secs(timeout), args.max_sessions as usize),
        service_uuid,
        started: SystemTime::now(),
        supervisor_socket: args.supervisor_socket.clone(),
        status_cache: Default::default(),
        https_port: args.https_listen.port(),
        http_redirect_port: args.http_redirect_listen.map(|a| a.port()),
        schema_dir: args.schema_dir.clone(),
        router: std::sync::OnceLock::new(),
        openapi: std::sync::OnceLock::new(),
        storage: Default::default(),
    })))
}
