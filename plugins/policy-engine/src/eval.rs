//! The verdict for one connection, in the order the APIs define it: AdminNetworkPolicies by
//! priority (Allow and Deny decide, Pass hands over), then NetworkPolicies (the union of every
//! policy selecting the pod for that direction; a pod no policy selects is not isolated), then
//! the BaselineAdminNetworkPolicy, then allow. Egress is judged at the source pod, ingress at
//! the destination pod; a connection needs both.
//!
//! [`Index`] precomputes, for the cluster's pods, which policies select each pod and which pods
//! each rule's peers match, so a truth table costs a few bit tests per cell; without it (an
//! endpoint that is not one of the cluster's pods) every selector is evaluated directly.

use crate::model::*;
use std::net::IpAddr;

/// One end of a connection: a pod (namespace set) or an address outside the cluster.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    /// Index in `Cluster::pods` when it is one of them (enables the [`Index`]).
    pub pod: Option<usize>,
    pub ns: Option<&'a str>,
    pub labels: &'a Labels,
    pub ns_labels: &'a Labels,
    pub ip: Option<IpAddr>,
    /// Its container ports (named ports resolve against the destination's).
    pub ports: &'a [CPort],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn {
    pub port: u16,
    pub proto: Proto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Ingress,
    Egress,
}

/// Which tier decided a direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// The endpoint is not a pod: no policy applies to it.
    NotPod,
    Admin,
    NetworkPolicy,
    Baseline,
    /// Nothing selected the pod: allowed.
    Default,
}

impl Tier {
    pub fn name(self) -> &'static str {
        match self {
            Tier::NotPod => "not-a-pod",
            Tier::Admin => "AdminNetworkPolicy",
            Tier::NetworkPolicy => "NetworkPolicy",
            Tier::Baseline => "BaselineAdminNetworkPolicy",
            Tier::Default => "default",
        }
    }
}

/// One policy's part in a decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub policy: String,
    /// The rule (`ingress[1]`, an admin rule's name); empty when no rule matched.
    pub rule: String,
    /// `Allow`, `Deny`, `Pass`, or `isolates` (selects the pod, no rule matches).
    pub effect: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DirVerdict {
    pub allowed: bool,
    pub tier: Tier,
    pub steps: Vec<Step>,
}

/// A fixed-size set of pod indices.
#[derive(Debug, Clone)]
pub struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] >> (i % 64) & 1 == 1
    }
}

/// Precomputed selections over the cluster's pods.
pub struct Index {
    /// Per rule slot: the pods its peers match.
    peers: Vec<Bits>,
    /// Per pod: the NetworkPolicies selecting it for ingress, and for egress.
    np_in: Vec<Vec<u32>>,
    np_eg: Vec<Vec<u32>>,
    /// Per pod: the AdminNetworkPolicies whose subject it is.
    admins: Vec<Vec<u32>>,
    /// Per pod: the baseline's subject.
    baseline: Bits,
}

impl Cluster {
    /// The endpoint of pod `i`.
    pub fn pod_endpoint<'a>(&'a self, i: usize, ns_labels: &'a Labels) -> Endpoint<'a> {
        let p = &self.pods[i];
        Endpoint {
            pod: Some(i),
            ns: Some(&p.ns),
            labels: &p.labels,
            ns_labels,
            ip: p.ips.first().copied(),
            ports: &p.ports,
        }
    }

    /// Namespace labels per pod (what [`Cluster::pod_endpoint`] borrows).
    pub fn pod_ns_labels(&self) -> Vec<Labels> {
        self.pods.iter().map(|p| self.ns_labels(&p.ns)).collect()
    }

    pub fn index(&self, ns_labels: &[Labels]) -> Index {
        let eps: Vec<Endpoint> = (0..self.pods.len())
            .map(|i| self.pod_endpoint(i, &ns_labels[i]))
            .collect();
        self.index_of(&eps)
    }

