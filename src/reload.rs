//! Reload: on SIGHUP, or when the config file or any file it names changes (notify events
//! that name one of those files, with a periodic poll as the fallback), read and validate
//! everything, then swap the whole app set at once. Any error keeps the running config. The
//! replaced config is retired: its open connections are told to close once what is in flight
//! is done (cut after `timeouts.reloadGraceMs`), and its upstream clients dial no more.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use notify::Watcher as _;
use tokio::sync::{mpsc, watch};

use crate::apps::build::LoadedConfig;
use crate::apps::{Apps, LiveApps};
use crate::config::{Config, ConfigError};
use crate::drain::CloseSignal;
use crate::metrics::Metrics;
use crate::revocation::Memory;

/// Produces a fresh, fully validated config with its apps built: the config file, or the
/// sidecar flags.
pub type ConfigSource = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<LoadedConfig, ConfigError>> + Send>>
        + Send
        + Sync,
>;

/// How often files are checked when no event arrives (network filesystems, Kubernetes
/// secret volumes that swap a symlink, platforms without notify).
const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Lets a burst of writes settle before the files are read.
const SETTLE: Duration = Duration::from_millis(100);

/// Reloads the running config on demand.
#[derive(Clone)]
pub struct Reloader {
    apps: LiveApps,
    metrics: Arc<Metrics>,
    /// What revocation learned, handed to every generation.
    memory: Arc<Memory>,
    source: Option<ConfigSource>,
    /// What can only change on restart, to warn when a reload asks for it.
    started_with: RestartOnly,
    /// The worker threads the apps' per-thread state is made for.
    workers: usize,
    /// Tells the replaced config's connections to close.
    close: Arc<watch::Sender<CloseSignal>>,
    /// Serializes reloads, so that generations are numbered and retired in order.
    reloading: Arc<tokio::sync::Mutex<()>>,
}

/// The settings a reload cannot change: the sockets are bound and the connection caps sized
/// at start (docs/operations.md "Reload").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RestartOnly {
    listen: std::net::SocketAddr,
    admin: Option<std::net::SocketAddr>,
    listen_http: Option<std::net::SocketAddr>,
    max_connections: usize,
    max_connections_per_client: Option<usize>,
    max_pending_handshakes: usize,
}

impl RestartOnly {
    /// The restart-only settings of `config`.
    pub(crate) fn of(config: &Config) -> Self {
        Self {
            listen: config.listen,
            admin: config.admin,
            listen_http: config.listen_http,
            max_connections: config.limits.max_connections,
            max_connections_per_client: config.limits.max_connections_per_client,
            max_pending_handshakes: config.limits.max_pending_handshakes,
        }
    }

    /// The config keys whose value in `new` differs from this one.
    fn changed(&self, new: &Self) -> Vec<&'static str> {
        [
            (self.listen != new.listen, "listen"),
            (self.admin != new.admin, "admin"),
            (self.listen_http != new.listen_http, "listenHttp"),
            (
                self.max_connections != new.max_connections,
                "limits.maxConnections",
            ),
            (
                self.max_connections_per_client != new.max_connections_per_client,
                "limits.maxConnectionsPerClient",
            ),
            (
                self.max_pending_handshakes != new.max_pending_handshakes,
                "limits.maxPendingHandshakes",
            ),
        ]
        .into_iter()
        .filter_map(|(changed, key)| changed.then_some(key))
        .collect()
    }
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("has_source", &self.source.is_some())
            .field("started_with", &self.started_with)
            .finish_non_exhaustive()
    }
}

/// Why a reload did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("reload is not available: certgate was not started from a config source")]
    NoSource,
    #[error("the new configuration is invalid, keeping the running one")]
    Invalid(#[source] ConfigError),
    #[error("the reload task stopped before finishing, keeping the running configuration")]
    Aborted,
}

impl Reloader {
    pub(crate) fn new(
        apps: LiveApps,
        metrics: Arc<Metrics>,
        memory: Arc<Memory>,
        source: Option<ConfigSource>,
        started_with: RestartOnly,
        workers: usize,
        close: Arc<watch::Sender<CloseSignal>>,
    ) -> Self {
        Self {
            apps,
            metrics,
            memory,
            source,
            started_with,
            workers,
            close,
            reloading: Arc::default(),
        }
    }

    /// Whether there is a config source to reload from.
    pub(crate) fn has_source(&self) -> bool {
        self.source.is_some()
    }

