//! Plugins shipped inside the binary (built from `plugins/`, embedded by build.rs):
//! `weir plugin install bundled:NAME`.

use weir_host::registry::Bundled;

pub const BUNDLED: &[Bundled] = &include!(concat!(env!("OUT_DIR"), "/bundled.rs"));