    /// The index over any endpoints; each endpoint's `pod` must be its position in `eps`.
    pub fn index_of(&self, eps: &[Endpoint]) -> Index {
        let n = eps.len();
        let mut peers = vec![Bits::new(n); self.slots];
        let mut np_in = vec![vec![]; n];
        let mut np_eg = vec![vec![]; n];
        for (pi, pol) in self.netpols.iter().enumerate() {
            for (ep, (ins, egs)) in eps.iter().zip(np_in.iter_mut().zip(np_eg.iter_mut())) {
                if self.np_selects(pol, ep) {
                    if pol.ingress.is_some() {
                        ins.push(pi as u32);
                    }
                    if pol.egress.is_some() {
                        egs.push(pi as u32);
                    }
                }
            }
            for r in pol.ingress.iter().chain(pol.egress.iter()).flatten() {
                for (i, ep) in eps.iter().enumerate() {
                    if rule_peers_match(&pol.ns, &r.peers, ep) {
                        peers[r.slot].set(i);
                    }
                }
            }
        }
        let mut admins = vec![vec![]; n];
        let mut baseline = Bits::new(n);
        for (ai, a) in self.admins.iter().chain(self.baseline.iter()).enumerate() {
            for (i, ep) in eps.iter().enumerate() {
                if subject_matches(&a.subject, ep) {
                    if a.baseline {
                        baseline.set(i);
                    } else {
                        admins[i].push(ai as u32);
                    }
                }
            }
            for r in a.ingress.iter().chain(a.egress.iter()) {
                for (i, ep) in eps.iter().enumerate() {
                    if r.peers.iter().any(|s| subject_matches(s, ep)) {
                        peers[r.slot].set(i);
                    }
                }
            }
        }
        Index {
            peers,
            np_in,
            np_eg,
            admins,
            baseline,
        }
    }

    fn np_selects(&self, pol: &NetPol, ep: &Endpoint) -> bool {
        ep.ns == Some(pol.ns.as_str()) && pol.selector.matches(ep.labels)
    }

    /// Both directions: (egress at the source, ingress at the destination).
    pub fn verdict(
        &self,
        ix: Option<&Index>,
        src: &Endpoint,
        dst: &Endpoint,
        conn: Conn,
        explain: bool,
    ) -> (DirVerdict, DirVerdict) {
        let eg = self.direction(ix, Dir::Egress, src, dst, conn, explain);
        let ing = self.direction(ix, Dir::Ingress, src, dst, conn, explain);
        (eg, ing)
    }

    /// Whether the connection is allowed, the fast way (no explanation).
    pub fn allowed(&self, ix: Option<&Index>, src: &Endpoint, dst: &Endpoint, conn: Conn) -> bool {
        self.direction(ix, Dir::Egress, src, dst, conn, false)
            .allowed
            && self
                .direction(ix, Dir::Ingress, src, dst, conn, false)
                .allowed
    }

    /// One direction: `Egress` judged at `src`, `Ingress` at `dst`.
    pub fn direction(
        &self,
        ix: Option<&Index>,
        dir: Dir,
        src: &Endpoint,
        dst: &Endpoint,
        conn: Conn,
        explain: bool,
    ) -> DirVerdict {
        let (subject, peer) = match dir {
            Dir::Egress => (src, dst),
            Dir::Ingress => (dst, src),
        };
        let mut steps = vec![];
        let done = |allowed, tier, steps| DirVerdict {
            allowed,
            tier,
            steps,
        };
        let Some(ns) = subject.ns else {
            return done(true, Tier::NotPod, steps);
        };
        let peer_in = |slot: usize, direct: &dyn Fn() -> bool| match (ix, peer.pod) {
            (Some(ix), Some(i)) => ix.peers[slot].get(i),
            _ => direct(),
        };
        // 1. AdminNetworkPolicies, by priority.
        let admin_list: Vec<&Admin> = match (ix, subject.pod) {
            (Some(ix), Some(i)) => ix.admins[i]
                .iter()
                .map(|&a| &self.admins[a as usize])
                .collect(),
            _ => self
                .admins
                .iter()
                .filter(|a| subject_matches(&a.subject, subject))
                .collect(),
        };
        'admin: for a in admin_list {
            let rules = match dir {
                Dir::Ingress => &a.ingress,
                Dir::Egress => &a.egress,
            };
            for r in rules {
                if peer_in(r.slot, &|| r.peers.iter().any(|s| subject_matches(s, peer)))
                    && admin_ports_match(r.ports.as_deref(), dst, conn)
                {
                    if explain {
                        steps.push(Step {
                            policy: a.label(),
                            rule: r.name.clone(),
                            effect: r.action.name(),
                        });
                    }
                    match r.action {
                        Action::Allow => return done(true, Tier::Admin, steps),
                        Action::Deny => return done(false, Tier::Admin, steps),
                        Action::Pass => break 'admin,
                    }
                }
            }
        }
        // 2. NetworkPolicies: the union of every policy selecting the pod.
        let selecting: Vec<&NetPol> = match (ix, subject.pod) {
            (Some(ix), Some(i)) => match dir {
                Dir::Ingress => &ix.np_in[i],
                Dir::Egress => &ix.np_eg[i],
            }
            .iter()
            .map(|&p| &self.netpols[p as usize])
            .collect(),
            _ => self
                .netpols
                .iter()
                .filter(|p| {
                    p.ns == ns
                        && p.selector.matches(subject.labels)
                        && match dir {
                            Dir::Ingress => p.ingress.is_some(),
                            Dir::Egress => p.egress.is_some(),
                        }
                })
                .collect(),
        };
        if !selecting.is_empty() {
            let mut allowed = false;
            for p in selecting {
                let (rules, key) = match dir {
                    Dir::Ingress => (p.ingress.as_deref().unwrap_or(&[]), "ingress"),
                    Dir::Egress => (p.egress.as_deref().unwrap_or(&[]), "egress"),
                };
                let hit = rules.iter().position(|r| {
                    peer_in(r.slot, &|| rule_peers_match(&p.ns, &r.peers, peer))
                        && np_ports_match(&r.ports, dst, conn)
                });
                allowed |= hit.is_some();
                if explain {
                    steps.push(Step {
                        policy: format!("NetworkPolicy {}/{}", p.ns, p.name),
                        rule: hit.map(|i| format!("{key}[{i}]")).unwrap_or_default(),
                        effect: if hit.is_some() { "Allow" } else { "isolates" },
                    });
                } else if allowed {
                    break;
                }
            }
            return done(allowed, Tier::NetworkPolicy, steps);
        }
        // 3. The baseline.
        if let Some(b) = &self.baseline {
            let applies = match (ix, subject.pod) {
                (Some(ix), Some(i)) => ix.baseline.get(i),
                _ => subject_matches(&b.subject, subject),
            };
            if applies {
                let rules = match dir {
                    Dir::Ingress => &b.ingress,
                    Dir::Egress => &b.egress,
                };
                for r in rules {
                    if peer_in(r.slot, &|| r.peers.iter().any(|s| subject_matches(s, peer)))
                        && admin_ports_match(r.ports.as_deref(), dst, conn)
                    {
                        if explain {
                            steps.push(Step {
                                policy: b.label(),
                                rule: r.name.clone(),
                                effect: r.action.name(),
                            });
                        }
                        return done(r.action == Action::Allow, Tier::Baseline, steps);
                    }
                }
            }
        }
        done(true, Tier::Default, steps)
    }
}