    /// Reads and validates the whole config, then swaps it in; returns the files it was read
    /// from. On error nothing changes and `certgate_reloads_total{result="error"}` counts it.
    pub async fn reload(&self) -> Result<Vec<PathBuf>, ReloadError> {
        let source = self.source.clone().ok_or(ReloadError::NoSource)?;
        let _one_at_a_time = self.reloading.lock().await;
        // File reads and key parsing block; keep them off the async workers (the CRL fetches
        // still run on the runtime).
        let runtime = tokio::runtime::Handle::current();
        let load = move || runtime.block_on(source());
        let loaded = match tokio::task::spawn_blocking(load).await {
            Ok(loaded) => loaded.map_err(ReloadError::Invalid),
            Err(_) => Err(ReloadError::Aborted),
        };
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(error) => {
                self.metrics.reloaded(false);
                tracing::error!(error = %crate::error_chain(&error), "reload failed");
                return Err(error);
            }
        };
        let config = &loaded.config;
        for setting in self.started_with.changed(&RestartOnly::of(config)) {
            tracing::warn!(setting, "setting changed; it takes effect on restart");
        }
        let generation = self.apps.load().generation + 1;
        let apps = Apps::new(&loaded, &self.metrics, self.workers, generation);
        apps.start(&self.metrics, &self.memory, Some(&self.apps.load()));
        apps.settle_names(tokio::time::Instant::now() + config.timeouts.upstream_connect)
            .await;
        let apps = Arc::new(apps);
        let replaced = self.apps.swap(apps.clone());
        // Retired before the signal goes out: a request that starts on one of its connections
        // from here on sees it (docs/operations.md "Reload").
        let closing = replaced.retire(&apps);
        self.close.send_modify(|signal| {
            signal.generation = generation;
            signal.reload_grace = config.timeouts.reload_grace;
        });
        self.metrics.reloaded(true);
        self.metrics.reload_closed(closing);
        let changes = Changes::between(&replaced, &apps);
        tracing::info!(
            apps = config.apps.len(),
            added = changes.added.as_deref().map(tracing::field::display),
            removed = changes.removed.as_deref().map(tracing::field::display),
            changed = changes.changed.as_deref().map(tracing::field::display),
            files_changed = changes.files.as_deref().map(tracing::field::display),
            generation,
            closing,
            "configuration reloaded, connections of the previous one told to close"
        );
        Ok(loaded.config.files)
    }
}

/// What a reload changed, each a comma-separated list for the log line, `None` when empty:
/// the apps added, removed and changed (their settings or a file they load), and the files
/// read by both configs whose content changed.
#[derive(Debug, Default, PartialEq, Eq)]
struct Changes {
    added: Option<String>,
    removed: Option<String>,
    changed: Option<String>,
    files: Option<String>,
}

impl Changes {
    fn between(old: &Apps, new: &Apps) -> Self {
        let fingerprints = |apps: &Apps| -> BTreeMap<String, [u8; 32]> {
            apps.configs()
                .map(|app| (app.name.clone(), app.fingerprint))
                .collect()
        };
        let (before, after) = (fingerprints(old), fingerprints(new));
        let list = |names: Vec<String>| (!names.is_empty()).then(|| names.join(","));
        let files = old
            .files
            .iter()
            .filter(|(path, digest)| new.files.get(*path).is_some_and(|now| now != *digest))
            .map(|(path, _)| path.display().to_string())
            .collect();
        Self {
            added: list(
                after
                    .keys()
                    .filter(|name| !before.contains_key(*name))
                    .cloned()
                    .collect(),
            ),
            removed: list(
                before
                    .keys()
                    .filter(|name| !after.contains_key(*name))
                    .cloned()
                    .collect(),
            ),
            changed: list(
                after
                    .iter()
                    .filter(|(name, print)| before.get(*name).is_some_and(|old| old != *print))
                    .map(|(name, _)| name.clone())
                    .collect(),
            ),
            files: list(files),
        }
    }
}

/// Reloads on SIGHUP and on changes to `files` until `stop` turns true.
pub(crate) async fn watch(
    reloader: Reloader,
    mut files: Vec<PathBuf>,
    mut stop: watch::Receiver<CloseSignal>,
) {
    // The first look comes before the watch starts: a write between the two is then seen as
    // a change (by its event or by the poll) rather than taken as the starting state.
    let mut seen = fingerprint(&files);
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let names = Arc::new(Mutex::new(file_names(&files)));
    let mut watcher = file_watcher(events_tx, names.clone());
    watch_folders(watcher.as_mut(), &files);
    let mut hangup = hangup_signal();
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    loop {
        let forced = tokio::select! {
            _ = stop.wait_for(|signal| signal.shutdown) => return,
            () = recv_hangup(&mut hangup) => true,
            Some(()) = events.recv() => false,
            _ = poll.tick() => false,
        };
        if !forced {
            tokio::time::sleep(SETTLE).await;
            while events.try_recv().is_ok() {}
        }
        // Taken before the files are read: a write that lands during the reload is seen as a
        // change next time instead of being marked as loaded.
        let current = fingerprint(&files);
        if !forced && current == seen {
            continue;
        }
        // After an error too: the same broken files are not retried until they change again.
        seen = current;
        if let Ok(new_files) = reloader.reload().await
            && new_files != files
        {
            files = new_files;
            if let Ok(mut names) = names.lock() {
                *names = file_names(&files);
            }
            watch_folders(watcher.as_mut(), &files);
            seen = fingerprint(&files);
        }
    }
}

/// What identifies a file's content without reading it.
type Fingerprint = Vec<Option<(SystemTime, u64, u64)>>;

