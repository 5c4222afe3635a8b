//! Log setup shared by every Shoal process.
//!
//! Lines go to stderr through tracing-subscriber, filtered by `RUST_LOG`
//! (default `info`), and every line starts with the process's role and
//! cluster (`dataplane[2]`), so the interleaved output of one appliance reads
//! as one log. Under systemd (`JOURNAL_STREAM` set) timestamps and colours are
//! left to journald.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{Format, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Which process is logging.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    Supervisor,
    Management,
    Dataplane { cluster: u32 },
    Cli,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Supervisor => f.write_str("shoald"),
            Role::Management => f.write_str("management"),
            Role::Dataplane { cluster } => write!(f, "dataplane[{cluster}]"),
            Role::Cli => f.write_str("shoal-rpc"),
        }
    }
}

/// Prefixes each line with the role tag, then formats as usual.
struct Tagged<F> {
    tag: String,
    inner: F,
}

impl<S, N, F> FormatEvent<S, N> for Tagged<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "{} ", self.tag)?;
        self.inner.format_event(ctx, writer, event)
    }
}

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init(role: Role) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    // Colours only on a terminal, and not when NO_COLOR (no-color.org) is set.
    let ansi = !under_journald
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false);
    let tag = role.to_string();
    // try_init: a second call (tests) keeps the first subscriber.
    let _ = if under_journald {
        builder
            .event_format(Tagged {
                tag,
                inner: Format::default()
                    .without_time()
                    .with_target(false)
                    .with_ansi(false),
            })
            .try_init()
    } else {
        builder
            .event_format(Tagged {
                tag,
                inner: Format::default().with_target(false).with_ansi(ansi),
            })
            .try_init()
    };
}
