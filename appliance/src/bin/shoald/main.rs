//! shoald: the Shoal appliance supervisor.
//!
//! Owns the topology and the shared region, runs one `shoal-dataplane` per
//! data cluster and the `shoal-management` service, restarts what dies, and
//! takes everything down cleanly on SIGTERM/SIGINT. Runs as PID 1 of the
//! quick image, or as a systemd service.

mod child;
mod control;
mod descriptor_limit;
mod dev_build;
mod init;
mod launch;
mod notify;
mod owner_only;
mod restart_policy;
mod supervisor;
mod watchdog;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use shoal_appliance::config::{ApplianceConfig, DEFAULT_CONFIG_TOML};
use shoal_appliance::jsonrpc;
use shoal_appliance::logging::{self, Role};

/// Where images keep state when no state directory is given.
const IMAGE_STATE_DIR: &str = "/var/lib/shoal";

#[derive(Parser)]
#[command(name = "shoald", version, about = "Shoal appliance supervisor")]
struct Cli {
    /// Configuration file (TOML); the embedded default when absent.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// State directory; overrides `state_dir` from the configuration.
    #[arg(long, env = "SHOAL_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Print the embedded default configuration and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Check the configuration, print the effective one, and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    // Before anything is created: every file shoald and its children make
    // is owner-only.
    owner_only::set_umask();
    logging::init(Role::Supervisor);
    let as_init = init::running_as_init();
    if as_init {
        init::mount_pseudo_filesystems();
    }
    let cli = Cli::parse();
    if cli.print_default_config {
        print!("{DEFAULT_CONFIG_TOML}");
        return ExitCode::SUCCESS;
    }
    let mut config = match ApplianceConfig::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    match (cli.state_dir, as_init) {
        (Some(dir), _) => config.state_dir = dir,
        (None, true) if cli.config.is_none() => config.state_dir = IMAGE_STATE_DIR.into(),
        _ => {}
    }
    if cli.check_config {
        print!("{}", toml::to_string(&config).expect("config serialises"));
        return ExitCode::SUCCESS;
    }

    let result = run(config);
    if as_init {
        if let Err(e) = &result {
            tracing::error!("{e:#}");
        }
        init::power_off();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: ApplianceConfig) -> anyhow::Result<()> {
    // Before any child starts: they inherit it.
    descriptor_limit::raise();
    let binaries_dir = if config.binaries.dir.as_os_str().is_empty() {
        let exe = std::env::current_exe().context("cannot locate shoald's own executable")?;
        exe.parent()
            .context("shoald's executable has no directory")?
            .to_path_buf()
    } else {
        config.binaries.dir.clone()
    };
    dev_build::build_siblings_under_cargo_run(&binaries_dir)?;

    // One thread: see supervisor.rs for why.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let supervisor = supervisor::Supervisor::prepare(config, &binaries_dir)?;
        let config = supervisor.config().clone();
        let socket = config.supervisor_socket();
        let listener = jsonrpc::server::bind(&socket)
            .with_context(|| format!("cannot bind control socket {}", socket.display()))?;
        let (commands, requests) = tokio::sync::mpsc::channel(16);
        let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
        let router = Arc::new(control::router(commands, &config));
        let server = tokio::spawn(jsonrpc::serve(listener, router, async {
            let _ = server_stopped.await;
        }));
        tracing::info!(socket = %socket.display(), "control socket listening");

        let result = supervisor.run(requests).await;
        let _ = stop_server.send(());
        let _ = server.await;
        result
    })
}
