//! `report`: the medians over all rounds of every figure, per target, as one Markdown table
//! with certgate's ratio to the best peer and the performance goals; when the run had a
//! baseline build, a second table with certgate's change from it; then notes on errors and on
//! how many "resumed" handshakes really resumed, and where the machine's CPU time went per
//! request.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::Error;

mod cpu;
mod rows;

use self::rows::rows;

/// certgate with its access log off: the figure every ratio is about.
const CERTGATE: &str = "certgate";
/// certgate with its default access log on; only its cost is reported.
const CERTGATE_LOGGING: &str = "certgate-log";
/// Another certgate build with certgate's config (`bench/run.sh --baseline`); only compared
/// with certgate.
const BASELINE: &str = "baseline";
/// How much worse than the baseline, in percent, certgate may be before a row is flagged.
const BASELINE_TOLERANCE: f64 = 3.0;
/// The peers, as named in the results and in the table.
const PEERS: [(&str, &str); 2] = [("nginx", "nginx"), ("haproxy", "HAProxy")];
/// The request phases, as named in the results and in the table.
const PROTOCOLS: [(&str, &str); 2] = [("h1", "HTTP/1.1"), ("h2", "HTTP/2")];

/// Which way is better for a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
}

/// The peer a goal compares with.
#[derive(Debug, Clone, Copy)]
enum Peer {
    Named(&'static str),
    Best,
}

/// certgate's figure divided by the peer's must reach `ratio` (at least when higher is better,
/// at most when lower is).
#[derive(Debug, Clone, Copy)]
struct Goal {
    ratio: f64,
    peer: Peer,
}

struct Row {
    label: String,
    phase: &'static str,
    field: &'static str,
    better: Better,
    format: fn(f64) -> String,
    goal: Option<Goal>,
}

/// Reads the JSON lines in `path` and renders the table and its notes.
pub(crate) fn markdown(path: &Path) -> Result<String, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the results {}: {e}", path.display()))?;
    let mut lines = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line)
            .map_err(|e| format!("{} line {}: {e}", path.display(), number + 1))?;
        lines.push(value);
    }
    let results = Results::new(&lines);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| | certgate | {} | {} | certgate / best peer | goal |",
        PEERS[0].1, PEERS[1].1
    );
    let _ = writeln!(out, "|---|--:|--:|--:|--:|---|");
    let rows = rows(&results);
    for row in &rows {
        out.push_str(&results.row(row));
    }
    for (phase, protocol) in PROTOCOLS {
        for (field, figure) in [
            ("rate", "rps"),
            ("per_cpu_second", "requests per CPU-second"),
        ] {
            out.push_str(&results.access_log_row(phase, field, &format!("{protocol} {figure}")));
        }
    }
    out.push('\n');
    out.push_str(&results.baseline(&rows));
    out.push_str(&results.notes());
    out.push_str(&results.cpu_per_request(&rows));
    Ok(out)
}

/// Every run's figures, by target and phase.
struct Results<'a> {
    runs: BTreeMap<(String, String), Vec<&'a Value>>,
}

impl<'a> Results<'a> {
    fn new(lines: &'a [Value]) -> Self {
        let mut runs: BTreeMap<(String, String), Vec<&Value>> = BTreeMap::new();
        for line in lines {
            let (Some(target), Some(phase)) = (line["target"].as_str(), line["phase"].as_str())
            else {
                continue;
            };
            runs.entry((target.to_owned(), phase.to_owned()))
                .or_default()
                .push(line);
        }
        Self { runs }
    }

    fn values(&self, target: &str, phase: &str, field: &str) -> Vec<f64> {
        self.runs
            .get(&(target.to_owned(), phase.to_owned()))
            .map(|runs| runs.iter().filter_map(|run| run[field].as_f64()).collect())
            .unwrap_or_default()
    }

    fn median(&self, target: &str, phase: &str, field: &str) -> Option<f64> {
        median(self.values(target, phase, field))
    }

    /// Whether the main table has `row`: certgate or a peer ran its phase.
    fn shown(&self, row: &Row) -> bool {
        [CERTGATE]
            .into_iter()
            .chain(PEERS.map(|(name, _)| name))
            .any(|target| self.median(target, row.phase, row.field).is_some())
    }

