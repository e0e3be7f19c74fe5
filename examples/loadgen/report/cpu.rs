//! Where the machine's CPU time went in the request phases, per request, and what that leaves a
//! proxy for each rps goal.

use std::fmt::Write as _;

use serde_json::Value;

use super::{
    CERTGATE, Goal, PEERS, PROTOCOLS, Peer, Results, Row, display, median, one_decimal, thousands,
};

/// A share of a run's CPU time, in seconds, from its JSON line.
type Share = fn(&Value) -> Option<f64>;

/// The columns of the CPU table.
const CPU_COLUMNS: [(&str, Share); 6] = [
    ("proxy, user", |run| run["cpu_user_seconds"].as_f64()),
    ("proxy, kernel", |run| run["cpu_system_seconds"].as_f64()),
    ("upstream", |run| run["upstream_cpu_seconds"].as_f64()),
    ("load generator", |run| run["loadgen_cpu_seconds"].as_f64()),
    ("everything else", |run| {
        let known = ["cpu_seconds", "upstream_cpu_seconds", "loadgen_cpu_seconds"]
            .iter()
            .map(|field| run[*field].as_f64())
            .sum::<Option<f64>>()?;
        Some((run["machine_busy_seconds"].as_f64()? - known).max(0.0))
    }),
    ("idle", |run| {
        Some(run["machine_cpu_seconds"].as_f64()? - run["machine_busy_seconds"].as_f64()?)
    }),
];

impl Results<'_> {
    /// The median over the rounds of `share` of a run's CPU time divided by its requests, in
    /// microseconds.
    pub(super) fn per_request(
        &self,
        target: &str,
        phase: &str,
        share: impl Fn(&Value) -> Option<f64>,
    ) -> Option<f64> {
        let runs = self.runs.get(&(target.to_owned(), phase.to_owned()))?;
        median(
            runs.iter()
                .filter_map(|run| {
                    let count = run["count"].as_f64().filter(|count| *count > 0.0)?;
                    Some(share(run)? / count * 1e6)
                })
                .collect(),
        )
    }

    /// Where the machine's CPU time went in the request phases, per request, and what that
    /// leaves a proxy for each rps goal: on a machine the load generator and the upstream share,
    /// their CPU time per request bounds the rate any proxy can reach.
    pub(super) fn cpu_per_request(&self, rows: &[Row]) -> String {
        let targets = [(CERTGATE, "certgate")].into_iter().chain(PEERS);
        let mut table = String::new();
        for (phase, protocol) in PROTOCOLS {
            for (name, shown) in targets.clone() {
                let cells: Option<Vec<String>> = CPU_COLUMNS
                    .iter()
                    .map(|(_, share)| self.per_request(name, phase, share).map(one_decimal))
                    .collect();
                if let Some(cells) = cells {
                    let _ = writeln!(table, "| {protocol}, {shown} | {} |", cells.join(" | "));
                }
            }
        }
        if table.is_empty() {
            // Results from a load generator that did not read the machine's CPU time.
            return String::new();
        }
        let cores = self.median("machine", "start", "cores").unwrap_or(1.0);
        let mut out = format!(
            "\nWhere the CPU time went in the request phases, in microseconds per request \
             (medians over the rounds; {cores:.0} cores):\n\n| | {} |\n|---|{}\n{table}",
            CPU_COLUMNS.map(|(label, _)| label).join(" | "),
            "--:|".repeat(CPU_COLUMNS.len()),
        );
        for row in rows.iter().filter(|row| row.field == "rate") {
            let (
                Some(Goal {
                    ratio,
                    peer: Peer::Named(peer),
                }),
                Some((_, protocol)),
            ) = (
                row.goal,
                PROTOCOLS.iter().find(|(phase, _)| *phase == row.phase),
            )
            else {
                continue;
            };
            let figures = (
                self.median(peer, row.phase, "rate"),
                self.per_request(CERTGATE, row.phase, |run| {
                    Some(run["machine_busy_seconds"].as_f64()? - run["cpu_seconds"].as_f64()?)
                }),
                self.per_request(CERTGATE, row.phase, |run| run["cpu_seconds"].as_f64()),
                self.per_request(CERTGATE, row.phase, |run| {
                    run["cpu_system_seconds"].as_f64()
                }),
            );
            let (Some(rate), Some(others), Some(used), Some(kernel)) = figures else {
                continue;
            };
            let goal = ratio * rate;
            let budget = cores * 1e6 / goal - others;
            let left = if budget > 0.0 {
                format!("at most {budget:.1} µs of CPU per request")
            } else {
                "no CPU at all".to_owned()
            };
            let _ = writeln!(
                out,
                "\n{protocol} at {ratio:.2}× {}'s rps ({} rps) on {cores:.0} cores, with the \
                 upstream, the load generator and everything else taking the {others:.1} µs per \
                 request they took beside certgate and no core ever idle, leaves the proxy \
                 {left}; certgate used {used:.1} µs, {kernel:.1} of them in the kernel.",
                display(peer),
                thousands(goal),
            );
        }
        out
    }
}
