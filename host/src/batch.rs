//! The `batch` interface: a batch of flows held by the host as columns, handed to plugins as
//! a `flow-batch` resource. Built once per stored batch and shared (behind an `Arc`) by every
//! plugin that receives it; a plugin pulls only the columns it reads.

use crate::bindings::imports::weir::plugin::batch::{Host, HostFlowBatch};
use crate::bindings::types as wit;
use crate::convert::{ip_to_wit, mac_to_u64};
use crate::state::HostState;
use std::collections::HashMap;
use std::sync::Arc;
use wasmtime::component::Resource;
use weir_core::Flow;

/// A batch of flows as columns (one entry per flow in each), names interned.
#[derive(Debug, Default)]
pub struct Columns {
    pub time_flow_start_ms: Vec<u64>,
    pub time_flow_end_ms: Vec<u64>,
    pub time_received: Vec<u64>,
    pub etype: Vec<u16>,
    pub src_mac: Vec<u64>,
    pub dst_mac: Vec<u64>,
    pub src_addr: Vec<wit::IpAddr>,
    pub dst_addr: Vec<wit::IpAddr>,
    pub src_port: Vec<u16>,
    pub dst_port: Vec<u16>,
    pub proto: Vec<u8>,
    pub icmp_type: Vec<u8>,
    pub icmp_code: Vec<u8>,
    pub bytes: Vec<u64>,
    pub packets: Vec<u64>,
    pub skbs: Vec<u64>,
    pub flags: Vec<u16>,
    pub if_direction: Vec<u8>,
    pub sampling: Vec<u32>,
    pub interface: Vec<u32>,
    pub netns: Vec<u32>,
    pub names: Vec<String>,
    /// The records themselves, for any other field by name (`flow-fields`).
    pub flows: Arc<Vec<Flow>>,
}

/// A batch ready to give to plugins: build it once per batch with [`FlowBatch::shared`].
#[derive(Debug, Clone, Default)]
pub struct FlowBatch(Arc<Columns>);

impl FlowBatch {
    /// A batch of copies of `flows`.
    pub fn new(flows: &[Flow]) -> FlowBatch {
        FlowBatch::shared(Arc::new(flows.to_vec()))
    }

    /// A batch over flows the caller already shares (no copy of the records).
    pub fn shared(records: Arc<Vec<Flow>>) -> FlowBatch {
        let flows: &[Flow] = &records;
        let n = flows.len();
        let mut c = Columns {
            time_flow_start_ms: Vec::with_capacity(n),
            time_flow_end_ms: Vec::with_capacity(n),
            time_received: Vec::with_capacity(n),
            etype: Vec::with_capacity(n),
            src_mac: Vec::with_capacity(n),
            dst_mac: Vec::with_capacity(n),
            src_addr: Vec::with_capacity(n),
            dst_addr: Vec::with_capacity(n),
            src_port: Vec::with_capacity(n),
            dst_port: Vec::with_capacity(n),
            proto: Vec::with_capacity(n),
            icmp_type: Vec::with_capacity(n),
            icmp_code: Vec::with_capacity(n),
            bytes: Vec::with_capacity(n),
            packets: Vec::with_capacity(n),
            skbs: Vec::with_capacity(n),
            flags: Vec::with_capacity(n),
            if_direction: Vec::with_capacity(n),
            sampling: Vec::with_capacity(n),
            interface: Vec::with_capacity(n),
            netns: Vec::with_capacity(n),
            names: Vec::new(),
            flows: records.clone(),
        };
        let mut ids: HashMap<&str, u32> = HashMap::new();
        fn intern<'a>(ids: &mut HashMap<&'a str, u32>, names: &mut Vec<String>, s: &'a str) -> u32 {
            *ids.entry(s).or_insert_with(|| {
                names.push(s.to_string());
                names.len() as u32 - 1
            })
        }
        // Flows of a batch mostly repeat the previous interface and namespace: compare with
        // the last one before hashing.
        let (mut last_if, mut last_ns): ((&str, u32), (&str, u32)) = (("\0", 0), ("\0", 0));
        for f in flows {
            c.time_flow_start_ms.push(f.time_flow_start_ms);
            c.time_flow_end_ms.push(f.time_flow_end_ms);
            c.time_received.push(f.time_received);
            c.etype.push(f.etype);
            c.src_mac.push(mac_to_u64(&f.src_mac));
            c.dst_mac.push(mac_to_u64(&f.dst_mac));
            c.src_addr.push(ip_to_wit(&f.src_addr));
            c.dst_addr.push(ip_to_wit(&f.dst_addr));
            c.src_port.push(f.src_port);
            c.dst_port.push(f.dst_port);
            c.proto.push(f.proto);
            c.icmp_type.push(f.icmp_type);
            c.icmp_code.push(f.icmp_code);
            c.bytes.push(f.bytes);
            c.packets.push(f.packets);
            c.skbs.push(f.skbs);
            c.flags.push(f.flags);
            c.if_direction.push(f.if_direction);
            c.sampling.push(f.sampling);
            if last_if.0 != f.interface {
                last_if = (&f.interface, intern(&mut ids, &mut c.names, &f.interface));
            }
            c.interface.push(last_if.1);
            if last_ns.0 != f.netns {
                last_ns = (&f.netns, intern(&mut ids, &mut c.names, &f.netns));
            }
            c.netns.push(last_ns.1);
        }
        FlowBatch(Arc::new(c))
    }

    pub fn len(&self) -> usize {
        self.0.proto.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn columns(&self) -> &Columns {
        &self.0
    }

    fn name(&self, i: u32) -> String {
        self.0.names.get(i as usize).cloned().unwrap_or_default()
    }

    /// Flow `i` as a WIT record.
    fn row(&self, i: usize) -> wit::Flow {
        let c = &*self.0;
        wit::Flow {
            time_flow_start_ms: c.time_flow_start_ms[i],
            time_flow_end_ms: c.time_flow_end_ms[i],
            time_received: c.time_received[i],
            etype: c.etype[i],
            src_mac: c.src_mac[i],
            dst_mac: c.dst_mac[i],
            src_addr: c.src_addr[i],
            dst_addr: c.dst_addr[i],
            src_port: c.src_port[i],
            dst_port: c.dst_port[i],
            proto: c.proto[i],
            icmp_type: c.icmp_type[i],
            icmp_code: c.icmp_code[i],
            bytes: c.bytes[i],
            packets: c.packets[i],
            skbs: c.skbs[i],
            flags: c.flags[i],
            interface: self.name(c.interface[i]),
            if_direction: c.if_direction[i],
            sampling: c.sampling[i],
            netns: self.name(c.netns[i]),
        }
    }
}

