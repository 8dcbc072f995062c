//! One namespace's copy of the programs: loading them (with their maps and the optional
//! tracing program), reading its kernel counters, and attaching both TC programs to an
//! interface (tcx, else a clsact qdisc) and detaching them.

use super::*;

impl Instance {
    pub(super) fn load(
        netns: &str,
        cfg: &CaptureConfig,
        reasons: Arc<EnumNames>,
        filters: &[CompiledRule],
    ) -> Result<(Instance, RingBuf<MapData>), CaptureError> {
        // The coarse clock's helper came in 5.11; a kernel that reports an older version
        // (backports included) keeps the precise clock.
        // bpf_jiffies64 (the tick clock's) came in 5.5.
        let version = KernelVersion::current();
        let coarse = u32::from(
            version
                .as_ref()
                .is_ok_and(|v| *v >= KernelVersion::new(5, 11, 0)),
        );
        let jiffies = u32::from(
            version
                .as_ref()
                .is_ok_and(|v| *v >= KernelVersion::new(5, 5, 0)),
        );
        let mut ebpf = EbpfLoader::new()
            .override_global("coarse_clock", &coarse, true)
            .override_global("jiffies_clock", &jiffies, true)
            .map_max_entries("flows_a", cfg.max_flows)
            .map_max_entries("flows_b", cfg.max_flows)
            .load(FLOWS_OBJ)
            .map_err(|e| CaptureError::Load(e.to_string()))?;
        for prog in ["weir_ingress", "weir_egress"] {
            let p: &mut SchedClassifier = ebpf
                .program_mut(prog)
                .ok_or_else(|| CaptureError::Load(format!("program {prog} missing")))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| CaptureError::Load(e.to_string()))?;
            p.load()
                .map_err(|e| CaptureError::Load(format!("{prog}: {e}")))?;
        }
        let take = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| CaptureError::Load(format!("map {name} missing")))
        };
        let a = PerCpuHashMap::try_from(take(&mut ebpf, "flows_a")?).map_err(setup("flows_a"))?;
        let b = PerCpuHashMap::try_from(take(&mut ebpf, "flows_b")?).map_err(setup("flows_b"))?;
        let config: Array<MapData, WeirConfig> =
            Array::try_from(take(&mut ebpf, "config")?).map_err(setup("config"))?;
        let filter_map: Array<MapData, FilterRuleRecord> =
            Array::try_from(take(&mut ebpf, "filters")?).map_err(setup("filters"))?;
        let counters =
            PerCpuArray::try_from(take(&mut ebpf, "counters")?).map_err(setup("counters"))?;
        let ring =
            RingBuf::try_from(take(&mut ebpf, "direct_flows")?).map_err(setup("direct_flows"))?;
        let dns_ring =
            RingBuf::try_from(take(&mut ebpf, "dns_events")?).map_err(setup("dns_events"))?;
        let mut maps = FlowMaps {
            a,
            b,
            config,
            filters: filter_map,
            counters,
            cfg: WeirConfig::default(),
        };
        let consumed = reasons.value("SKB_CONSUMED").unwrap_or(1) as u32;
        let netns_ino = if netns.is_empty() {
            netlink::own_netns_inode().unwrap_or(0)
        } else {
            0 // set when the watcher enters the namespace
        };
        // Without the tick clock, the programs read the coarse clock (a little dearer), or
        // before 5.11 the precise one.
        let fallback = if coarse == 1 { "coarse" } else { "precise" };
        let tick = if jiffies == 1 {
            tick_clock_of(&mut ebpf)
        } else {
            Err("kernel before 5.5 (no bpf_jiffies64)".to_string())
        }
        .map_err(|e| format!("{e}; packets read the {fallback} clock"));
        if let Err(e) = &tick {
            tracing::warn!(netns = %netns, error = %e, "tick clock off");
        }
        maps.set_config(|c| {
            if let Ok(t) = &tick {
                c.tick_ns = t.tick_ns;
                c.tick_base_ns = t.base_ns;
            }
            c.sampling = cfg.sampling;
            c.netns_ino = netns_ino;
            c.consumed_reason = consumed;
            c.dns = u32::from(cfg.dns);
            c.rtt = u32::from(cfg.rtt);
        })?;
        maps.set_filters(filters)?;
        // The tracing program is optional: a kernel without the hook (or without BTF) loses
        // only that feature.
        let btf = Btf::from_sys_fs().map_err(|e| format!("kernel BTF: {e}"));
        let mut trace = |prog: &str, hook: &str, wanted: bool| -> Result<(), String> {
            if !wanted {
                return Err("turned off".into());
            }
            let btf = btf.as_ref().map_err(Clone::clone)?;
            let p: &mut BtfTracePoint = ebpf
                .program_mut(prog)
                .ok_or_else(|| format!("program {prog} missing"))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| e.to_string())?;
            p.load(hook, btf)
                .map_err(|e| format!("loading tp_btf/{hook}: {e}"))?;
            p.attach()
                .map_err(|e| format!("attaching tp_btf/{hook}: {e}"))?;
            Ok(())
        };
        let probed = Probed {
            drops: trace("weir_kfree_skb", "kfree_skb", cfg.drops),
            // Read by the TC program itself (bpf_tcp_sock), which loaded already.
            rtt: if cfg.rtt {
                Ok(())
            } else {
                Err("turned off".into())
            },
            tick_clock: tick.map(|t| t.hz),
        };
        for (what, r) in [("drops", &probed.drops), ("tcp-rtt", &probed.rtt)] {
            if let Err(e) = r {
                tracing::warn!(netns = %netns, feature = what, error = %e, "capture feature off");
            }
        }
        Ok((
            Instance {
                netns: netns.to_string(),
                ebpf: Mutex::new(ebpf),
                maps: Mutex::new(maps),
                names: Mutex::new(HashMap::new()),
                attached: Mutex::new(BTreeMap::new()),
                errors: Mutex::new(BTreeMap::new()),
                counters: Counters::default(),
                probed,
                reasons,
                dns_ring: Mutex::new(Some(dns_ring)),
                dns: Mutex::new(DnsTracker::default()),
                pending: Mutex::new(Pending::default()),
            },
            ring,
        ))
    }

    pub(super) fn kernel_counter(&self, idx: u32) -> u64 {
        lock(&self.maps)
            .counters
            .get(&idx, 0)
            .map(|per| per.iter().sum())
            .unwrap_or(0)
    }

    /// How far off the tick clock's stamp is now (0: within), read with this namespace's
    /// `weir_clock`: None where it is not loaded here (only the first namespace loads it),
    /// cannot run, or the namespace is busy (attaching interfaces holds its programs).
    pub(super) fn tick_clock_off(&self, t: &clock::TickClock) -> Option<i64> {
        let ebpf = self.ebpf.try_lock().ok()?;
        let p: &SchedClassifier = ebpf.program("weir_clock")?.try_into().ok()?;
        clock::stamp_off_now(p, t).ok()
    }

    pub(super) fn kernel_counters(&self) -> Vec<(&'static str, u64)> {
        [
            (counter::SAMPLED_OUT, "kernel_sampled_out"),
            (counter::MAP_FULL, "kernel_map_full"),
            (counter::RINGBUF_LOST, "kernel_ringbuf_lost"),
            (counter::TRUNCATED, "kernel_truncated"),
            (counter::FILTERED, "kernel_filtered"),
            (counter::DNS_LOST, "kernel_dns_lost"),
            (counter::DROPS, "kernel_drops"),
            (counter::RTT, "kernel_rtt_samples"),
        ]
        .iter()
        .map(|(i, n)| (*n, self.kernel_counter(*i)))
        .collect()
    }

    // ---- attaching -------------------------------------------------------------------------
}

