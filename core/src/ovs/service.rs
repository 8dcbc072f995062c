//! The agent's OVS service: collections kept in a [`CollectionStore`], decoded on demand
//! through the [`DumpDecoder`] (the last few kept decoded), a collector thread for a live
//! switch, and the status line `weir status` shows.

use super::{
    Collection, CollectionStore, DatapathDump, Decoded, DumpDecoder, OvsError, OvsSource, Syntax,
    decode_dump,
};
use crate::records::{Entry, RecordStore};
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A decoded collection, as the views use it.
#[derive(Debug, Clone, Serialize)]
pub struct DecodedCollection {
    pub id: String,
    pub time_ms: u64,
    pub origin: String,
    #[serde(flatten)]
    pub decoded: Decoded,
    pub ports: Vec<super::Port>,
    pub conntrack: Vec<super::ConntrackCount>,
    pub problems: Vec<String>,
    /// Datapath flows whose OpenFlow rules were traced (the busiest ones of a live collection).
    pub traced: usize,
    /// OpenFlow groups and meters of every bridge.
    pub groups: Vec<super::groups::Group>,
    pub meters: Vec<super::groups::Meter>,
}

/// Decodes every dump of a collection.
pub fn decode_collection(
    decoder: &dyn DumpDecoder,
    id: &str,
    c: &Collection,
) -> Result<DecodedCollection, OvsError> {
    let mut all = Decoded::default();
    for dp in &c.datapaths {
        let d = decode_dump(decoder, &dp.text, Syntax::Dpctl, &dp.name, |_, _| {})?;
        all.flows.extend(d.flows);
        all.errors.extend(d.errors);
    }
    let (mut groups, mut meters) = (Vec::new(), Vec::new());
    for b in &c.bridges {
        let d = decode_dump(decoder, &b.flows, Syntax::Ofctl, &b.name, |_, _| {})?;
        all.openflow.extend(d.openflow);
        all.errors.extend(d.errors);
        let (g, e) = super::groups::parse_groups(&b.name, &b.groups);
        groups.extend(g);
        all.errors.extend(e);
        let (m, e) = super::groups::parse_meters(&b.name, &b.meters);
        meters.extend(m);
        all.errors.extend(e);
    }
    super::groups::link(&mut groups, &mut meters, &all.openflow);
    all.set_time(c.time_ms);
    let traced = super::trace::link(&mut all.flows, &mut all.openflow, &c.traces);
    Ok(DecodedCollection {
        id: id.to_string(),
        time_ms: c.time_ms,
        origin: c.origin.clone(),
        decoded: all,
        ports: c.ports.clone(),
        conntrack: c.conntrack.clone(),
        problems: c.problems.clone(),
        traced,
        groups,
        meters,
    })
}

/// How live collection is going.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OvsStatus {
    /// Seconds between collections (0: live collection off).
    pub every_s: u64,
    /// `ok`, `unavailable` (the switch is not running or not reachable), or `off`.
    pub state: String,
    /// What the last failing collection said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_ok_ms: Option<u64>,
    pub collections: usize,
}

/// Decoded collections kept in memory.
const CACHE: usize = 12;

pub struct OvsService {
    pub store: CollectionStore,
    decoder: Arc<dyn DumpDecoder>,
    cache: Mutex<Vec<Arc<DecodedCollection>>>,
    status: Mutex<OvsStatus>,
    records: Option<Arc<RecordStore>>,
}

impl OvsService {
    pub fn new(
        store: CollectionStore,
        decoder: Arc<dyn DumpDecoder>,
        records: Option<Arc<RecordStore>>,
    ) -> OvsService {
        OvsService {
            store,
            decoder,
            cache: Mutex::new(Vec::new()),
            status: Mutex::new(OvsStatus {
                state: "off".into(),
                ..Default::default()
            }),
            records,
        }
    }

    pub fn decoder(&self) -> &dyn DumpDecoder {
        &*self.decoder
    }

