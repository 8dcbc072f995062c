//! Open vSwitch datapath flows: what the agent collects from the local switch, how dumps are
//! decoded, kept, drawn and joined to the conversations the capture saw.
//!
//! - [`OvsSource`] is the port an adapter implements (the `weir-ovs` crate runs
//!   `ovs-appctl`/`ovs-ofctl`); it returns a [`Collection`]: the raw dump texts of one moment.
//! - [`DumpDecoder`] is the port for the decoder (the bundled `ovs-decoder` plugin run in the
//!   sandbox by weir-host); [`decode_dump`] feeds it a dump in chunks of lines and gathers
//!   [`DpFlow`]s, [`OfFlow`]s and per-line [`LineError`]s.
//! - [`CollectionStore`] keeps collections on disk (one compressed file each) and drops the
//!   oldest past a count or an age.
//! - [`views`]: the datapath tree (in_port, then recirculation), the recirculation graph, the
//!   OpenFlow tables, churn between collections.
//! - [`join`]: which stored conversations a datapath flow covered, and which datapath flows
//!   carried a conversation.
//! - [`groups`]: OpenFlow groups and meters, and the rules that use them.
//! - [`trace`]: which OpenFlow rules made a datapath flow (the switch's `ofproto/trace` of it),
//!   and which datapath flows a rule produced.

pub mod groups;
pub mod join;
mod model;
mod service;
mod store;
pub mod trace;
pub mod views;

pub use model::*;
pub use service::{DecodedCollection, OvsService, OvsStatus, decode_collection};
pub use store::{CollectionInfo, CollectionStore};

/// What can go wrong with OVS collection, decoding and storage.
#[derive(Debug, thiserror::Error)]
pub enum OvsError {
    /// The switch could not be reached or a command failed (the message names the command).
    #[error("{0}")]
    Unavailable(String),
    /// The decoder failed or answered something unusable.
    #[error("decoder: {0}")]
    Decoder(String),
    /// Input the caller gave is wrong (the message names the place).
    #[error("{0}")]
    Invalid(String),
    /// No such collection.
    #[error("no OVS collection {0}")]
    NotFound(String),
    #[error("OVS collections: {0}")]
    Io(#[from] std::io::Error),
    #[error("OVS collections: corrupt file: {0}")]
    Corrupt(String),
}

/// Gets one collection from a running switch.
pub trait OvsSource: Send + Sync {
    /// Runs the dump commands now. A switch that is not running is [`OvsError::Unavailable`].
    fn collect(&self) -> Result<Collection, OvsError>;
}

/// The syntax of a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Syntax {
    /// `ovs-appctl dpctl/dump-flows -m` (ODP).
    Dpctl,
    /// `ovs-ofctl dump-flows`.
    Ofctl,
}

impl Syntax {
    pub fn content_type(self) -> &'static str {
        match self {
            Syntax::Dpctl => "ovs/dpctl",
            Syntax::Ofctl => "ovs/ofctl",
        }
    }

    /// Tells a dump's syntax by its first flow line (`actions=` is OpenFlow).
    pub fn detect(text: &str) -> Syntax {
        for line in text.lines().map(str::trim) {
            if line.contains(" actions=") || line.starts_with("actions=") {
                return Syntax::Ofctl;
            }
            if line.contains("actions:") {
                return Syntax::Dpctl;
            }
        }
        Syntax::Dpctl
    }
}

/// One record as the decoder returns it: its fields by name.
pub type DecodedFields = Vec<(String, String)>;

/// Runs the decoder on some lines of a dump.
pub trait DumpDecoder: Send + Sync {
    /// Decodes `text` (whole lines) in `syntax`; its first line is line `first_line` of the
    /// dump.
    fn decode(
        &self,
        text: &str,
        syntax: Syntax,
        first_line: u64,
    ) -> Result<Vec<DecodedFields>, OvsError>;
}

/// Lines handed to the decoder in one call, and bytes (whichever comes first): keeps each
/// answer well under the sandbox's output limit.
pub const CHUNK_LINES: usize = 2000;
pub const CHUNK_BYTES: usize = 2 << 20;

/// Decodes a whole dump through `decoder`, in chunks of at most [`CHUNK_LINES`] lines and
/// [`CHUNK_BYTES`], up to [`PARALLEL`] chunks at once (each call has a sandbox instance of its
/// own). `progress` is told the lines done and the total after each round of chunks.
pub fn decode_dump(
    decoder: &dyn DumpDecoder,
    text: &str,
    syntax: Syntax,
    datapath: &str,
    mut progress: impl FnMut(usize, usize),
) -> Result<Decoded, OvsError> {
    let lines: Vec<&str> = text.lines().collect();
    let mut chunks = Vec::new();
    let mut done = 0;
    while done < lines.len() {
        let mut end = done;
        let mut bytes = 0;
        while end < lines.len()
            && end - done < CHUNK_LINES
            && (end == done || bytes + lines[end].len() < CHUNK_BYTES)
        {
            bytes += lines[end].len() + 1;
            end += 1;
        }
        chunks.push((done, end));
        done = end;
    }
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, PARALLEL);
    // Each chunk is decoded and turned into flows on its own thread; merged in line order.
    let one = |(a, b): (usize, usize)| -> Result<Decoded, OvsError> {
        let mut d = Decoded::default();
        for fields in decoder.decode(&lines[a..b].join("\n"), syntax, a as u64 + 1)? {
            d.add(fields, &lines, datapath);
        }
        Ok(d)
    };
    let mut out = Decoded::default();
    for round in chunks.chunks(workers) {
        let results: Vec<Result<Decoded, OvsError>> = if round.len() == 1 {
            vec![one(round[0])]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = round.iter().map(|&c| s.spawn(move || one(c))).collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(OvsError::Decoder("a decoding thread panicked".into()))
                        })
                    })
                    .collect()
            })
        };
        for r in results {
            let d = r?;
            out.flows.extend(d.flows);
            out.openflow.extend(d.openflow);
            out.errors.extend(d.errors);
        }
        progress(round.last().map(|c| c.1).unwrap_or(0), lines.len());
    }
    Ok(out)
}

/// Most chunks decoded at once.
pub const PARALLEL: usize = 4;

#[cfg(test)]
mod tests;
