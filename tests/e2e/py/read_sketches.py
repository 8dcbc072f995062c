"""Reads a weir edge-summary snapshot with Apache DataSketches for Python and prints, as JSON,
what the library itself answers for each sketch: frequent items (top 10 with estimate and
bounds), CPC estimates, KLL quantiles. Container layout: plugins/edge-summary/src/sketches.rs.

usage: read_sketches.py SNAPSHOT_FILE
"""
import json
import struct
import sys

from datasketches import (cpc_sketch, frequent_items_error_type, frequent_strings_sketch,
                          kll_doubles_sketch)


def entries(data):
    if data[:4] != b"WSK1":
        raise SystemExit("not a WSK1 container")
    (count,) = struct.unpack_from("<I", data, 4)
    at = 8
    for _ in range(count):
        family = data[at]
        (name_len,) = struct.unpack_from("<H", data, at + 1)
        name = data[at + 3:at + 3 + name_len].decode()
        at += 3 + name_len
        (length,) = struct.unpack_from("<I", data, at)
        image = data[at + 4:at + 4 + length]
        at += 4 + length
        yield family, name, image
    if at != len(data):
        raise SystemExit(f"{len(data) - at} bytes after the last sketch")


def main():
    data = open(sys.argv[1], "rb").read()
    out = {}
    for family, name, image in entries(data):
        if family == 1:
            s = frequent_strings_sketch.deserialize(image)
            items = s.get_frequent_items(frequent_items_error_type.NO_FALSE_NEGATIVES)
            items.sort(key=lambda r: (-r[1], r[0]))
            out[name] = {"total": s.total_weight,
                         "top": [[i, e, lo, hi] for (i, e, lo, hi) in items[:10]]}
        elif family == 2:
            s = cpc_sketch.deserialize(image)
            out[name] = {"estimate": s.get_estimate()}
        elif family == 3:
            s = kll_doubles_sketch.deserialize(image)
            # p50, p90, p95, p99, then the exact maximum (the library's rank-1.0 quantile is the
            # largest item it retained, which may be below the maximum it saw).
            out[name] = {"n": s.n, "quantiles": [s.get_quantile(q) for q in (0.5, 0.9, 0.95, 0.99)]
                         + [s.get_max_value()]}
        else:
            raise SystemExit(f"sketch {name}: unknown family {family}")
    json.dump(out, sys.stdout, sort_keys=True)


main()
