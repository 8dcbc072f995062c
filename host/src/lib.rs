//! weir's plugin host: WebAssembly components built against the `weir:plugin` WIT package
//! (`wit/`), run in wasmtime with a sandbox per plugin (memory cap, CPU deadline per call, no
//! files, sockets or environment), linked only with the capabilities the operator granted.

pub mod batch;
mod bindings;
pub mod capability;
mod control;
pub mod convert;
mod deadline;
pub mod exchange;
pub mod export;
pub mod fields;
mod http;
pub mod manifest;
mod objects;
pub mod oci;
pub mod ovs;
pub mod plugin;
pub mod policy;
mod probe;
mod records;
pub mod registry;
pub mod run;
pub mod runtime;
pub mod scope;
pub mod signing;
mod sink;
mod state;
pub mod summary;
pub mod tape;
mod timeline;
mod wasm_bytes;
pub mod workers;

pub use batch::FlowBatch;
pub use capability::Capability;
pub use manifest::{Kind, Limits, Manifest};
pub use plugin::{Plugin, PluginInfo, PluginState};
pub use runtime::{Runtime, SandboxPolicy};
pub use state::Services;

/// Locks a mutex, carrying on past poisoning (a panicked holder leaves plain data behind).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What can go wrong loading or running a plugin; every message names the plugin or the file.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("invalid manifest: {0}")]
    Manifest(String),
    #[error("incompatible plugin: {0}")]
    Incompatible(String),
    #[error("malformed plugin file: {0}")]
    Malformed(String),
    #[error("cannot load plugin: {0}")]
    Load(String),
    #[error("capability not granted: {0}")]
    Denied(String),
    #[error("plugin {plugin} exceeded its CPU deadline of {timeout_ms} ms")]
    Timeout { plugin: String, timeout_ms: u32 },
    #[error("plugin {plugin} exceeded its memory limit of {memory_mb} MiB")]
    Memory { plugin: String, memory_mb: u32 },
    #[error("plugin {plugin} trapped: {message}")]
    Trap { plugin: String, message: String },
    #[error("plugin {plugin} returned too much: {message}")]
    Output { plugin: String, message: String },
    #[error("plugin {plugin} reported an error: {message}")]
    Plugin {
        plugin: String,
        message: String,
        /// The plugin called its input invalid (the caller's fault, not a plugin failure).
        invalid_input: bool,
    },
    #[error("plugin {plugin} is disabled: {reason}")]
    Disabled { plugin: String, reason: String },
    #[error("plugin {plugin} is a {kind}, not a {wanted}")]
    WrongKind {
        plugin: String,
        kind: &'static str,
        wanted: &'static str,
    },
    #[error("plugin {plugin}: the call was cancelled (disabled, removed, or the agent stopping)")]
    Cancelled { plugin: String },
    #[error("plugin {plugin} is busy: {reason}")]
    Busy { plugin: String, reason: String },
    #[error(transparent)]
    Name(#[from] weir_core::plugins::InvalidName),
    #[error("signature check failed: {0}")]
    Signature(String),
    #[error("registry: {0}")]
    Oci(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

#[cfg(test)]
mod tests;
