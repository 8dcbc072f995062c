//! Following a namespace's interfaces: netlink link events attach the programs to new
//! interfaces and release removed ones; a periodic sync catches what events missed.

use super::*;

pub(super) fn excluded(name: &str, exclude: &[String]) -> bool {
    name == "lo"
        || exclude.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => p == name,
        })
}

impl Instance {
    /// Runs on its own thread: enters the namespace (if any), then keeps every interface
    /// attached, following netlink link notifications.
    pub(super) fn watch_interfaces(
        &self,
        stop: &AtomicBool,
        own_ns: &OwnedFd,
        exclude: &[String],
        tcx: bool,
    ) {
        let mut warned = false;
        while !stop.load(Ordering::SeqCst) {
            let entered = if self.netns.is_empty() {
                None
            } else {
                match netlink::open_netns(&self.netns) {
                    Ok((fd, ino)) => match netlink::enter_netns(&fd) {
                        Ok(()) => {
                            // The tracing program keeps to this namespace from now on.
                            if let Err(e) = lock(&self.maps)
                                .set_config(|c| c.netns_ino = u32::try_from(ino).unwrap_or(0))
                            {
                                tracing::warn!(netns = %self.netns, error = %e, "cannot set the namespace of the tracing program");
                            }
                            Some(ino)
                        }
                        Err(e) => {
                            tracing::error!(netns = %self.netns, error = %e, "cannot enter network namespace");
                            std::thread::sleep(Duration::from_secs(1));
                            continue;
                        }
                    },
                    Err(e) => {
                        if !warned {
                            tracing::warn!(netns = %self.netns, error = %e, "network namespace not there yet, waiting");
                            warned = true;
                        }
                        std::thread::sleep(Duration::from_millis(250));
                        continue;
                    }
                }
            };
            warned = false;
            let watch = match LinkWatch::new() {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(netns = %self.netns, error = %e, "no netlink link notifications, polling instead");
                    None
                }
            };
            tracing::info!(netns = %self.netns, "watching interfaces");
            loop {
                self.sync_interfaces(exclude, tcx);
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Some(ino) = entered
                    && netlink::netns_inode(&self.netns) != Some(ino)
                {
                    tracing::info!(netns = %self.netns, "network namespace removed, releasing it");
                    break;
                }
                match &watch {
                    Some(w) => {
                        w.wait(Duration::from_millis(500));
                    }
                    None => std::thread::sleep(Duration::from_millis(500)),
                }
            }
            self.detach_all();
            if entered.is_some() {
                // Leave the namespace so that holding it does not keep it alive.
                drop(watch);
                if let Err(e) = netlink::enter_netns(own_ns) {
                    tracing::error!(error = %e, fd = own_ns.as_raw_fd(), "cannot return to the agent's namespace");
                    return;
                }
            }
        }
    }

    pub(super) fn sync_interfaces(&self, exclude: &[String], tcx: bool) {
        let present = match netlink::interfaces() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(netns = %self.netns, error = %e, "cannot list interfaces");
                return;
            }
        };
        {
            let mut names = lock(&self.names);
            for (i, n) in &present {
                names.insert(*i, n.clone());
            }
        }
        let mut attached = lock(&self.attached);
        let mut ebpf = lock(&self.ebpf);
        // Interfaces gone (or renamed/replaced under the same index): drop their links.
        let stale: Vec<u32> = attached
            .iter()
            .filter(|(i, a)| !present.iter().any(|(pi, pn)| pi == *i && *pn == a.name))
            .map(|(i, _)| *i)
            .collect();
        for i in stale {
            if let Some(a) = attached.remove(&i) {
                detach(&mut ebpf, a);
            }
        }
        for (ifindex, name) in present {
            if excluded(&name, exclude) || attached.contains_key(&ifindex) {
                continue;
            }
            let key = format!("{}/{}", self.netns, name);
            match attach(&mut ebpf, &name, tcx) {
                Ok((mode, ingress, egress)) => {
                    tracing::info!(netns = %self.netns, interface = %name, ifindex, mode, "attached");
                    lock(&self.errors).remove(&key);
                    attached.insert(
                        ifindex,
                        Attached {
                            speed_bps: crate::netlink::link_speed_bps(&name),
                            name,
                            mode,
                            ingress,
                            egress,
                        },
                    );
                }
                Err(e) => {
                    let mut errors = lock(&self.errors);
                    if errors.get(&key) != Some(&e) {
                        tracing::warn!(netns = %self.netns, interface = %name, error = %e, "attach failed");
                        errors.insert(key, e);
                    }
                }
            }
        }
    }

    pub(super) fn detach_all(&self) {
        let mut attached = lock(&self.attached);
        let mut ebpf = lock(&self.ebpf);
        for (_, a) in std::mem::take(&mut *attached) {
            detach(&mut ebpf, a);
        }
    }

    // ---- draining --------------------------------------------------------------------------
}

/// An interface's name, or `if<index>` when it is gone.
pub(super) fn if_name(names: &HashMap<u32, String>, ifindex: u32) -> String {
    names
        .get(&ifindex)
        .cloned()
        .unwrap_or_else(|| format!("if{ifindex}"))
}