    fn row(&self, row: &Row) -> String {
        let value = |target: &str| self.median(target, row.phase, row.field);
        let ours = value(CERTGATE);
        let peers: Vec<(&str, Option<f64>)> =
            PEERS.iter().map(|(name, _)| (*name, value(name))).collect();
        let best = peers
            .iter()
            .filter_map(|(_, figure)| *figure)
            .reduce(|a, b| match row.better {
                Better::Higher => a.max(b),
                Better::Lower => a.min(b),
            });
        if !self.shown(row) {
            // A phase this run left out (`--phases`).
            return String::new();
        }
        let cell = |figure: Option<f64>| figure.map_or_else(|| "—".to_owned(), row.format);
        let ratio = ours
            .zip(best)
            .map_or_else(|| "—".to_owned(), |(a, b)| times(a / b));
        let goal = row.goal.map_or_else(String::new, |goal| {
            let (peer_name, peer) = match goal.peer {
                Peer::Best => ("best peer".to_owned(), best),
                Peer::Named(name) => (display(name).to_owned(), value(name)),
            };
            let (sign, met) = match (row.better, ours.zip(peer)) {
                (Better::Higher, Some((a, b))) => ("≥", Some(a / b >= goal.ratio)),
                (Better::Lower, Some((a, b))) => ("≤", Some(a / b <= goal.ratio)),
                (Better::Higher, None) => ("≥", None),
                (Better::Lower, None) => ("≤", None),
            };
            let verdict = match (met, ours.zip(peer)) {
                (Some(met), Some((a, b))) => {
                    format!(
                        ": {} {}",
                        times(a / b),
                        if met { "met" } else { "**not met**" }
                    )
                }
                _ => String::new(),
            };
            format!("{sign} {:.2}× {peer_name}{verdict}", goal.ratio)
        });
        format!(
            "| {} | {} | {} | {} | {ratio} | {goal} |\n",
            row.label,
            cell(ours),
            cell(peers[0].1),
            cell(peers[1].1),
        )
    }

    /// certgate's `field` with its access log on, and the share of it that costs.
    fn access_log_row(&self, phase: &str, field: &str, label: &str) -> String {
        let on = self.median(CERTGATE_LOGGING, phase, field);
        let off = self.median(CERTGATE, phase, field);
        if on.is_none() {
            return String::new();
        }
        let cost = on.zip(off).map(|(on, off)| (1.0 - on / off) * 100.0);
        format!(
            "| {label} with certgate's access log on | {} | | | {} | {} |\n",
            on.map_or_else(|| "—".to_owned(), thousands),
            cost.map_or_else(|| "—".to_owned(), |cost| format!("cost {cost:.1}%")),
            cost.map_or_else(
                || "≤ 5% cost".to_owned(),
                |cost| format!(
                    "≤ 5% cost: {}",
                    if cost <= 5.0 { "met" } else { "**not met**" }
                )
            ),
        )
    }

    /// certgate's median beside the baseline's for each row of the main table, and the change
    /// in percent, negative where certgate is worse; empty when the run had no baseline.
    fn baseline(&self, rows: &[Row]) -> String {
        if !self.runs.keys().any(|(target, _)| target == BASELINE) {
            return String::new();
        }
        let mut out = format!(
            "certgate against the baseline, another certgate build run with the same config in \
             the same rounds (`--baseline`): medians, and certgate's change from the baseline, \
             negative where certgate is worse (for p99 and RSS, where its figure is higher), \
             flagged beyond {BASELINE_TOLERANCE:.0}%.\n\n\
             | | certgate | baseline | change | |\n|---|--:|--:|--:|---|\n"
        );
        for row in rows.iter().filter(|row| self.shown(row)) {
            let value = |target: &str| self.median(target, row.phase, row.field);
            let (ours, theirs) = (value(CERTGATE), value(BASELINE));
            let cell = |figure: Option<f64>| figure.map_or_else(|| "—".to_owned(), row.format);
            let change = ours.zip(theirs).filter(|(_, theirs)| *theirs > 0.0).map(
                |(ours, theirs)| match row.better {
                    Better::Higher => (ours / theirs - 1.0) * 100.0,
                    Better::Lower => (1.0 - ours / theirs) * 100.0,
                },
            );
            let flag = match change {
                Some(change) if change < -BASELINE_TOLERANCE => {
                    format!("**worse by more than {BASELINE_TOLERANCE:.0}%**")
                }
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {flag} |",
                row.label,
                cell(ours),
                cell(theirs),
                change.map_or_else(|| "—".to_owned(), |change| format!("{change:+.1}%")),
            );
        }
        out.push('\n');
        out
    }

