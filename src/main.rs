//! The binary edge: parse the command line, set up logging, load the config (exit 64 before
//! anything binds), serve until SIGTERM or Ctrl-C, drain, exit.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::{Mutex, PoisonError};

use certgate::Config;
use certgate::cli::{Cli, Command, LogFormat, PkiCommand};
use certgate::{Server, Stop, error_chain};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// jemalloc instead of glibc malloc: with a background thread purging pages that stay unused
/// (settings in `.cargo/config.toml`), memory freed when a burst of connections closes goes
/// back to the kernel; glibc keeps it in its per-thread arenas.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Bad usage or config (sysexits `EX_USAGE`).
const EXIT_USAGE: u8 = 64;
/// A failure at run time, e.g. the port is taken.
const EXIT_RUNTIME: u8 = 1;
/// `explain`: the certificate would be refused.
const EXIT_REFUSED: u8 = 1;
/// Ended at once by a second SIGINT or SIGTERM: 128 + the signal's number, as a shell
/// reports a process the signal ended.
const EXIT_SIGINT: i32 = 130;
const EXIT_SIGTERM: i32 = 143;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => {
            // --help and --version.
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // `explain` resolves upstream names once to list their endpoints: the resolver's info
    // lines (`upstream addresses changed`) speak of a running certgate's endpoints.
    let default_filter = match cli.command {
        Command::Explain(_) => "info,certgate::upstream::discovery=warn",
        _ => "info",
    };
    match init_logging(cli.log_format, default_filter) {
        Ok(guard) => *log_guard() = Some(guard),
        Err(error) => {
            eprintln!("certgate: cannot start the log thread: {error}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    }
    let code = run(cli.command);
    // Writes out the log lines still queued.
    log_guard().take();
    code
}

/// The log thread's guard, held until exit (or until a second signal ends certgate at once):
/// dropping it writes out the lines still queued.
static LOG_GUARD: Mutex<Option<certgate::LogGuard>> = Mutex::new(None);

fn log_guard() -> std::sync::MutexGuard<'static, Option<certgate::LogGuard>> {
    LOG_GUARD.lock().unwrap_or_else(PoisonError::into_inner)
}

fn run(command: Command) -> ExitCode {
    match command {
        Command::Check(args) => check(&args),
        Command::Explain(args) => explain(&args),
        Command::Pki(PkiCommand::Init { dir, force, hosts }) => pki_init(&dir, force, &hosts),
        Command::Pki(PkiCommand::TicketKeys {
            file,
            force,
            rotate,
        }) => ticket_keys(&file, force, rotate),
        Command::Health { admin } => health(admin),
        Command::Demo { listen } => demo(listen),
        Command::Run(args) => match args.source() {
            Ok(source) => serve(source),
            Err(error) => {
                eprintln!("certgate: {}", error_chain(&error));
                ExitCode::from(EXIT_USAGE)
            }
        },
    }
}

/// Logs go to stderr through the log thread (`certgate::start_log_thread`), so a slow or blocked
/// stderr never stalls a request; `RUST_LOG` sets the filter, `default_filter` without it.
fn init_logging(format: LogFormat, default_filter: &str) -> std::io::Result<certgate::LogGuard> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let (writer, guard) = certgate::start_log_thread(std::io::stderr())?;
    // Colours only for a person at a terminal, never in files, `docker logs` or `kubectl logs`.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    if !ansi {
        certgate::install_access_log_writer(writer.clone(), format == LogFormat::Json);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(guard)
}

/// Starts jemalloc's background purging thread, which returns pages unused for
/// `dirty_decay_ms` to the kernel even while every worker sleeps (without it jemalloc purges
/// only when a thread allocates or frees). Without it certgate still runs, holding more memory.
fn start_memory_purging() {
    if let Err(error) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(error = %error, "cannot start the allocator's purging thread");
    }
}

/// Raises the soft open-file limit to the hard one, as Go programs do at start and nginx's
/// `worker_rlimit_nofile` does: every connection takes a descriptor and its upstream another, so
/// the common soft default of 1024 would refuse connections long before `maxConnections`.
fn raise_open_file_limit(config: &Config) {
    let wanted = 2 * config.limits.max_connections + 64;
    match rlimit::increase_nofile_limit(u64::MAX) {
        // Said, not warned: most deployments never come near `maxConnections`, and running
        // out of descriptors is warned about, with what to do, when it happens.
        Ok(limit) if limit < u64::try_from(wanted).unwrap_or(u64::MAX) => tracing::info!(
            open_files = limit,
            wanted,
            "the open-file limit is below twice limits.maxConnections: certgate says what to do if it runs out"
        ),
        Ok(limit) => tracing::debug!(open_files = limit, "open-file limit"),
        Err(error) => tracing::warn!(error = %error, "cannot raise the open-file limit"),
    }
}