/// Whether a NetworkPolicy rule's peers (of a policy in namespace `pol_ns`) match `ep`.
pub fn rule_peers_match(pol_ns: &str, peers: &[Peer], ep: &Endpoint) -> bool {
    peers.is_empty()
        || peers.iter().any(|p| match p {
            Peer::Pods { ns, pods } => {
                let Some(ep_ns) = ep.ns else { return false };
                let ns_ok = match ns {
                    None => ep_ns == pol_ns,
                    Some(s) => s.matches(ep.ns_labels),
                };
                ns_ok && pods.as_ref().is_none_or(|s| s.matches(ep.labels))
            }
            Peer::Block { cidr, except } => ep
                .ip
                .is_some_and(|ip| cidr.contains(ip) && !except.iter().any(|e| e.contains(ip))),
        })
}

fn np_ports_match(ports: &[PortSpec], dst: &Endpoint, conn: Conn) -> bool {
    ports.is_empty()
        || ports.iter().any(|s| {
            s.proto == conn.proto
                && match &s.port {
                    None => true,
                    Some(PortRef::Num(p)) => match s.end {
                        Some(e) => (*p..=e).contains(&conn.port),
                        None => conn.port == *p,
                    },
                    Some(PortRef::Name(n)) => named(dst, n, conn),
                }
        })
}

/// A named port: the destination pod declares a container port of that name, protocol and
/// number.
fn named(dst: &Endpoint, name: &str, conn: Conn) -> bool {
    dst.ports
        .iter()
        .any(|c| c.name == name && c.proto == conn.proto && c.port == conn.port)
}

fn admin_ports_match(ports: Option<&[APort]>, dst: &Endpoint, conn: Conn) -> bool {
    ports.is_none_or(|ps| {
        ps.iter().any(|p| match p {
            APort::Num(proto, port) => *proto == conn.proto && *port == conn.port,
            APort::Named(n) => named(dst, n, conn),
            APort::Range(proto, s, e) => *proto == conn.proto && (*s..=*e).contains(&conn.port),
        })
    })
}

/// Whether an admin policy's subject or peer covers `ep`.
pub fn subject_matches(s: &Subject, ep: &Endpoint) -> bool {
    match s {
        Subject::Namespaces(sel) => ep.ns.is_some() && sel.matches(ep.ns_labels),
        Subject::Pods { ns, pods } => {
            ep.ns.is_some() && ns.matches(ep.ns_labels) && pods.matches(ep.labels)
        }
        Subject::Networks(cidrs) => ep.ip.is_some_and(|ip| cidrs.iter().any(|c| c.contains(ip))),
        Subject::Nodes => false,
    }
}
