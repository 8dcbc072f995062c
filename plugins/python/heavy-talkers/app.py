"""heavy-talkers: a weir alert-rule plugin (Python, built with componentize-py).

For each (source, destination) address pair that moved at least `threshold_bytes` in the
evaluated window, emit a `heavy-talker` warning.

Config (all optional):
  threshold_bytes  bytes a pair must reach to alert (default 1000000)
  top              how many of the largest pairs to look at, 1-10000 (default 10)
  filter           a flow filter in weir's query language (default "": every flow)
"""

import ipaddress

import wit_world
from componentize_py_types import Err
from wit_world.imports import config, flows, log
from wit_world.imports.types import (
    Alert,
    Metric,
    PluginError_Failed,
    PluginError_InvalidInput,
    Severity,
    TimeRange,
    Value_Ip,
    Value_Number,
    Value_Text,
)

DEFAULT_THRESHOLD_BYTES = 1_000_000
DEFAULT_TOP = 10
# The host refuses more groups than this (weir_core::query::MAX_GROUPS).
MAX_TOP = 10_000
U64_MAX = (1 << 64) - 1


class ConfigError(Exception):
    """A config value is wrong; the message names the key."""


def config_int(key: str, default: int, lo: int, hi: int, what: str) -> int:
    """A whole-number config value; `what` describes it in the error message."""
    raw = config.get(key)
    if raw is None:
        return default
    text = raw.strip().replace("_", "")
    if not (text.isascii() and text.isdigit()):
        raise ConfigError(f"config {key}: expected {what}, got {raw!r}")
    value = int(text)
    if value < lo or value > hi:
        raise ConfigError(f"config {key}: expected {what}, got {value}")
    return value


def format_ip(hi: int, lo: int) -> str:
    """An ip-addr (two big-endian u64 halves) as text; IPv4-mapped shows as a.b.c.d."""
    v = ((hi & U64_MAX) << 64) | (lo & U64_MAX)
    if v >> 32 == 0xFFFF:
        return str(ipaddress.IPv4Address(v & 0xFFFF_FFFF))
    return str(ipaddress.IPv6Address(v))


def format_value(v) -> str:
    if isinstance(v, Value_Ip):
        return format_ip(v.value.hi, v.value.lo)
    if isinstance(v, (Value_Number, Value_Text)):
        return str(v.value)
    return "?"


def format_bytes(n: int) -> str:
    """Decimal units, one decimal: 5000000 -> '5.0 MB'."""
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        value /= 1000.0
        if value < 1000.0 or unit == "PB":
            return f"{value:.1f} {unit}"
    return f"{n} B"  # not reached


def format_seconds(ms: int) -> str:
    if ms % 1000 == 0:
        return f"{ms // 1000} s"
    return f"{ms / 1000:.1f} s"


def evaluate(window: TimeRange):
    try:
        threshold = config_int(
            "threshold_bytes", DEFAULT_THRESHOLD_BYTES, 0, U64_MAX,
            "a whole number of bytes",
        )
        top = config_int("top", DEFAULT_TOP, 1, MAX_TOP, f"a whole number from 1 to {MAX_TOP}")
    except ConfigError as e:
        raise Err(PluginError_InvalidInput(str(e)))
    filter_text = config.get("filter") or ""

    try:
        groups = flows.aggregate(
            filter_text, window, ["SrcAddr", "DstAddr"], Metric.BYTES, top
        )
    except Err as e:
        raise Err(PluginError_Failed(str(e.value)))

    span = format_seconds(max(0, window.to_ms - window.from_ms))
    alerts = []
    for g in groups:
        if g.bytes < threshold:
            continue
        src = format_value(g.key[0]) if len(g.key) > 0 else "?"
        dst = format_value(g.key[1]) if len(g.key) > 1 else "?"
        alerts.append(
            Alert(
                name="heavy-talker",
                severity=Severity.WARNING,
                summary=f"{src} -> {dst} sent {format_bytes(g.bytes)} in {span}",
                labels=[("src", src), ("dst", dst)],
                time_ms=window.to_ms,
            )
        )
    log.log(
        log.Level.INFO,
        f"heavy-talkers: {len(alerts)} of {len(groups)} top pairs at or above "
        f"{threshold} bytes in [{window.from_ms}, {window.to_ms}]",
    )
    return alerts


class WitWorld(wit_world.WitWorld):
    def evaluate(self, window: TimeRange):
        try:
            return evaluate(window)
        except Err:
            raise
        except Exception as e:  # a bug here must not trap the instance
            raise Err(PluginError_Failed(f"heavy-talkers: internal error: {e!r}"))