/// `check`: the summary line per app on stdout, findings on stderr; exit 64 on an error
/// (`crlUrls` are fetched as `run` fetches them).
fn check(args: &certgate::cli::RunArgs) -> ExitCode {
    let source = match args.source() {
        Ok(source) => source,
        Err(error) => {
            eprintln!("certgate: {}", error_chain(&error));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    block_on(async move {
        let config = match source().await {
            Ok(config) => config,
            Err(error) => {
                eprintln!("certgate: {}", error_chain(&error));
                return ExitCode::from(EXIT_USAGE);
            }
        };
        if let Some(line) = certgate::cli::listen_http_summary(&config.config) {
            println!("{line}");
        }
        for app in &config.apps {
            println!("{}", certgate::cli::summary(app));
        }
        if let Some(dns) = certgate::cli::dns_summary(&config.config) {
            println!("{dns}");
        }
        for finding in &config.config.findings {
            eprintln!("certgate: {finding}");
        }
        if config.config.has_error_findings() {
            ExitCode::from(EXIT_USAGE)
        } else {
            ExitCode::SUCCESS
        }
    })
}

/// `explain`: exit 0 when the certificate would be accepted, 1 when refused, 64 on bad usage.
fn explain(args: &certgate::cli::ExplainArgs) -> ExitCode {
    block_on(async {
        match certgate::explain::run(args).await {
            Ok(explanation) => {
                print!("{}", certgate::explain::render(&explanation, args.format));
                if explanation.accepted {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(EXIT_REFUSED)
                }
            }
            Err(error) => {
                eprintln!("certgate: {}", error_chain(&error));
                ExitCode::from(EXIT_USAGE)
            }
        }
    })
}

fn pki_init(dir: &std::path::Path, force: bool, hosts: &[String]) -> ExitCode {
    use certgate::pki::Initialized;
    match certgate::pki::init_for_hosts(dir, force, hosts) {
        Ok(Initialized::Written(written) | Initialized::Reissued(written)) => {
            for path in written {
                println!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Ok(Initialized::Kept) => {
            println!(
                "kept the development PKI in {}: every file is there (--host NAME issues its server certificate again with NAME, --force makes a new PKI)",
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => pki_failed(&error),
    }
}

/// A file that already exists, a partial PKI or a bad --host is a usage error; anything else
/// is a runtime one.
fn pki_failed(error: &certgate::pki::PkiError) -> ExitCode {
    eprintln!("certgate: {}", error_chain(error));
    if matches!(
        error,
        certgate::pki::PkiError::Exists { .. }
            | certgate::pki::PkiError::Incomplete { .. }
            | certgate::pki::PkiError::BadHost { .. }
    ) {
        ExitCode::from(EXIT_USAGE)
    } else {
        ExitCode::from(EXIT_RUNTIME)
    }
}

fn ticket_keys(path: &std::path::Path, force: bool, rotate: bool) -> ExitCode {
    match certgate::pki::ticket_keys(path, force, rotate) {
        Ok(written) => {
            println!("wrote {}", written.display());
            ExitCode::SUCCESS
        }
        Err(error) => pki_failed(&error),
    }
}

/// Exit 0 when ready; 1 (and the reason on stderr) otherwise, as probes expect.
fn health(admin: std::net::SocketAddr) -> ExitCode {
    match certgate::health::check(admin) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("certgate: {}", error_chain(&error));
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn demo(listen: std::net::SocketAddr) -> ExitCode {
    start_memory_purging();
    block_on(async {
        let shutdown = shutdown_signal();
        match certgate::demo::run(listen, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("certgate: {}", error_chain(&error));
                ExitCode::from(EXIT_RUNTIME)
            }
        }
    })
}

fn block_on(task: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(task),
        Err(error) => {
            eprintln!("certgate: cannot start the async runtime: {error}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Loads the config (exit 64 when it is refused), then serves it until SIGTERM or SIGINT.
fn serve(source: certgate::ConfigSource) -> ExitCode {
    start_memory_purging();
    block_on(async {
        let config = match source().await {
            Ok(config) => config,
            Err(error) => {
                eprintln!("certgate: {}", error_chain(&error));
                return ExitCode::from(EXIT_USAGE);
            }
        };
        raise_open_file_limit(&config.config);
        let shutdown = shutdown_signal();
        let server = match Server::bind(&config, Some(source), certgate::worker_threads()).await {
            Ok(server) => server,
            Err(error) => {
                tracing::error!(error = %error_chain(&error), "cannot start");
                return ExitCode::from(EXIT_RUNTIME);
            }
        };
        let admin = server.admin_addr().map(|addr| addr.to_string());
        let listen_http = server.http_addr().map(|addr| addr.to_string());
        tracing::info!(
            listen = %server.local_addr(),
            admin = admin.as_deref().unwrap_or("off"),
            listen_http = listen_http.as_deref().unwrap_or("off"),
            apps = config.apps.len(),
            "serving"
        );
        match server.run(shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(error = %error_chain(&error), "stopped");
                ExitCode::from(EXIT_RUNTIME)
            }
        }
    })
}

/// Completes on SIGTERM or SIGINT (Ctrl-C), saying how to stop: SIGINT at a terminal (stdin
/// is a TTY) skips the drain delay, since no load balancer is watching; SIGTERM keeps it. A
/// second SIGINT or SIGTERM ends certgate at once, without draining. The handlers are
/// installed when this is called, not when the future is first polled, so a signal that
/// arrives while certgate is still starting (after it printed that it is ready) is not lost
/// to the default action.
fn shutdown_signal() -> impl std::future::Future<Output = Stop> {
    use tokio::signal::unix::{SignalKind, signal};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    let at_terminal = std::io::stdin().is_terminal();
    async move {
        let (Ok(mut interrupt), Ok(mut terminate)) = (interrupt, terminate) else {
            // Without handlers the signals keep their default action: the process ends.
            return std::future::pending().await;
        };
        let stop = tokio::select! {
            _ = interrupt.recv() => match at_terminal {
                true => Stop::SkipDrainDelay,
                false => Stop::Drain,
            },
            _ = terminate.recv() => Stop::Drain,
        };
        tokio::spawn(async move {
            let (name, code) = tokio::select! {
                _ = interrupt.recv() => ("SIGINT", EXIT_SIGINT),
                _ = terminate.recv() => ("SIGTERM", EXIT_SIGTERM),
            };
            tracing::warn!(
                signal = name,
                "second signal: stopping at once, without draining"
            );
            log_guard().take();
            std::process::exit(code);
        });
        stop
    }
}
