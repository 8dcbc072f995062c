"""Compares weir's decoding of an OVS dump with the OVS project's own parser (PyPI `ovs`,
`ovs.flow.odp.ODPFlow` / `ovs.flow.ofp.OFPFlow`) and its tree and graph with ovs-flowviz's.

usage: ovs_reference.py dpctl|ofctl|tree|graph DUMP WEIR_JSON

Prints one JSON report: {"compared": flows, "fields": values compared, "mismatches": [...],
"reference_failures": [...]} (lines the reference parser itself cannot read). Values are
compared by meaning: numbers whatever their base, addresses and MACs canonical, masks as
integers whether printed as a mask or a prefix length.
"""

import json
import os
import subprocess
import sys

import netaddr
from ovs.flow.odp import ODPFlow
from ovs.flow.ofp import OFPFlow


def atom(s):
    s = str(s).strip()
    try:
        return ("int", int(s, 0))
    except ValueError:
        pass
    try:
        ip = netaddr.IPAddress(s)
        return ("ip%d" % ip.version, int(ip))
    except Exception:
        pass
    try:
        return ("mac", int(netaddr.EUI(s)))
    except Exception:
        pass
    return ("str", s.lower())


def mask_of(m, value):
    """A mask as an integer; a bare number after an IP is a prefix length."""
    if value[0] in ("ip4", "ip6") and m.isdigit():
        width = 32 if value[0] == "ip4" else 128
        n = int(m)
        return ("mask", ((1 << n) - 1) << (width - n) if n else 0)
    a = atom(m)
    return ("mask", a[1]) if a[0] != "str" else a


def norm_text(s):
    s = str(s)
    if "/" in s and not s.startswith("{"):
        v, m = s.split("/", 1)
        v = atom(v)
        return (v, mask_of(m, v))
    return (atom(s), None)


def norm_ours(v):
    """weir's {"value", "mask"} pair, or a nested object."""
    if isinstance(v, dict) and "value" in v and isinstance(v["value"], str):
        val = atom(v["value"])
        return (val, mask_of(v["mask"], val) if "mask" in v else None)
    return v


def same(a, b):
    if a == b:
        return True
    # A value printed without a mask equals one with an all-ones mask.
    (va, ma), (vb, mb) = a, b
    if va != vb:
        return False
    full = {"ip4": [(1 << 32) - 1], "ip6": [(1 << 128) - 1], "mac": [(1 << 48) - 1],
            "int": [(1 << w) - 1 for w in (8, 16, 32, 64, 128)]}.get(va[0], [])
    other = mb if ma is None else ma if mb is None else None
    return other is not None and (ma is None or mb is None) and other[0] == "mask" and other[1] in full


class Report:
    def __init__(self):
        self.compared = 0
        self.fields = 0
        self.mismatches = []
        self.failures = []

    def check(self, line, path, ours, ref):
        self.fields += 1
        if not same(ours, ref):
            self.mismatches.append({"line": line, "field": path, "weir": repr(ours), "reference": repr(ref)})


def compare_match(rep, line, path, ours, ref):
    """Every key and sub-key the reference gives must be in weir's match, equal."""
    if isinstance(ref, dict):
        if not isinstance(ours, dict):
            rep.mismatches.append({"line": line, "field": path, "weir": repr(ours), "reference": repr(ref)})
            return
        for k, v in ref.items():
            if k not in ours:
                rep.mismatches.append({"line": line, "field": path + "." + k, "weir": "absent", "reference": repr(v)})
                continue
            compare_match(rep, line, path + "." + k, ours[k], v)
        for k in ours:
            if k not in ref:
                rep.mismatches.append({"line": line, "field": path + "." + k, "weir": repr(ours[k]), "reference": "absent"})
        return
    if isinstance(ref, list):
        if not isinstance(ours, list) or len(ours) != len(ref):
            rep.mismatches.append({"line": line, "field": path, "weir": repr(ours), "reference": repr(ref)})
            return
        for i, (o, r) in enumerate(zip(ours, ref)):
            compare_match(rep, line, "%s[%d]" % (path, i), o, r)
        return
    if ref is True:
        rep.fields += 1
        if ours is not True:
            rep.mismatches.append({"line": line, "field": path, "weir": repr(ours), "reference": "true"})
        return
    o = norm_ours(ours)
    if isinstance(o, dict):
        rep.mismatches.append({"line": line, "field": path, "weir": repr(ours), "reference": repr(ref)})
        return
    rep.check(line, path, o, norm_text(ref))


