//! The rows of the main table: which figure of which phase, which way is better, and the goal.

use super::{Better, CERTGATE, Goal, Peer, Results, Row, one_decimal, thousands, two_decimals};

/// The rows, in table order.
pub(super) fn rows(results: &Results<'_>) -> Vec<Row> {
    let idle = results
        .median(CERTGATE, "idle", "asked")
        .map_or_else(|| "N".to_owned(), thousands);
    let goal = |ratio, peer| Some(Goal { ratio, peer });
    vec![
        Row {
            label: "HTTP/1.1 keep-alive rps (50 conns)".into(),
            phase: "h1",
            field: "rate",
            better: Better::Higher,
            format: thousands,
            goal: goal(1.3, Peer::Named("nginx")),
        },
        Row {
            label: "HTTP/2 rps (10 conns x 5 streams)".into(),
            phase: "h2",
            field: "rate",
            better: Better::Higher,
            format: thousands,
            goal: goal(1.3, Peer::Named("haproxy")),
        },
        Row {
            label: "h1 requests per proxy-CPU-second".into(),
            phase: "h1",
            field: "per_cpu_second",
            better: Better::Higher,
            format: thousands,
            goal: goal(1.3, Peer::Named("nginx")),
        },
        Row {
            label: "h2 requests per proxy-CPU-second".into(),
            phase: "h2",
            field: "per_cpu_second",
            better: Better::Higher,
            format: thousands,
            goal: None,
        },
        Row {
            label: "h1 p99 ms".into(),
            phase: "h1",
            field: "p99_ms",
            better: Better::Lower,
            format: two_decimals,
            goal: goal(1.0, Peer::Best),
        },
        Row {
            label: "h2 p99 ms".into(),
            phase: "h2",
            field: "p99_ms",
            better: Better::Lower,
            format: two_decimals,
            goal: goal(1.0, Peer::Best),
        },
        Row {
            label: "HTTPS to the app: h1 rps (50 conns)".into(),
            phase: "https",
            field: "rate",
            better: Better::Higher,
            format: thousands,
            goal: None,
        },
        Row {
            label: "HTTPS to the app: h1 requests per proxy-CPU-second".into(),
            phase: "https",
            field: "per_cpu_second",
            better: Better::Higher,
            format: thousands,
            goal: None,
        },
        Row {
            label: "HTTPS to the app: h1 p99 ms".into(),
            phase: "https",
            field: "p99_ms",
            better: Better::Lower,
            format: two_decimals,
            goal: None,
        },
        Row {
            label: "Two upstream endpoints: h1 rps (50 conns)".into(),
            phase: "balanced",
            field: "rate",
            better: Better::Higher,
            format: thousands,
            goal: None,
        },
        Row {
            label: "Two upstream endpoints: h1 requests per proxy-CPU-second".into(),
            phase: "balanced",
            field: "per_cpu_second",
            better: Better::Higher,
            format: thousands,
            goal: None,
        },
        Row {
            label: "Two upstream endpoints: h1 p99 ms".into(),
            phase: "balanced",
            field: "p99_ms",
            better: Better::Lower,
            format: two_decimals,
            goal: None,
        },
        Row {
            label: "full handshakes/s (16 loops, no resumption)".into(),
            phase: "full",
            field: "rate",
            better: Better::Higher,
            format: thousands,
            goal: goal(1.5, Peer::Best),
        },
        Row {
            label: "full handshakes per proxy-CPU-second".into(),
            phase: "full",
            field: "per_cpu_second",
            better: Better::Higher,
            format: thousands,
            goal: None,
        },
        Row {
            label: "resumed handshakes/s (16 loops)".into(),
            phase: "resumed",
            field: "rate",
            better: Better::Higher,
            format: thousands,
            goal: None,
        },
        Row {
            label: "RSS idle MiB".into(),
            phase: "idle",
            field: "rss_idle_mib",
            better: Better::Lower,
            format: one_decimal,
            goal: None,
        },
        Row {
            label: format!("RSS with {idle} idle mTLS connections MiB"),
            phase: "idle",
            field: "rss_connections_mib",
            better: Better::Lower,
            format: one_decimal,
            goal: goal(1.0, Peer::Named("nginx")),
        },
        Row {
            label: "RSS after they all closed MiB".into(),
            phase: "idle",
            field: "rss_closed_mib",
            better: Better::Lower,
            format: one_decimal,
            goal: None,
        },
    ]
}
