//! The rows of the main table: which figure of which phase, which way is better, and the goal.

use super::{Better, CERTGATE, Goal, Peer, Results, Row, one_decimal, thousands, two_decimals};

impl Row {
    /// A count of the phase's `field` (a rate), where higher is better.
    fn higher(label: impl Into<String>, phase: &'static str, field: &'static str) -> Self {
        Self {
            label: label.into(),
            phase,
            field,
            better: Better::Higher,
            format: thousands,
            goal: None,
        }
    }

    /// The phase's `field` (a latency or a size), where lower is better.
    fn lower(
        label: impl Into<String>,
        phase: &'static str,
        field: &'static str,
        format: fn(f64) -> String,
    ) -> Self {
        Self {
            better: Better::Lower,
            format,
            ..Self::higher(label, phase, field)
        }
    }

    /// certgate's figure divided by `peer`'s must reach `ratio`.
    fn goal(self, ratio: f64, peer: Peer) -> Self {
        Self {
            goal: Some(Goal { ratio, peer }),
            ..self
        }
    }
}

/// The rows, in table order.
pub(super) fn rows(results: &Results<'_>) -> Vec<Row> {
    let idle = results
        .median(CERTGATE, "idle", "asked")
        .map_or_else(|| "N".to_owned(), thousands);
    let (rate, per_cpu, p99) = ("rate", "per_cpu_second", "p99_ms");
    vec![
        Row::higher("HTTP/1.1 keep-alive rps (50 conns)", "h1", rate)
            .goal(1.3, Peer::Named("nginx")),
        Row::higher("HTTP/2 rps (10 conns x 5 streams)", "h2", rate)
            .goal(1.3, Peer::Named("haproxy")),
        Row::higher("h1 requests per proxy-CPU-second", "h1", per_cpu)
            .goal(1.3, Peer::Named("nginx")),
        Row::higher("h2 requests per proxy-CPU-second", "h2", per_cpu),
        Row::lower("h1 p99 ms", "h1", p99, two_decimals).goal(1.0, Peer::Best),
        Row::lower("h2 p99 ms", "h2", p99, two_decimals).goal(1.0, Peer::Best),
        Row::higher("HTTPS to the app: h1 rps (50 conns)", "https", rate),
        Row::higher(
            "HTTPS to the app: h1 requests per proxy-CPU-second",
            "https",
            per_cpu,
        ),
        Row::lower("HTTPS to the app: h1 p99 ms", "https", p99, two_decimals),
        Row::higher(
            "Two upstream endpoints: h1 rps (50 conns)",
            "balanced",
            rate,
        ),
        Row::higher(
            "Two upstream endpoints: h1 requests per proxy-CPU-second",
            "balanced",
            per_cpu,
        ),
        Row::lower(
            "Two upstream endpoints: h1 p99 ms",
            "balanced",
            p99,
            two_decimals,
        ),
        Row::higher("full handshakes/s (16 loops, no resumption)", "full", rate)
            .goal(1.5, Peer::Best),
        Row::higher("full handshakes per proxy-CPU-second", "full", per_cpu),
        Row::higher("resumed handshakes/s (16 loops)", "resumed", rate),
        Row::lower("RSS idle MiB", "idle", "rss_idle_mib", one_decimal),
        Row::lower(
            format!("RSS with {idle} idle mTLS connections MiB"),
            "idle",
            "rss_connections_mib",
            one_decimal,
        )
        .goal(1.0, Peer::Named("nginx")),
        Row::lower(
            "RSS after they all closed MiB",
            "idle",
            "rss_closed_mib",
            one_decimal,
        ),
    ]
}