def action_summary(actions):
    """Action names in order, nested lists too, with the parameters that route packets."""
    out = []
    for a in actions or []:
        for name, v in a.items():
            if name == "output":
                out.append(("output", str(v.get("port") if isinstance(v, dict) else v)))
            elif name == "recirc":
                out.append(("recirc", atom(v)[1]))
            elif name == "ct":
                zone = v.get("zone", 0) if isinstance(v, dict) else 0
                out.append(("ct", atom(zone)[1], bool(isinstance(v, dict) and v.get("commit")), bool(isinstance(v, dict) and "nat" in v)))
            elif name == "check_pkt_len":
                out.append(("check_pkt_len", atom(v.get("size"))[1], action_summary(v.get("gt")), action_summary(v.get("le"))))
            elif name == "clone":
                inner = v.get("actions") if isinstance(v, dict) else v
                out.append(("clone", action_summary(inner)))
            elif name == "sample":
                out.append(("sample", action_summary(v.get("actions"))))
            elif name == "meter":
                out.append(("meter", atom(v)[1]))
            elif name == "push_vlan":
                vid = v.get("vid") if isinstance(v, dict) else v
                out.append(("push_vlan", atom(vid)[1] if vid is not None else None))
            elif name == "resubmit":
                out.append(("resubmit", str(v.get("port", "")), str(v.get("table", ""))))
            else:
                out.append((name,))
    return out


def ours_actions_dpctl(actions):
    """weir's actions, in the reference's shapes where they differ (output ports)."""
    return actions


def dpctl(dump, ours):
    rep = Report()
    by_line = {f["line"]: f for f in ours["flows"]}
    for n, line in enumerate(open(dump).read().splitlines(), 1):
        if "actions:" not in line:
            continue
        try:
            ref = ODPFlow(line.strip())
        except Exception as e:
            rep.failures.append({"line": n, "error": str(e)[:200]})
            continue
        f = by_line.get(n)
        if f is None:
            rep.mismatches.append({"line": n, "field": "flow", "weir": "not decoded", "reference": "decoded"})
            continue
        rep.compared += 1
        d = ref.dict()
        ufid = d.get("ufid", {})
        if isinstance(ufid, dict):
            ufid = ufid.get("ufid")
        if ufid is not None:
            rep.fields += 1
            if str(f.get("ufid")) != str(ufid):
                rep.mismatches.append({"line": n, "field": "ufid", "weir": f.get("ufid"), "reference": str(ufid)})
        for k, v in ref.info.items():
            rep.fields += 1
            mine = f.get(k)
            if k == "used" and v == "never":
                ok = mine == "never"
            elif isinstance(v, float):
                ok = isinstance(mine, (int, float)) and abs(mine - v) < 1e-6
            else:
                ok = str(mine) == str(v)
            if not ok:
                rep.mismatches.append({"line": n, "field": "info." + k, "weir": repr(mine), "reference": repr(v)})
        compare_match(rep, n, "match", f["match"], json.loads(json.dumps(d["match"], default=str)))
        rep.fields += 1
        a, b = action_summary(f["actions"]), action_summary(ref.actions)
        if a != b:
            rep.mismatches.append({"line": n, "field": "actions", "weir": repr(a), "reference": repr(b)})
    return rep


def ofctl(dump, ours):
    rep = Report()
    by_line = {f["line"]: f for f in ours["flows"]}
    for n, line in enumerate(open(dump).read().splitlines(), 1):
        if "actions=" not in line:
            continue
        try:
            ref = OFPFlow(line.strip())
        except Exception as e:
            rep.failures.append({"line": n, "error": str(e)[:200]})
            continue
        f = by_line.get(n)
        if f is None:
            rep.mismatches.append({"line": n, "field": "flow", "weir": "not decoded", "reference": "decoded"})
            continue
        rep.compared += 1
        for k, v in ref.info.items():
            rep.fields += 1
            if " " in k and v is True:
                # The reference keeps space-separated flags as one key
                # ("send_flow_rem reset_counts"): each is a flag.
                if not all(f["info"].get(w) is True for w in k.split()):
                    rep.mismatches.append({"line": n, "field": "info." + k, "weir": repr(f["info"]), "reference": "flags"})
                continue
            mine = f["info"].get(k)
            if v is True:
                ok = mine is True
            elif isinstance(v, float):
                ok = abs(float(mine) - v) < 1e-6
            else:
                ok = atom(mine) == atom(v)
            if not ok:
                rep.mismatches.append({"line": n, "field": "info." + k, "weir": repr(mine), "reference": repr(v)})
        compare_match(rep, n, "match", f["match"], json.loads(json.dumps(ref.match, default=str)))
        rep.fields += 1
        a = action_summary(f["actions"])
        b = action_summary(json.loads(json.dumps(ref.actions, default=str)))
        # The reference names the check_pkt_larger destination as a field object; compare names.
        if [x[0] for x in a] != [x[0] for x in b] or [x for x in a if x[0] in ("output", "resubmit")] != [x for x in b if x[0] in ("output", "resubmit")]:
            rep.mismatches.append({"line": n, "field": "actions", "weir": repr(a), "reference": repr(b)})
    return rep


def ref_flows(dump):
    flows = []
    for line in open(dump).read().splitlines():
        if "actions:" in line:
            flows.append(ODPFlow(line.strip()))
    return flows