fn fingerprint(files: &[PathBuf]) -> Fingerprint {
    use std::os::unix::fs::MetadataExt as _;
    files
        .iter()
        .map(|path| {
            // `metadata` follows symlinks, so a swapped Kubernetes `..data` link shows up.
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len(), meta.ino()))
        })
        .collect()
}

/// The names of `files`, which is what a folder's events are matched on.
fn file_names(files: &[PathBuf]) -> BTreeSet<OsString> {
    files
        .iter()
        .filter_map(|file| file.file_name().map(OsString::from))
        .collect()
}

/// Whether an event in a watched folder may concern one of the files named `names`: it names
/// one of them, or a Kubernetes volume's `..data` swap, or no path at all. Other files in the
/// folder (a log written next to the config) do not wake the reload task.
fn concerns(event: &notify::Event, names: &BTreeSet<OsString>) -> bool {
    event.paths.is_empty()
        || event
            .paths
            .iter()
            .filter_map(|path| path.file_name())
            .any(|name| names.contains(name) || name.as_encoded_bytes().starts_with(b".."))
}

fn file_watcher(
    events: mpsc::UnboundedSender<()>,
    names: Arc<Mutex<BTreeSet<OsString>>>,
) -> Option<notify::RecommendedWatcher> {
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let wakes = match &event {
            // An error may mean lost events: look at the files.
            Err(_) => true,
            Ok(event) => names.lock().map_or(true, |names| concerns(event, &names)),
        };
        if wakes {
            let _ = events.send(());
        }
    });
    match watcher {
        Ok(watcher) => Some(watcher),
        Err(error) => {
            tracing::warn!(error = %error, "file events unavailable, polling for changes");
            None
        }
    }
}

/// Watches each file's folder rather than the file, so a file replaced by `rename` (atomic
/// writers, Kubernetes secret volumes) keeps being seen.
fn watch_folders(watcher: Option<&mut notify::RecommendedWatcher>, files: &[PathBuf]) {
    let Some(watcher) = watcher else {
        return;
    };
    let folders: BTreeSet<&Path> = files
        .iter()
        .map(|file| match file.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        })
        .collect();
    for folder in folders {
        if let Err(error) = watcher.watch(folder, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(path = %folder.display(), error = %error, "cannot watch folder, polling it");
        }
    }
}

/// SIGHUP's stream, `None` when its handler cannot be installed.
type Hangup = Option<tokio::signal::unix::Signal>;

fn hangup_signal() -> Hangup {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

/// Completes on the next SIGHUP; never, without a handler.
async fn recv_hangup(hangup: &mut Hangup) {
    let received = match hangup {
        Some(signal) => signal.recv().await.is_some(),
        None => false,
    };
    if !received {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started() -> RestartOnly {
        RestartOnly {
            listen: "127.0.0.1:8443".parse().unwrap_or_else(|_| unreachable!()),
            admin: None,
            listen_http: None,
            max_connections: 10_000,
            max_connections_per_client: None,
            max_pending_handshakes: 1_024,
        }
    }

    #[test]
    fn only_events_about_the_watched_files_wake_the_reload_task() {
        let names = file_names(&[
            PathBuf::from("config/certgate.json"),
            PathBuf::from("/etc/certgate/tls/tls.crt"),
        ]);
        let event = |paths: &[&str]| {
            let mut event = notify::Event::new(notify::EventKind::Any);
            for path in paths {
                event = event.add_path(PathBuf::from(path));
            }
            event
        };
        for wakes in [
            &["config/certgate.json"][..],
            &["config/certgate.json.tmp", "config/certgate.json"],
            &["/etc/certgate/tls/tls.crt"],
            &["/etc/certgate/tls/..data"],
            &["/etc/certgate/tls/..2026_12_02_03_50_00.123"],
            &[],
        ] {
            assert!(concerns(&event(wakes), &names), "{wakes:?} should wake it");
        }
        for quiet in [
            &["config/access.log"][..],
            &["config/certgate.json.swp"],
            &["/etc/certgate/tls/notes.txt"],
        ] {
            assert!(!concerns(&event(quiet), &names), "{quiet:?} should not");
        }
    }

    #[test]
    fn a_reload_names_every_setting_that_waits_for_a_restart() {
        assert!(started().changed(&started()).is_empty());
        let new = RestartOnly {
            listen: "127.0.0.1:9443".parse().unwrap_or_else(|_| unreachable!()),
            admin: Some("127.0.0.1:9901".parse().unwrap_or_else(|_| unreachable!())),
            listen_http: Some("127.0.0.1:8080".parse().unwrap_or_else(|_| unreachable!())),
            max_connections: 500,
            max_connections_per_client: Some(10),
            max_pending_handshakes: 64,
        };
        assert_eq!(
            started().changed(&new),
            [
                "listen",
                "admin",
                "listenHttp",
                "limits.maxConnections",
                "limits.maxConnectionsPerClient",
                "limits.maxPendingHandshakes"
            ]
        );
        let one = RestartOnly {
            max_pending_handshakes: 64,
            ..started()
        };
        assert_eq!(started().changed(&one), ["limits.maxPendingHandshakes"]);
    }
}