    /// A collection decoded (from the cache when it was decoded lately).
    pub fn decoded(&self, id: &str) -> Result<Arc<DecodedCollection>, OvsError> {
        if let Some(d) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|d| d.id == id)
        {
            return Ok(d.clone());
        }
        let c = self.store.get(id)?;
        let d = Arc::new(decode_collection(&*self.decoder, id, &c)?);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|x| x.id != id);
        cache.push(d.clone());
        if cache.len() > CACHE {
            cache.remove(0);
        }
        Ok(d)
    }

    /// Keeps a collection and writes an `ovs-collection` record for the timeline; returns
    /// its id and what decoding it gave.
    pub fn keep(&self, c: &Collection) -> Result<Arc<DecodedCollection>, OvsError> {
        let id = self.store.put(c)?;
        let d = self.decoded(&id)?;
        if let Some(r) = &self.records {
            let entry = Entry {
                time_ms: c.time_ms,
                end_ms: None,
                kind: "ovs-collection".into(),
                text: format!(
                    "{} datapath flows, {} OpenFlow flows, {} lines not decoded ({})",
                    d.decoded.flows.len(),
                    d.decoded.openflow.len(),
                    d.decoded.errors.len(),
                    c.origin
                ),
                labels: vec![
                    ("id".into(), id.clone()),
                    ("origin".into(), c.origin.clone()),
                    ("dp_flows".into(), d.decoded.flows.len().to_string()),
                ],
                flow_filter: None,
            };
            if let Err(e) = r.write("agent", vec![entry]) {
                tracing::warn!(error = %e, "OVS collection record not written");
            }
        }
        Ok(d)
    }

    /// Stores a dump taken elsewhere. Refused (and not kept) when no line of it decodes.
    pub fn import(
        &self,
        text: &str,
        syntax: Option<Syntax>,
        name: &str,
        time_ms: u64,
    ) -> Result<Arc<DecodedCollection>, OvsError> {
        let syntax = syntax.unwrap_or_else(|| Syntax::detect(text));
        let probe = decode_dump(&*self.decoder, text, syntax, name, |_, _| {})?;
        if probe.flows.is_empty() && probe.openflow.is_empty() {
            return Err(OvsError::Invalid(match probe.errors.first() {
                Some(e) => format!(
                    "no flow in the dump decodes: line {} column {}: {}",
                    e.line, e.column, e.message
                ),
                None => "the dump holds no flows".into(),
            }));
        }
        let mut c = Collection {
            time_ms,
            origin: "import".into(),
            ..Default::default()
        };
        match syntax {
            Syntax::Dpctl => c.datapaths.push(DatapathDump {
                name: name.into(),
                text: text.into(),
            }),
            Syntax::Ofctl => c.bridges.push(super::BridgeDump {
                name: name.into(),
                flows: text.into(),
                ..Default::default()
            }),
        }
        self.keep(&c)
    }

    pub fn status(&self) -> OvsStatus {
        let mut s = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        s.collections = self.store.list().map(|l| l.len()).unwrap_or(0);
        s
    }

    /// One live collection; the status says how it went (a change is logged once, not on
    /// every failing round).
    pub fn collect_once(&self, src: &dyn OvsSource) -> Result<String, OvsError> {
        let r = src
            .collect()
            .and_then(|c| self.keep(&c).map(|d| d.id.clone()));
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        match &r {
            Ok(_) => {
                if st.state != "ok" {
                    tracing::info!("OVS collection works");
                }
                st.state = "ok".into();
                st.error = None;
                st.last_ok_ms = Some(crate::query::now_ms());
            }
            Err(e) => {
                let msg = e.to_string();
                if st.error.as_deref() != Some(msg.as_str()) {
                    tracing::warn!(error = %msg, "OVS collection failed; retrying every round");
                }
                st.state = "unavailable".into();
                st.error = Some(msg);
            }
        }
        r
    }

    /// Collects every `every` on a thread of its own, keeping at most `keep` collections and
    /// none older than `max_age_ms` (0: any age).
    pub fn spawn_collector(
        self: Arc<Self>,
        src: Box<dyn OvsSource>,
        every: Duration,
        keep: usize,
        max_age_ms: u64,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .every_s = every.as_secs().max(1);
        std::thread::Builder::new()
            .name("weir-ovs".into())
            .spawn(move || {
                loop {
                    let _ = self.collect_once(&*src);
                    // An age of 0 keeps collections whatever their age.
                    let before = match max_age_ms {
                        0 => 0,
                        age => crate::query::now_ms().saturating_sub(age),
                    };
                    if let Err(e) = self.store.retain(before, keep) {
                        tracing::warn!(error = %e, "OVS collection retention failed");
                    }
                    std::thread::sleep(every);
                }
            })
    }
}
