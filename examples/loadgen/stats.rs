//! The measuring window, CPU times (the proxy's, the upstream's, the load generator's and the
//! machine's) and RSS from /proc, latency percentiles, and the JSON line each run prints.

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::{Error, TargetArgs};

/// Load runs from the start; only what completes inside `[begin, end)` is counted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub(crate) begin: Instant,
    pub(crate) end: Instant,
}

impl Window {
    pub(crate) fn new(warmup: Duration, duration: Duration) -> Self {
        let begin = Instant::now() + warmup;
        Self {
            begin,
            end: begin + duration,
        }
    }

    pub(crate) fn seconds(&self) -> f64 {
        (self.end - self.begin).as_secs_f64()
    }

    pub(crate) fn contains(&self, at: Instant) -> bool {
        self.begin <= at && at < self.end
    }

    pub(crate) fn over(&self) -> bool {
        Instant::now() >= self.end
    }

    /// Reads the CPU times of the target, the upstream, the load generator and the machine at
    /// the window's start and end, so the time spent outside it (warm-up, connection set-up,
    /// the stop) is not counted.
    pub(crate) async fn cpu(self, target: &TargetArgs) -> Result<CpuUse, Error> {
        tokio::time::sleep_until(self.begin.into()).await;
        let before = CpuSample::take(target)?;
        tokio::time::sleep_until(self.end.into()).await;
        let after = CpuSample::take(target)?;
        Ok(after.since(&before, target.clk_tck.max(1)))
    }
}

/// CPU time in clock ticks, read at one moment.
#[derive(Debug, Clone, Copy)]
struct CpuSample {
    proxy: Ticks,
    upstream: Ticks,
    loadgen: Ticks,
    /// Every CPU of the machine: busy, and in all (busy, idle and waiting for I/O).
    machine_busy: u64,
    machine_all: u64,
}

impl CpuSample {
    fn take(target: &TargetArgs) -> Result<Self, Error> {
        let (machine_busy, machine_all) = machine_ticks()?;
        Ok(Self {
            proxy: cpu_ticks(&target.pids)?,
            upstream: cpu_ticks(&target.upstream_pids)?,
            loadgen: cpu_ticks(&[std::process::id()])?,
            machine_busy,
            machine_all,
        })
    }

    fn since(&self, before: &Self, clk_tck: u64) -> CpuUse {
        let seconds =
            |after: u64, before: u64| after.saturating_sub(before) as f64 / clk_tck as f64;
        CpuUse {
            proxy_user: seconds(self.proxy.user, before.proxy.user),
            proxy_system: seconds(self.proxy.system, before.proxy.system),
            upstream: seconds(self.upstream.total(), before.upstream.total()),
            loadgen: seconds(self.loadgen.total(), before.loadgen.total()),
            machine_busy: seconds(self.machine_busy, before.machine_busy),
            machine_all: seconds(self.machine_all, before.machine_all),
        }
    }
}

/// What the CPUs did in a window, in seconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuUse {
    /// The target's processes, in user space and in the kernel.
    proxy_user: f64,
    proxy_system: f64,
    /// The upstream's processes (none when the run was not told them).
    upstream: f64,
    /// This load generator.
    loadgen: f64,
    /// Every CPU of the machine: busy, and in all.
    machine_busy: f64,
    machine_all: f64,
}

impl CpuUse {
    fn proxy(&self) -> f64 {
        self.proxy_user + self.proxy_system
    }
}

/// What one task measured inside the window.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Latency of every successful request (or connection), in microseconds.
    pub(crate) micros: Vec<u32>,
    pub(crate) errors: u64,
    /// The first error seen, to say what went wrong.
    pub(crate) first_error: Option<String>,
    /// Handshakes that resumed a session.
    pub(crate) resumed: u64,
}

impl Tally {
    pub(crate) fn record(&mut self, started: Instant, done: Instant) {
        let micros = (done - started).as_micros();
        self.micros.push(u32::try_from(micros).unwrap_or(u32::MAX));
    }

    pub(crate) fn fail(&mut self, error: &Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(certgate::error_chain(error.as_ref()));
        }
    }

    pub(crate) fn merge(&mut self, other: Self) {
        self.micros.extend(other.micros);
        self.errors += other.errors;
        self.resumed += other.resumed;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// The JSON figures of a rate measurement: count, rate, per CPU-second, percentiles, and
    /// where the machine's CPU time went.
    pub(crate) fn figures(mut self, window: &Window, cpu: &CpuUse) -> Map<String, Value> {
        let count = self.micros.len();
        let seconds = window.seconds();
        let mut figures = Map::new();
        figures.insert("count".into(), json!(count));
        figures.insert("errors".into(), json!(self.errors));
        figures.insert("seconds".into(), json!(seconds));
        figures.insert("rate".into(), json!(count as f64 / seconds));
        let cpu_seconds = cpu.proxy();
        figures.insert("cpu_seconds".into(), json!(cpu_seconds));
        if cpu_seconds > 0.0 {
            figures.insert("per_cpu_second".into(), json!(count as f64 / cpu_seconds));
        }
        for (field, seconds) in [
            ("cpu_user_seconds", cpu.proxy_user),
            ("cpu_system_seconds", cpu.proxy_system),
            ("upstream_cpu_seconds", cpu.upstream),
            ("loadgen_cpu_seconds", cpu.loadgen),
            ("machine_busy_seconds", cpu.machine_busy),
            ("machine_cpu_seconds", cpu.machine_all),
        ] {
            figures.insert(field.into(), json!(seconds));
        }
        figures.insert("p50_ms".into(), json!(percentile(&mut self.micros, 0.50)));
        figures.insert("p99_ms".into(), json!(percentile(&mut self.micros, 0.99)));
        figures.insert("resumed".into(), json!(self.resumed));
        if let Some(error) = self.first_error {
            figures.insert("first_error".into(), json!(error));
        }
        figures
    }
}

