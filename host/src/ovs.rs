//! The OVS dump decoder port ([`weir_core::ovs::DumpDecoder`]) served by a decoder plugin in
//! the sandbox: the agent and `weir ovs` load the bundled `ovs-decoder` with its own limits
//! and only the `log` capability, so a hostile dump meets the same walls as any plugin input.

use crate::{Plugin, Runtime};
use weir_core::ovs::{DecodedFields, DumpDecoder, OvsError, Syntax};

/// A decoder plugin loaded for decoding dumps.
pub struct SandboxDecoder {
    plugin: Plugin,
}

impl SandboxDecoder {
    /// Loads `wasm` (a `decoder` world component) with `manifest` (its plugin.toml).
    pub fn load(rt: &Runtime, wasm: &[u8], manifest: &str) -> Result<SandboxDecoder, OvsError> {
        let plugin =
            Plugin::load_tool(rt, wasm, manifest, "ovs decoder").map_err(OvsError::Decoder)?;
        Ok(SandboxDecoder { plugin })
    }
}

impl DumpDecoder for SandboxDecoder {
    fn decode(
        &self,
        text: &str,
        syntax: Syntax,
        first_line: u64,
    ) -> Result<Vec<DecodedFields>, OvsError> {
        let ct = format!("{}; line={first_line}", syntax.content_type());
        let out = self.plugin.decode(text.as_bytes(), &ct).map_err(|e| {
            // The decoder is the agent's own tool: a dump that makes it fail is bad input,
            // not a reason to switch decoding off for every later dump.
            self.plugin.reset();
            OvsError::Decoder(e.to_string())
        })?;
        Ok(out.into_iter().map(|d| d.fields).collect())
    }
}
