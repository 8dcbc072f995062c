//! weir's kernel side (C programs in `src/bpf/`, built by build.rs) and the aya loader.
//!
//! One [`instance`] of the programs and maps is loaded per network namespace watched: the
//! agent's own, plus each `--netns`. Each instance attaches to every non-loopback interface of
//! its namespace, follows interfaces that come and go (netlink), drains its flow maps every
//! active timeout, and reads the ring buffer that takes flows when the map is full.

pub mod btf;
pub mod cgroup;
pub mod dedup;
pub mod dns;
mod instance;
mod netlink;
pub mod probe;
pub mod records;

pub use instance::{Capture, CaptureConfig, CaptureError, maps_charged_to_memlock};