    /// Rounds, errors, and how many handshakes of the resumed phase really resumed.
    fn notes(&self) -> String {
        let mut notes = String::new();
        let rounds = self.runs.values().map(Vec::len).max().unwrap_or_default();
        let seconds = median(
            self.runs
                .values()
                .flatten()
                .filter_map(|run| run["seconds"].as_f64())
                .collect(),
        )
        .unwrap_or_default();
        let _ = writeln!(
            notes,
            "Medians of {rounds} round{}, {seconds:.0} s measured per phase and target. \
             Ratios for p99 and RSS: lower is better.",
            if rounds == 1 { "" } else { "s" }
        );
        let load = |phase| {
            self.values("machine", phase, "loadavg")
                .first()
                .map(|load| format!("{load:.1}"))
        };
        let cores = self.median("machine", "start", "cores").unwrap_or_default();
        if let (Some(start), Some(end)) = (load("start"), load("end")) {
            let _ = writeln!(
                notes,
                "Load average at the start and the end: {start} and {end} on {cores:.0} cores: \
                 whatever else runs shares the CPU with the proxy, the load generator and the \
                 upstream, so raw rps moves between runs; the per-CPU-second rows move less."
            );
        }
        let mut resumed = Vec::new();
        for (name, shown) in [(CERTGATE, "certgate")]
            .into_iter()
            .chain(PEERS)
            .chain([(BASELINE, "baseline")])
        {
            let done: f64 = self.values(name, "resumed", "count").iter().sum();
            let did: f64 = self.values(name, "resumed", "resumed").iter().sum();
            if done > 0.0 {
                resumed.push(format!("{shown} {:.0}%", did / done * 100.0));
            }
        }
        if !resumed.is_empty() {
            let _ = writeln!(
                notes,
                "Handshakes of the resumed phase that did resume: {}.",
                resumed.join(", ")
            );
        }
        let mut errors = Vec::new();
        for ((target, phase), runs) in &self.runs {
            let count: f64 = runs.iter().filter_map(|run| run["errors"].as_f64()).sum();
            if count > 0.0 {
                let first = runs
                    .iter()
                    .find_map(|run| run["first_error"].as_str())
                    .unwrap_or("?");
                errors.push(format!("{target} {phase}: {count:.0} ({first})"));
            }
        }
        if errors.is_empty() {
            let _ = writeln!(notes, "No request failed.");
        } else {
            let _ = writeln!(notes, "Failed requests: {}.", errors.join("; "));
        }
        notes
    }
}

fn display(name: &str) -> &str {
    PEERS
        .iter()
        .find(|(key, _)| *key == name)
        .map_or(name, |(_, shown)| shown)
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    })
}

fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.round().max(0.0));
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn two_decimals(value: f64) -> String {
    format!("{value:.2}")
}

fn one_decimal(value: f64) -> String {
    format!("{value:.1}")
}