/// An empty batch, for a handle that is not in the table (cannot happen for the borrow the
/// host passed in; the guest cannot forge one that resolves to another type).
static EMPTY: std::sync::LazyLock<FlowBatch> = std::sync::LazyLock::new(FlowBatch::default);

impl HostState {
    pub(crate) fn batch(&self, r: &Resource<FlowBatch>) -> &FlowBatch {
        self.table.get(r).unwrap_or(&EMPTY)
    }
}

impl Host for HostState {}

macro_rules! columns {
    ($($name:ident: $t:ty),* $(,)?) => {
        $(fn $name(&mut self, r: Resource<FlowBatch>) -> Vec<$t> {
            self.batch(&r).0.$name.clone()
        })*
    };
}

impl HostFlowBatch for HostState {
    fn len(&mut self, r: Resource<FlowBatch>) -> u32 {
        self.batch(&r).len() as u32
    }

    columns!(
        time_flow_start_ms: u64,
        time_flow_end_ms: u64,
        time_received: u64,
        etype: u16,
        src_mac: u64,
        dst_mac: u64,
        src_addr: wit::IpAddr,
        dst_addr: wit::IpAddr,
        src_port: u16,
        dst_port: u16,
        proto: u8,
        icmp_type: u8,
        icmp_code: u8,
        bytes: u64,
        packets: u64,
        skbs: u64,
        flags: u16,
        if_direction: u8,
        sampling: u32,
        interface: u32,
        netns: u32,
        names: String,
    );

    fn rows(&mut self, r: Resource<FlowBatch>, start: u32, count: u32) -> Vec<wit::Flow> {
        let b = self.batch(&r);
        let start = (start as usize).min(b.len());
        let end = start.saturating_add(count as usize).min(b.len());
        (start..end).map(|i| b.row(i)).collect()
    }

    fn drop(&mut self, r: Resource<FlowBatch>) -> wasmtime::Result<()> {
        // The host owns the batch; a guest never holds more than a borrow.
        if r.owned() {
            self.table.delete(r)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_and_rows_agree() {
        let mut flows = Vec::new();
        for i in 0..5u64 {
            let mut f = Flow::empty();
            f.bytes = 100 + i;
            f.proto = if i % 2 == 0 { 6 } else { 17 };
            f.interface = if i < 3 { "eth0".into() } else { "veth1".into() };
            f.netns = "host".into();
            f.src_mac = "02:00:00:00:00:0a".into();
            f.src_addr = "198.18.0.1".parse().unwrap();
            flows.push(f);
        }
        let b = FlowBatch::new(&flows);
        assert_eq!(b.len(), 5);
        let c = b.columns();
        assert_eq!(c.bytes, vec![100, 101, 102, 103, 104]);
        assert_eq!(c.names, vec!["eth0", "host", "veth1"]);
        assert_eq!(c.interface, vec![0, 0, 0, 2, 2]);
        assert_eq!(c.netns, vec![1; 5]);
        let r = b.row(4);
        assert_eq!(r.interface, "veth1");
        assert_eq!(r.netns, "host");
        assert_eq!(r.src_mac, 0x0200_0000_000a);
        assert_eq!(r.bytes, 104);
    }
}