type LinkId = aya::programs::tc::SchedClassifierLinkId;

pub(super) fn program<'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
) -> Result<&'a mut SchedClassifier, String> {
    ebpf.program_mut(name)
        .ok_or_else(|| format!("program {name} missing"))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())
}

/// Attaches both programs to an interface of the calling thread's namespace: tcx where the
/// kernel has it, else (or when tcx fails) a clsact qdisc.
pub(super) fn attach(
    ebpf: &mut Ebpf,
    ifname: &str,
    tcx: bool,
) -> Result<(&'static str, LinkId, LinkId), String> {
    if tcx {
        let r = (|| -> Result<(LinkId, LinkId), String> {
            let i = program(ebpf, "weir_ingress")?
                .attach_with_options(
                    ifname,
                    TcAttachType::Ingress,
                    TcAttachOptions::TcxOrder(LinkOrder::default()),
                )
                .map_err(|e| e.to_string())?;
            let e = match program(ebpf, "weir_egress")?.attach_with_options(
                ifname,
                TcAttachType::Egress,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            ) {
                Ok(e) => e,
                Err(err) => {
                    let _ = program(ebpf, "weir_ingress").map(|p| p.detach(i));
                    return Err(err.to_string());
                }
            };
            Ok((i, e))
        })();
        match r {
            Ok((i, e)) => return Ok(("tcx", i, e)),
            Err(e) => {
                tracing::debug!(interface = ifname, error = %e, "tcx attach failed, trying clsact")
            }
        }
    }
    match tc::qdisc_add_clsact(ifname) {
        Ok(()) => {}
        Err(tc::TcError::NetlinkError(n)) if n.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(format!("adding clsact qdisc: {e}")),
    }
    let i = program(ebpf, "weir_ingress")?
        .attach_with_options(
            ifname,
            TcAttachType::Ingress,
            TcAttachOptions::Netlink(NlOptions::default()),
        )
        .map_err(|e| e.to_string())?;
    let e = match program(ebpf, "weir_egress")?.attach_with_options(
        ifname,
        TcAttachType::Egress,
        TcAttachOptions::Netlink(NlOptions::default()),
    ) {
        Ok(e) => e,
        Err(err) => {
            let _ = program(ebpf, "weir_ingress").map(|p| p.detach(i));
            return Err(err.to_string());
        }
    };
    Ok(("clsact", i, e))
}

pub(super) fn detach(ebpf: &mut Ebpf, a: Attached) {
    // Errors are expected when the interface is already gone (the kernel dropped the links).
    if let Ok(p) = program(ebpf, "weir_ingress") {
        let _ = p.detach(a.ingress);
    }
    if let Ok(p) = program(ebpf, "weir_egress") {
        let _ = p.detach(a.egress);
    }
    tracing::info!(interface = %a.name, "detached");
}

/// Loads `weir_clock` and calibrates the tick clock with it (once per process: later
/// namespaces take the first one's figures without loading it).
fn tick_clock_of(ebpf: &mut Ebpf) -> Result<clock::TickClock, String> {
    if let Some(t) = clock::calibrated() {
        return t.map_err(|e| e.to_string());
    }
    let p: &mut SchedClassifier = ebpf
        .program_mut("weir_clock")
        .ok_or("program weir_clock missing")?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())?;
    p.load().map_err(|e| format!("loading weir_clock: {e}"))?;
    let t = clock::tick_clock(p).map_err(|e| e.to_string())?;
    tracing::debug!(hz = t.hz, tick_ns = t.tick_ns, "tick clock calibrated");
    Ok(t)
}