fn times(ratio: f64) -> String {
    format!("{ratio:.2}×")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use std::io::Write as _;

    use serde_json::{Value, json};

    use super::markdown;

    /// One round of a request phase against `target`: `count` requests in 5 s on 2 cores, 9 s
    /// of the machine's 10 busy, `cpu` s of them the proxy's.
    fn run(target: &str, phase: &str, count: u32, cpu: f64, p99: f64) -> Value {
        json!({
            "target": target, "round": 1, "phase": phase, "count": count, "errors": 0,
            "seconds": 5.0, "rate": f64::from(count) / 5.0, "cpu_seconds": cpu,
            "per_cpu_second": f64::from(count) / cpu, "p99_ms": p99,
            "cpu_user_seconds": 0.7, "cpu_system_seconds": cpu - 0.7,
            "upstream_cpu_seconds": 0.6, "loadgen_cpu_seconds": 0.9,
            "machine_busy_seconds": 9.0, "machine_cpu_seconds": 10.0,
        })
    }

    /// One round of HTTP/1.1 against certgate and the two peers: 100,000 requests in 5 s on 2
    /// cores against certgate, so 100 µs of machine time a request, and `nginx` requests
    /// against nginx; then `more` lines.
    fn results_with(nginx: u32, more: &[Value]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        for line in [
            json!({"target": "machine", "phase": "start", "loadavg": 0.5, "cores": 2}),
            run("certgate", "h1", 100_000, 1.5, 1.0),
            run("nginx", "h1", nginx, 2.0, 1.0),
            run("haproxy", "h1", 40_000, 2.0, 1.0),
        ]
        .iter()
        .chain(more)
        .chain([&json!({"target": "machine", "phase": "end", "loadavg": 1.5, "cores": 2})])
        {
            writeln!(file, "{line}").unwrap();
        }
        file
    }

    fn results(nginx: u32) -> tempfile::NamedTempFile {
        results_with(nginx, &[])
    }

    /// A baseline build's round of HTTP/1.1 beside `results(50_000)`: 110,000 requests with
    /// 1.62 s of CPU and a p99 of 1.25 ms, against certgate's 100,000 with 1.5 s and 1.0 ms.
    fn baseline_h1() -> Value {
        run("baseline", "h1", 110_000, 1.62, 1.25)
    }

    #[test]
    fn the_cpu_table_splits_each_request_s_machine_time() {
        let report = markdown(results(50_000).path()).unwrap();
        // 0.7 s user, 0.8 s kernel, 0.6 s upstream, 0.9 s load generator, 9.0 s busy of 10.0 s,
        // over 100,000 requests.
        assert!(
            report.contains("| HTTP/1.1, certgate | 7.0 | 8.0 | 6.0 | 9.0 | 60.0 | 10.0 |"),
            "{report}"
        );
        assert!(
            report.contains("| HTTP/1.1, nginx | 14.0 | 26.0 | 12.0 | 18.0 | 110.0 | 20.0 |"),
            "{report}"
        );
    }

    #[test]
    fn the_rps_goal_leaves_the_proxy_what_the_others_do_not_use() {
        let report = markdown(results(50_000).path()).unwrap();
        // 1.3 x nginx's 10,000 rps on 2 cores is 153.8 µs of machine time a request; everything
        // but certgate took (9.0 - 1.5) s / 100,000 = 75 µs of it.
        assert!(
            report.contains(
                "HTTP/1.1 at 1.30× nginx's rps (13,000 rps) on 2 cores, with the upstream, the \
                 load generator and everything else taking the 75.0 µs per request they took \
                 beside certgate and no core ever idle, leaves the proxy at most 78.8 µs of CPU \
                 per request; certgate used 15.0 µs, 8.0 of them in the kernel."
            ),
            "{report}"
        );
    }

    #[test]
    fn a_goal_beyond_what_the_others_leave_leaves_the_proxy_nothing() {
        // 1.3 x nginx's 200,000 rps on 2 cores is 7.7 µs of machine time a request, less than
        // the 75 µs everything but certgate took.
        let report = markdown(results(1_000_000).path()).unwrap();
        assert!(
            report.contains("(260,000 rps)") && report.contains("leaves the proxy no CPU at all;"),
            "{report}"
        );
    }

    #[test]
    fn results_without_cpu_figures_get_no_cpu_table() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "{}",
            json!({"target": "certgate", "round": 1, "phase": "h1", "count": 10, "errors": 0,
                   "seconds": 1.0, "rate": 10.0, "cpu_seconds": 0.5})
        )
        .unwrap();
        let report = markdown(file.path()).unwrap();
        assert!(
            report.contains("| HTTP/1.1 keep-alive rps (50 conns) | 10 |"),
            "{report}"
        );
        assert!(!report.contains("Where the CPU time went"), "{report}");
    }

    #[test]
    fn the_https_rows_are_there_when_the_phase_ran() {
        let without = markdown(results(50_000).path()).unwrap();
        assert!(!without.contains("HTTPS to the app"), "{without}");
        let report = markdown(
            results_with(
                50_000,
                &[
                    run("certgate", "https", 60_000, 1.5, 2.0),
                    run("nginx", "https", 40_000, 2.0, 2.5),
                ],
            )
            .path(),
        )
        .unwrap();
        assert!(
            report.contains(
                "| HTTPS to the app: h1 rps (50 conns) | 12,000 | 8,000 | — | 1.50× |  |"
            ),
            "{report}"
        );
        assert!(
            report.contains(
                "| HTTPS to the app: h1 requests per proxy-CPU-second | 40,000 | 20,000 | — | \
                 2.00× |  |"
            ),
            "{report}"
        );
        assert!(
            report.contains("| HTTPS to the app: h1 p99 ms | 2.00 | 2.50 | — | 0.80× |  |"),
            "{report}"
        );
    }

    #[test]
    fn the_balanced_rows_are_there_when_the_phase_ran() {
        let without = markdown(results(50_000).path()).unwrap();
        assert!(!without.contains("Two upstream endpoints"), "{without}");
        // certgate sat the phase out (a build without revisions), the peers ran it.
        let report = markdown(
            results_with(
                50_000,
                &[
                    run("nginx", "balanced", 40_000, 2.0, 2.5),
                    run("haproxy", "balanced", 45_000, 2.5, 2.0),
                ],
            )
            .path(),
        )
        .unwrap();
        assert!(
            report.contains(
                "| Two upstream endpoints: h1 rps (50 conns) | — | 8,000 | 9,000 | — |  |"
            ),
            "{report}"
        );
        assert!(
            report.contains(
                "| Two upstream endpoints: h1 requests per proxy-CPU-second | — | 20,000 | \
                 18,000 | — |  |"
            ),
            "{report}"
        );
        assert!(
            report.contains("| Two upstream endpoints: h1 p99 ms | — | 2.50 | 2.00 | — |  |"),
            "{report}"
        );
        let report = markdown(
            results_with(
                50_000,
                &[
                    run("certgate", "balanced", 60_000, 1.5, 1.5),
                    run("nginx", "balanced", 40_000, 2.0, 2.5),
                    run("haproxy", "balanced", 45_000, 2.5, 2.0),
                ],
            )
            .path(),
        )
        .unwrap();
        assert!(
            report.contains(
                "| Two upstream endpoints: h1 rps (50 conns) | 12,000 | 8,000 | 9,000 | 1.33× |  |"
            ),
            "{report}"
        );
        assert!(
            report
                .contains("| Two upstream endpoints: h1 p99 ms | 1.50 | 2.50 | 2.00 | 0.75× |  |"),
            "{report}"
        );
    }

    #[test]
    fn a_baseline_gets_a_second_table_negative_where_certgate_is_worse() {
        let report = markdown(results_with(50_000, &[baseline_h1()]).path()).unwrap();
        assert!(
            report.contains(
                "certgate against the baseline, another certgate build run with the same config \
                 in the same rounds (`--baseline`): medians, and certgate's change from the \
                 baseline, negative where certgate is worse (for p99 and RSS, where its figure is \
                 higher), flagged beyond 3%.\n\n| | certgate | baseline | change | |\n"
            ),
            "{report}"
        );
        // 20,000 rps against 22,000: 9.1% fewer.
        assert!(
            report.contains(
                "| HTTP/1.1 keep-alive rps (50 conns) | 20,000 | 22,000 | -9.1% | \
                 **worse by more than 3%** |"
            ),
            "{report}"
        );
        // 66,667 requests per CPU-second against 67,901: 1.8% fewer, within the tolerance.
        assert!(
            report.contains("| h1 requests per proxy-CPU-second | 66,667 | 67,901 | -1.8% |  |"),
            "{report}"
        );
        // Lower is better: a p99 of 1.00 ms against 1.25 is 20% better.
        assert!(
            report.contains("| h1 p99 ms | 1.00 | 1.25 | +20.0% |  |"),
            "{report}"
        );
        // The main table is the same; the phases nobody ran have no row in either table.
        assert!(
            report.contains("| HTTP/1.1 keep-alive rps (50 conns) | 20,000 | 10,000 | 8,000 |"),
            "{report}"
        );
        assert!(!report.contains("HTTP/2 rps"), "{report}");
    }

    #[test]
    fn a_phase_the_baseline_sat_out_has_no_change() {
        let report = markdown(
            results_with(
                50_000,
                &[
                    baseline_h1(),
                    run("certgate", "https", 60_000, 1.5, 2.0),
                    run("nginx", "https", 40_000, 2.0, 2.5),
                ],
            )
            .path(),
        )
        .unwrap();
        assert!(
            report.contains("| HTTPS to the app: h1 rps (50 conns) | 12,000 | — | — |  |"),
            "{report}"
        );
        assert!(
            report.contains("| HTTPS to the app: h1 p99 ms | 2.00 | — | — |  |"),
            "{report}"
        );
    }

    #[test]
    fn without_a_baseline_the_report_has_only_its_own_tables() {
        let without = markdown(results(50_000).path()).unwrap();
        let with = markdown(results_with(50_000, &[baseline_h1()]).path()).unwrap();
        assert!(!without.contains("baseline"), "{without}");
        // The baseline's table and the blank line after it are all that differs.
        let start = with.find("certgate against the baseline").unwrap();
        let end = start + with[start..].find("|\n\n").unwrap() + "|\n\n".len();
        assert_eq!(format!("{}{}", &with[..start], &with[end..]), without);
    }
}
