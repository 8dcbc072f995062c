//! End-to-end tests of the `weir` binary: a real agent, real eBPF on real veths in network
//! namespaces the tests create and remove, real sled/tantivy files.
//!
//! These need root (CAP_BPF, CAP_NET_ADMIN), iproute2, iperf3, ping, curl and python3, as on
//! CI. A missing prerequisite fails the test with the reason; nothing is skipped quietly.

mod alerting;
mod api;
mod capture;
mod cluster;
mod contract;
mod correlation;
mod deep;
mod deploy;
mod distribution;
mod export;
mod guests;
mod incident;
mod logfiles;
mod metrics;
mod otlp;
mod ovs;
mod plugins;
mod policy;
mod sampling;
mod sandbox;
mod storage;
mod summaries;
mod timeline;
mod ui;
mod util;
mod visualizations;
