//! The load generator of certgate's side-by-side benchmark (`bench/run.sh`,
//! docs/performance.md). It drives any mTLS proxy with a client certificate, the same way for every
//! target: HTTP/1.1 keep-alive, HTTP/2 streams, full and resumed handshakes, and idle
//! connections while it reads the proxy's memory. Each run prints one JSON line; `report` turns
//! those lines into the Markdown table of docs/performance.md.

mod client;
mod handshakes;
mod idle;
mod load;
mod report;
mod stats;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Every failure of the load generator ends the run with its message.
pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;

/// Load generator for certgate's side-by-side benchmark.
#[derive(Debug, Parser)]
#[command(name = "loadgen")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// HTTP/1.1 keep-alive: each connection sends one request after the other.
    H1 {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        window: WindowArgs,
        /// Connections, each with one request in flight.
        #[arg(long, default_value_t = 50)]
        connections: usize,
        /// Name of the phase in the results, e.g. https for the proxy's route to an app it
        /// reaches over TLS.
        #[arg(long, default_value = "h1")]
        phase: String,
    },
    /// HTTP/2: several streams per connection, each sends one request after the other.
    H2 {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        window: WindowArgs,
        /// Connections.
        #[arg(long, default_value_t = 10)]
        connections: usize,
        /// Requests in flight on each connection.
        #[arg(long, default_value_t = 5)]
        streams: usize,
    },
    /// Handshakes: each loop connects, sends one request, closes, and starts again.
    Handshakes {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        window: WindowArgs,
        /// Loops running at once.
        #[arg(long, default_value_t = 16)]
        loops: usize,
        /// Resume TLS sessions (tickets shared by all loops); without it every handshake is full.
        #[arg(long)]
        resume: bool,
    },
    /// Memory: reads the proxy's RSS, opens connections (one request each), holds them idle and
    /// reads the RSS again.
    Idle {
        #[command(flatten)]
        target: TargetArgs,
        /// Idle connections to hold.
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Connections being opened at once.
        #[arg(long, default_value_t = 32)]
        parallel: usize,
        /// Seconds to wait before each RSS reading.
        #[arg(long, default_value_t = 1.0)]
        settle: f64,
        /// Seconds to wait after the connections closed before the last RSS reading.
        #[arg(long, default_value_t = 10.0)]
        closed_wait: f64,
    },
    /// Prints a free loopback TCP port per argument (asked from the kernel, then released).
    Ports {
        /// How many ports.
        count: usize,
    },
    /// Prints the Markdown table of medians from the JSON lines the other commands wrote.
    Report {
        /// File of JSON lines.
        results: PathBuf,
    },
}

/// Which proxy to drive and which of its processes to watch.
#[derive(Debug, Clone, Args)]
struct TargetArgs {
    /// Name of the target in the results (certgate, nginx, haproxy, ...).
    #[arg(long)]
    name: String,
    /// Round number, copied into the results.
    #[arg(long, default_value_t = 1)]
    round: u32,
    /// Address of the proxy's mTLS listener.
    #[arg(long)]
    addr: SocketAddr,
    /// Server name sent as SNI and Host, and verified in the server certificate.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// PEM CA that issued the server certificate.
    #[arg(long)]
    ca: PathBuf,
    /// PEM client certificate chain to present.
    #[arg(long)]
    cert: PathBuf,
    /// PEM private key of the client certificate.
    #[arg(long)]
    key: PathBuf,
    /// The proxy's processes, whose CPU time and RSS are read from /proc (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    pids: Vec<u32>,
    /// The upstream's processes, whose CPU time is reported beside the proxy's
    /// (comma-separated).
    #[arg(long, value_delimiter = ',')]
    upstream_pids: Vec<u32>,
    /// Clock ticks per second of /proc/PID/stat (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clk_tck: u64,
}

/// When measuring starts and how long it lasts.
#[derive(Debug, Clone, Copy, Args)]
struct WindowArgs {
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
}

impl WindowArgs {
    fn window(self) -> Result<stats::Window, Error> {
        let seconds = |value: f64, what: &str| {
            Duration::try_from_secs_f64(value)
                .map_err(|_| format!("--{what} must be a number of seconds, not {value}"))
        };
        let duration = seconds(self.duration, "duration")?;
        if duration.is_zero() {
            return Err("--duration must be more than 0 seconds".into());
        }
        Ok(stats::Window::new(
            seconds(self.warmup, "warmup")?,
            duration,
        ))
    }
}

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("loadgen: cannot start the runtime: {error}");
            std::process::exit(1);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(output) => println!("{output}"),
        Err(error) => {
            eprintln!("loadgen: {}", certgate::error_chain(error.as_ref()));
            std::process::exit(1);
        }
    }
}

async fn run(command: Command) -> Result<String, Error> {
    let line = match command {
        Command::H1 {
            target,
            window,
            connections,
            phase,
        } => {
            let client = Arc::new(client::Client::new(&target, client::Protocol::Http1, true)?);
            let figures = load::run(&client, connections, 1, window.window()?, &target).await?;
            stats::line(&target, &phase, figures)
        }
        Command::H2 {
            target,
            window,
            connections,
            streams,
        } => {
            let client = Arc::new(client::Client::new(&target, client::Protocol::Http2, true)?);
            let figures =
                load::run(&client, connections, streams, window.window()?, &target).await?;
            stats::line(&target, "h2", figures)
        }
        Command::Handshakes {
            target,
            window,
            loops,
            resume,
        } => {
            let client = Arc::new(client::Client::new(
                &target,
                client::Protocol::Http1,
                resume,
            )?);
            let figures = handshakes::run(&client, loops, window.window()?, &target).await?;
            let phase = if resume { "resumed" } else { "full" };
            stats::line(&target, phase, figures)
        }
        Command::Idle {
            target,
            connections,
            parallel,
            settle,
            closed_wait,
        } => {
            let settle = Duration::try_from_secs_f64(settle)
                .map_err(|_| format!("--settle must be a number of seconds, not {settle}"))?;
            let closed_wait = Duration::try_from_secs_f64(closed_wait).map_err(|_| {
                format!("--closed-wait must be a number of seconds, not {closed_wait}")
            })?;
            let client = Arc::new(client::Client::new(
                &target,
                client::Protocol::Http1,
                false,
            )?);
            let figures = idle::run(
                &client,
                connections,
                parallel.max(1),
                settle,
                closed_wait,
                &target,
            )
            .await?;
            stats::line(&target, "idle", figures)
        }
        Command::Ports { count } => return free_ports(count),
        Command::Report { results } => return report::markdown(&results),
    };
    Ok(line.to_string())
}

/// Ports the kernel hands out for `127.0.0.1:0`, all held open together so they differ.
fn free_ports(count: usize) -> Result<String, Error> {
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let ports = listeners
        .iter()
        .map(|listener| listener.local_addr().map(|addr| addr.port().to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ports.join(" "))
}
