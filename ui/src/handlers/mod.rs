//! Request handlers, one module per area.

pub mod flows;
pub mod meta;
pub mod plugins;