/// The `q` quantile (nearest rank) of `micros`, in milliseconds; `None` when empty.
pub(crate) fn percentile(micros: &mut [u32], q: f64) -> Option<f64> {
    if micros.is_empty() {
        return None;
    }
    let rank = ((micros.len() as f64 * q).ceil() as usize).clamp(1, micros.len()) - 1;
    let (_, value, _) = micros.select_nth_unstable(rank);
    Some(f64::from(*value) / 1000.0)
}

/// The JSON line of one run: target, round, phase and the figures.
pub(crate) fn line(target: &TargetArgs, phase: &str, figures: Map<String, Value>) -> Value {
    let mut line = Map::new();
    line.insert("target".into(), json!(target.name));
    line.insert("round".into(), json!(target.round));
    line.insert("phase".into(), json!(phase));
    line.extend(figures);
    Value::Object(line)
}

/// utime and stime of every process in `pids` (all threads included), in clock ticks.
#[derive(Debug, Clone, Copy, Default)]
struct Ticks {
    user: u64,
    system: u64,
}

impl Ticks {
    fn total(&self) -> u64 {
        self.user + self.system
    }
}

fn cpu_ticks(pids: &[u32]) -> Result<Ticks, Error> {
    let mut total = Ticks::default();
    for pid in pids {
        let path = format!("/proc/{pid}/stat");
        let stat = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {path} (has the process exited?): {e}"))?;
        // The command name in parentheses may contain spaces; the fields after it do not.
        // After it: state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt
        // utime stime, so utime and stime are the 12th and 13th.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |index: usize| -> Result<u64, Error> {
            let field = fields
                .get(index)
                .ok_or_else(|| format!("{path} has too few fields"))?;
            Ok(field.parse::<u64>()?)
        };
        total.user += ticks(11)?;
        total.system += ticks(12)?;
    }
    Ok(total)
}

/// The machine's CPU time from /proc/stat, in clock ticks: busy (everything but idle and
/// waiting for I/O) and in all.
fn machine_ticks() -> Result<(u64, u64), Error> {
    let path = "/proc/stat";
    let stat = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    Ok(busy_and_all(&stat).ok_or_else(|| format!("{path} has no readable \"cpu\" line"))?)
}

/// Busy and all ticks from the summary line of /proc/stat: `cpu  user nice system idle iowait
/// irq softirq steal guest guest_nice`, where guest time is already counted in user.
fn busy_and_all(stat: &str) -> Option<(u64, u64)> {
    let rest = stat.lines().find_map(|line| line.strip_prefix("cpu "))?;
    let ticks: Vec<u64> = rest
        .split_whitespace()
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let [user, nice, system, idle, iowait, irq, softirq, steal] = ticks[..] else {
        return None;
    };
    let busy = user + nice + system + irq + softirq + steal;
    Some((busy, busy + idle + iowait))
}

/// VmRSS of every process in `pids`, summed, in KiB.
pub(crate) fn rss_kib(pids: &[u32]) -> Result<u64, Error> {
    let mut total = 0;
    for pid in pids {
        let path = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {path} (has the process exited?): {e}"))?;
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| {
                value
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .ok_or_else(|| format!("{path} has no VmRSS line"))?;
        total += kib;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{CpuUse, Tally, Window, busy_and_all};

    #[test]
    fn figures_carry_every_share_of_the_cpu_time() {
        let tally = Tally {
            micros: vec![1_000; 10],
            ..Tally::default()
        };
        let cpu = CpuUse {
            proxy_user: 0.25,
            proxy_system: 0.5,
            upstream: 0.125,
            loadgen: 1.0,
            machine_busy: 1.875,
            machine_all: 2.0,
        };
        let figures = tally.figures(&Window::new(Duration::ZERO, Duration::from_secs(1)), &cpu);
        for (field, seconds) in [
            ("cpu_seconds", 0.75),
            ("cpu_user_seconds", 0.25),
            ("cpu_system_seconds", 0.5),
            ("upstream_cpu_seconds", 0.125),
            ("loadgen_cpu_seconds", 1.0),
            ("machine_busy_seconds", 1.875),
            ("machine_cpu_seconds", 2.0),
        ] {
            assert_eq!(figures[field].as_f64(), Some(seconds), "{field}");
        }
        assert_eq!(figures["per_cpu_second"].as_f64(), Some(10.0 / 0.75));
    }

    #[test]
    fn busy_and_all_ticks_come_from_the_summary_line_of_proc_stat() {
        let stat = "cpu  5749 1 2148 1214446 264 2 25 6 100 0\n\
                    cpu0 2483 0 750 608183 19 0 7 2 0 0\n\
                    intr 1 2 3\n";
        let busy = 5749 + 1 + 2148 + 2 + 25 + 6;
        assert_eq!(busy_and_all(stat), Some((busy, busy + 1214446 + 264)));
        assert_eq!(busy_and_all("cpu0 1 2 3 4 5 6 7 8\n"), None);
        assert_eq!(busy_and_all("cpu  1 2 3\n"), None);
        assert_eq!(busy_and_all("cpu  1 2 x 4 5 6 7 8\n"), None);
    }
}
