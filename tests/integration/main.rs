//! certgate's integration tests, one module per concern, in one test binary: the shared
//! helpers (`common`, and `process` for the real binary) compile once and the suite links once.
//! Each module opens with the list of cases it covers. Tests run concurrently in this one
//! process, so nothing here changes process-wide state (environment, working directory,
//! signals) that another test could see, but for the open-file limit `memory_after_burst`
//! raises to the hard limit, which only helps the others; memory is measured on a `certgate`
//! child process, never on this one.

mod common;
mod process;

mod aborts;
mod authority;
mod authorization;
mod authorization_log;
mod balance;
mod balancing;
mod bench;
mod check_findings;
mod config;
mod conformance;
mod cors;
mod cors_browser;
mod curl;
mod custom_domains;
mod demo;
mod dns_discovery;
mod doc_links;
mod drain;
mod drain_delay;
mod examples;
mod exclusion_paths;
mod explain;
mod flood;
mod formats;
mod forwarding;
mod haproxy;
mod hardening_config;
mod ingress_config;
mod header_limits;
mod health_checks;
mod ip_restrictions;
mod kubernetes;
mod limits;
mod listen_http;
mod memory;
mod memory_after_burst;
mod messages;
mod metrics;
mod modes;
mod module_graph;
mod parking;
mod path_override;
mod pkcs12;
mod pki;
mod policy_config;
mod proxy_protocol;
mod rate_limit;
mod reading_order;
mod readme;
mod readme_policy;
mod reject_with;
mod reload;
mod reload_connections;
mod replica_config;
mod replicas;
mod request_path;
mod resumption;
mod resumption_policy;
mod revocation;
mod revocation_age;
mod revocation_open_connections;
mod revocation_paths;
mod routing;
mod stalls;
mod sticky_sessions;
mod trailers;
mod untrusted;
mod upstream_connections;
mod upstream_states;
mod upstream_logs;
mod upstream_tls;
mod xfcc;