def tree(dump, ours):
    """Node keys with their flows' ufids, and each flow's next nodes, as ovs-flowviz builds them."""
    from ovs.flowviz.odp.tree import FlowTree

    t = FlowTree()
    for f in ref_flows(dump):
        t.add(f)
    t.build()
    ref_nodes, ref_edges = {}, set()
    for node in t.all_recirc_nodes:
        key = "%d:%s" % (node.recirc, node.in_port)
        for block in node._blocks:
            for tf in block.flows:
                u = tf.flow.ufid["ufid"] if isinstance(getattr(tf.flow, "ufid", None), dict) else tf.flow.orig
                ref_nodes.setdefault(key, set()).add(u)
                for nxt in block.next_recirc_nodes:
                    ref_edges.add((u, "%d:%s" % (nxt.recirc, nxt.in_port)))
    our_nodes, our_edges = {}, set()

    def walk(nodes):
        for n in nodes:
            key = "%d:%s" % (n["recirc_id"], n["in_port"])
            for f in n["flows"]:
                our_nodes.setdefault(key, set()).add(f["ufid"])
                for c in f["children"]:
                    our_edges.add((f["ufid"], "%d:%s" % (c["recirc_id"], c["in_port"])))
                walk(f["children"])

    walk(ours["tree"]["roots"])
    rep = Report()
    rep.compared = sum(len(v) for v in ref_nodes.values())
    # ovs-flowviz keeps nodes no recirc_id 0 flow leads to; weir's tree starts at recirc 0.
    reachable = set(our_nodes)
    for key, ufids in ref_nodes.items():
        rep.fields += 1
        if key in reachable and our_nodes[key] != ufids:
            rep.mismatches.append({"field": "node " + key, "weir": sorted(our_nodes[key]), "reference": sorted(ufids)})
        elif key not in reachable and key.startswith("0:"):
            rep.mismatches.append({"field": "node " + key, "weir": "absent", "reference": sorted(ufids)})
    rep.fields += 1
    if our_edges != ref_edges:
        rep.mismatches.append({"field": "edges", "weir": sorted(our_edges - ref_edges), "reference": sorted(ref_edges - our_edges)})
    return rep


def graph(dump, ours):
    """Edges between (recirc, in_port) clusters, outputs, conntrack zones and drops, read from
    the DOT that `ovs-flowviz datapath graph` prints."""
    tool = os.path.join(os.path.dirname(sys.executable), "ovs-flowviz")
    dot = subprocess.run([tool, "-i", dump, "datapath", "graph"], capture_output=True, text=True)
    if dot.returncode != 0:
        raise SystemExit("ovs-flowviz datapath graph failed: " + dot.stderr[-500:])
    text = dot.stdout
    block_cluster, cluster = {}, None
    edges = []
    import re
    for line in text.splitlines():
        s = line.strip()
        m = re.match(r"subgraph cluster_recirc_(0x[0-9a-f]+)_(\S+) \{", s)
        if m:
            cluster = "%d:%s" % (int(m.group(1), 16), m.group(2))
            continue
        m = re.match(r"(flow_block_\d+) \[label=", s)
        if m and cluster:
            block_cluster[m.group(1)] = cluster
            continue
        m = re.match(r'(flow_block_\d+):actions -> ("[^"]+"|\S+)', s)
        if m:
            edges.append((m.group(1), m.group(2).strip('"')))
    ref = set()
    for block, target in edges:
        src = block_cluster.get(block)
        if target.startswith("output_"):
            ref.add((src, "output:" + target[len("output_"):]))
        elif target.startswith("invis_cluster_recirc_"):
            r, p = target[len("invis_cluster_recirc_"):].split("_", 1)
            ref.add((src, "recirc:%d:%s" % (int(r, 16), p)))
        elif target.startswith("CT zone "):
            z = target[len("CT zone "):]
            ref.add((src, "ct:%s" % (0 if z == "default" else int(z))))
        elif target in ("drop", "userspace", "controller"):
            ref.add((src, target))
    mine = set()
    for e in ours["graph"]["edges"]:
        src = e["from"].split(":", 1)[1]
        r, p = src.split(":", 1)
        src = "%d:%s" % (int(r, 16), p)
        to = e["to"]
        if to.startswith("recirc:"):
            _, r, p = to.split(":", 2)
            to = "recirc:%d:%s" % (int(r, 16), p)
        mine.add((src, to))
    rep = Report()
    rep.compared = len(ref)
    rep.fields = len(ref | mine)
    if mine != ref:
        rep.mismatches.append({"field": "edges", "weir": sorted(mine - ref), "reference": sorted(ref - mine)})
    return rep


def main():
    mode, dump, ours_path = sys.argv[1:4]
    ours = json.load(open(ours_path))
    rep = {"dpctl": dpctl, "ofctl": ofctl, "tree": tree, "graph": graph}[mode](dump, ours)
    print(json.dumps({"compared": rep.compared, "fields": rep.fields, "mismatches": rep.mismatches,
                      "reference_failures": rep.failures}))


if __name__ == "__main__":
    main()
