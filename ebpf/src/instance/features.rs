//! Which kernel hooks this kernel has: probed at start (tcx, the drop tracing program), and
//! the feature lines the status shows (degraded ones with the reason).

use super::*;

/// Whether this kernel charges BPF maps to the locked-memory limit (kernels before 5.11), so
/// that raising it (CAP_SYS_RESOURCE) is needed to load the programs; unknown counts as yes.
pub fn maps_charged_to_memlock() -> bool {
    KernelVersion::current().map_or(true, |k| k < KernelVersion::new(5, 11, 0))
}

pub(super) fn probe_features() -> (Vec<Feature>, bool) {
    let kv = KernelVersion::current().ok();
    let tcx = kv.is_some_and(|k| k >= KernelVersion::new(6, 6, 0));
    let tc_ok = aya::sys::is_program_supported(aya::programs::ProgramType::SchedClassifier)
        .unwrap_or(false);
    let rb_ok = aya::sys::is_map_supported(aya::maps::MapType::RingBuf).unwrap_or(false);
    let kernel = kv
        .map(|k| k.to_string())
        .unwrap_or_else(|| "unknown".into());
    let features = vec![
        Feature {
            name: "flows".into(),
            enabled: tc_ok,
            detail: if tc_ok {
                format!("tc classifier on ingress and egress (kernel {kernel})")
            } else {
                "the kernel refuses tc classifier programs".into()
            },
        },
        Feature {
            name: "tcx".into(),
            enabled: tcx,
            detail: if tcx {
                "tcx links (falls back to clsact per interface on error)".into()
            } else {
                "kernel older than 6.6: legacy clsact qdisc".into()
            },
        },
        Feature {
            name: "ringbuf-fallback".into(),
            enabled: rb_ok,
            detail: "flows that do not fit in the map are sent through a ring buffer".into(),
        },
    ];
    (features, tcx)
}

/// The status lines of the optional features.
pub(super) fn optional_features(
    cfg: &CaptureConfig,
    probed: Option<&Probed>,
    reasons_error: Option<String>,
    reasons: usize,
) -> Vec<Feature> {
    let state = |r: Option<&Result<(), String>>, on: String| match r {
        Some(Ok(())) => (true, on),
        Some(Err(e)) => (false, e.clone()),
        None => (false, "no namespace loaded".into()),
    };
    let (drops_on, mut drops_detail) = state(
        probed.map(|p| &p.drops),
        format!("tp_btf/kfree_skb; {reasons} drop reasons read from the kernel's BTF"),
    );
    if let Some(e) = reasons_error {
        drops_detail.push_str(&format!(" (reasons shown as numbers: {e})"));
    }
    let (rtt_on, rtt_detail) = state(
        probed.map(|p| &p.rtt),
        "TC egress: the sending socket's smoothed RTT (bpf_tcp_sock)".into(),
    );
    let (tick_on, tick_detail) = match probed.map(|p| &p.tick_clock) {
        Some(Ok(hz)) => (
            true,
            format!(
                "packets after a flow's first are stamped from jiffies (HZ {hz}), calibrated against CLOCK_MONOTONIC"
            ),
        ),
        Some(Err(e)) => (false, e.clone()),
        None => (false, "no namespace loaded".into()),
    };
    vec![
        Feature {
            name: "drops".into(),
            enabled: drops_on,
            detail: drops_detail,
        },
        Feature {
            name: "tcp-rtt".into(),
            enabled: rtt_on,
            detail: rtt_detail,
        },
        Feature {
            name: "tick-clock".into(),
            enabled: tick_on,
            detail: tick_detail,
        },
        Feature {
            name: "dns".into(),
            enabled: cfg.dns,
            detail: if cfg.dns {
                "port 53 (UDP and TCP) parsed: name, type, response code, latency".into()
            } else {
                "turned off".into()
            },
        },
        Feature {
            name: "filters".into(),
            enabled: true,
            detail: format!("in-kernel filter rules, up to {MAX_FILTERS}, changeable at run time"),
        },
    ]
}
