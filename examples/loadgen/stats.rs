//! The measuring window, the proxy's CPU time and RSS from /proc, latency percentiles, and the
//! JSON line each run prints.

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

    /// Reads the target's CPU time at the window's start and end, so the time spent outside
    /// it (warm-up, connection set-up, the stop) is not counted.
    pub(crate) async fn cpu_seconds(self, target: &TargetArgs) -> Result<f64, Error> {
        tokio::time::sleep_until(self.begin.into()).await;
        let before = cpu_ticks(&target.pids)?;
        tokio::time::sleep_until(self.end.into()).await;
        let after = cpu_ticks(&target.pids)?;
        Ok(after.saturating_sub(before) as f64 / target.clk_tck.max(1) as f64)
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

    /// The JSON figures of a rate measurement: count, rate, per CPU-second, percentiles.
    pub(crate) fn figures(mut self, window: &Window, cpu_seconds: f64) -> Map<String, Value> {
        let count = self.micros.len();
        let seconds = window.seconds();
        let mut figures = Map::new();
        figures.insert("count".into(), json!(count));
        figures.insert("errors".into(), json!(self.errors));
        figures.insert("seconds".into(), json!(seconds));
        figures.insert("rate".into(), json!(count as f64 / seconds));
        figures.insert("cpu_seconds".into(), json!(cpu_seconds));
        if cpu_seconds > 0.0 {
            figures.insert("per_cpu_second".into(), json!(count as f64 / cpu_seconds));
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

/// utime + stime of every process in `pids` (all threads included), in clock ticks.
pub(crate) fn cpu_ticks(pids: &[u32]) -> Result<u64, Error> {
    let mut total = 0;
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
        total += ticks(11)? + ticks(12)?;
    }
    Ok(total)
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
