//! The wasmtime engine shared by every plugin: component model on, epoch interruption for
//! CPU deadlines (a ticker thread advances the epoch every [`TICK_MS`]), and a compiled-code
//! cache on disk keyed by the plugin's sha256 and the engine's compatibility hash.

use crate::HostError;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::time::Duration;
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

/// Epoch tick: CPU deadlines are whole ticks.
pub const TICK_MS: u64 = 10;

/// Wasm stack limit per call (deep recursion traps instead of crashing the agent).
pub const MAX_WASM_STACK: usize = 512 * 1024;

pub struct Runtime {
    engine: Engine,
    cache_dir: Option<PathBuf>,
}

impl Runtime {
    /// Builds the engine and starts the epoch ticker. `cache_dir` keeps compiled components.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Runtime, HostError> {
        let mut cfg = Config::new();
        cfg.wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(MAX_WASM_STACK)
            .parallel_compilation(false);
        let engine =
            Engine::new(&cfg).map_err(|e| HostError::Load(format!("wasmtime engine: {e}")))?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("weir-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(Duration::from_millis(TICK_MS));
                }
            })?;
        if let Some(d) = &cache_dir {
            std::fs::create_dir_all(d)?;
        }
        Ok(Runtime { engine, cache_dir })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn cache_path(&self, sha256: &str) -> Option<PathBuf> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let dir = self.cache_dir.as_ref()?;
        Some(dir.join(format!("{sha256}-{:016x}.cwasm", h.finish())))
    }

    /// Compiles a component, or loads it from the cache when this engine compiled it before.
    pub fn compile(&self, wasm: &[u8], sha256: &str) -> Result<Component, HostError> {
        let path = self.cache_path(sha256);
        if let Some(p) = &path
            && p.exists()
        {
            // SAFETY: the cache holds only files this host wrote from components it compiled,
            // keyed by the source's sha256 and the engine's compatibility hash.
            match unsafe { Component::deserialize_file(&self.engine, p) } {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::warn!(path = %p.display(), error = %e, "dropping unusable compiled plugin");
                    let _ = std::fs::remove_file(p);
                }
            }
        }
        let component = Component::from_binary(&self.engine, wasm)
            .map_err(|e| HostError::Malformed(format!("{e:#}")))?;
        if let Some(p) = &path {
            match component.serialize() {
                Ok(bytes) => {
                    let tmp = p.with_extension("tmp");
                    if std::fs::write(&tmp, bytes)
                        .and_then(|_| std::fs::rename(&tmp, p))
                        .is_err()
                    {
                        tracing::warn!(path = %p.display(), "cannot write the compiled-plugin cache");
                    } else {
                        // Run it from the file just written: its code is then a file mapping
                        // the kernel can reclaim, not anonymous memory held for the agent's
                        // life (a fresh agent compiling its bundled plugins kept ~26 MiB).
                        // SAFETY: as above, a file this host just wrote from this component.
                        if let Ok(mapped) = unsafe { Component::deserialize_file(&self.engine, p) }
                        {
                            return Ok(mapped);
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot serialize a compiled plugin"),
            }
        }
        Ok(component)
    }
}
