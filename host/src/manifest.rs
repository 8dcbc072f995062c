//! The plugin manifest: from `plugin.toml` beside the component, or embedded in it as a
//! top-level custom section named `weir-manifest` (so one file travels).

use crate::HostError;
use crate::capability::Capability;
use serde::Deserialize;

/// Name of the custom section holding an embedded manifest (TOML text).
pub const SECTION: &str = "weir-manifest";

/// The WIT package versions this host loads plugins of.
pub const SUPPORTED_WIT: &[&str] = &["0.1"];

/// A plugin kind: the world it is built against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Visualization,
    AlertRule,
    FlowProcessor,
    Correlator,
    Decoder,
    Summarizer,
    Check,
    Exporter,
}

impl Kind {
    pub fn world(self) -> &'static str {
        match self {
            Kind::Visualization => "visualization",
            Kind::AlertRule => "alert-rule",
            Kind::FlowProcessor => "flow-processor",
            Kind::Correlator => "correlator",
            Kind::Decoder => "decoder",
            Kind::Summarizer => "summarizer",
            Kind::Check => "check",
            Kind::Exporter => "exporter",
        }
    }
}

/// Limits a plugin asks for (the operator may lower them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory cap in MiB.
    pub memory_mb: u32,
    /// CPU deadline per call in ms.
    pub timeout_ms: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: 16,
            timeout_ms: 1000,
        }
    }
}

/// What a plugin declares about itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub kind: Kind,
    /// The `weir:plugin` version it was built against, e.g. "0.1".
    pub wit: String,
    #[serde(default)]
    pub description: String,
    /// Capabilities it asks for.
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    #[serde(default)]
    pub limits: Limits,
    /// A summarizer's time windows (ignored for other kinds).
    #[serde(default)]
    pub summarizer: Windowing,
    /// An exporter's feed (ignored for other kinds).
    #[serde(default, skip_serializing_if = "ExporterFeed::is_default")]
    pub exporter: ExporterFeed,
    /// What the scoped capabilities it asks for should reach (`[scopes]`, e.g.
    /// `outbound-http = ["prometheus.monitoring:9090"]`); the operator grants them or not.
    #[serde(default)]
    pub scopes: crate::scope::Scopes,
}

/// How a summarizer's state is cut in time: a new window every `window_secs` (0: one window
/// forever), the last `windows` kept; queries and snapshots cover every kept window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Windowing {
    #[serde(default)]
    pub window_secs: u64,
    #[serde(default = "one")]
    pub windows: u32,
}

fn one() -> u32 {
    1
}

impl Windowing {
    /// Checks the bounds (`origin` names where it came from: a manifest, `--window`...).
    pub fn check(&self, origin: &str) -> Result<(), HostError> {
        if self.windows == 0 || self.windows > MAX_WINDOWS {
            return Err(HostError::Manifest(format!(
                "{origin}: summarizer.windows must be 1-{MAX_WINDOWS}, got {}",
                self.windows
            )));
        }
        if self.window_secs > 7 * 86_400 || (self.window_secs > 0 && self.window_secs < 10) {
            return Err(HostError::Manifest(format!(
                "{origin}: summarizer.window_secs must be 0 (one window) or 10-604800, got {}",
                self.window_secs
            )));
        }
        Ok(())
    }
}

impl Default for Windowing {
    fn default() -> Self {
        Windowing {
            window_secs: 0,
            windows: 1,
        }
    }
}

/// What the host feeds an exporter (`[exporter]` in plugin.toml).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExporterFeed {
    /// Only flows matching this filter (the query language); empty: every flow.
    pub filter: String,
    /// Flows per `export` call, 1-100000.
    pub batch_flows: u32,
    /// Batches exported at once, 1-4 (each call is one of the plugin's calls at once, 4 at
    /// most by default). More than one overlaps reading and encoding the next batch with the
    /// delivery of the last; the cursor still moves in order, past a batch only when it and
    /// every batch before it are delivered, and a failure sends the batches after it again.
    pub in_flight: u32,
    /// Where a new install starts: `now` (flows stored from then on) or `oldest` (all history
    /// the store still holds).
    pub start: String,
    /// What its payloads are, as a media type: HTTP sinks send it as `Content-Type` (other
    /// transports carry bytes only). E.g. `application/x-protobuf` for OTLP.
    pub media_type: String,
}

impl ExporterFeed {
    fn is_default(&self) -> bool {
        *self == ExporterFeed::default()
    }
}

impl Default for ExporterFeed {
    fn default() -> Self {
        ExporterFeed {
            filter: String::new(),
            batch_flows: 1000,
            in_flight: 1,
            start: "now".into(),
            media_type: DEFAULT_MEDIA_TYPE.into(),
        }
    }
}

/// Most batches an exporter may have in flight (`[exporter] in_flight`): the calls a plugin
/// may have at once by default ([`crate::SandboxPolicy::max_calls_per_plugin`]).
pub const MAX_IN_FLIGHT: u32 = 4;

/// What an exporter's payloads are unless its manifest says (`[exporter] media_type`).
pub const DEFAULT_MEDIA_TYPE: &str = "application/x-ndjson";

/// A media type as RFC 6838 spells one: `type/subtype`, restricted-name characters, no
/// parameters, at most 127 bytes.
fn valid_media_type(m: &str) -> bool {
    let name = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    m.len() <= 127 && m.split_once('/').is_some_and(|(t, s)| name(t) && name(s))
}

/// Most windows a summarizer may keep.
pub const MAX_WINDOWS: u32 = 1440;

impl Manifest {
    /// Parses and checks a manifest; errors name the field.
    pub fn parse(text: &str, origin: &str) -> Result<Manifest, HostError> {
        let m: Manifest = toml::from_str(text)
            .map_err(|e| HostError::Manifest(format!("{origin}: {}", e.to_string().trim())))?;
        if weir_core::plugins::check_plugin_name(&m.name).is_err() {
            return Err(HostError::Manifest(format!(
                "{origin}: name '{}' must be {}",
                m.name.escape_debug(),
                weir_core::plugins::PLUGIN_NAME_RULE
            )));
        }
        if !SUPPORTED_WIT.contains(&m.wit.as_str()) {
            return Err(HostError::Incompatible(format!(
                "{origin}: plugin '{}' is built against weir:plugin {}, this host supports {}",
                m.name,
                m.wit,
                SUPPORTED_WIT.join(", ")
            )));
        }
        if m.limits.memory_mb == 0 || m.limits.memory_mb > 4096 {
            return Err(HostError::Manifest(format!(
                "{origin}: limits.memory_mb must be 1-4096, got {}",
                m.limits.memory_mb
            )));
        }
        if m.limits.timeout_ms == 0 || m.limits.timeout_ms > 600_000 {
            return Err(HostError::Manifest(format!(
                "{origin}: limits.timeout_ms must be 1-600000, got {}",
                m.limits.timeout_ms
            )));
        }
        crate::scope::check(&m.scopes, origin)?;
        if let Some(c) = m.scopes.keys().find(|c| !m.capabilities.contains(c)) {
            return Err(HostError::Manifest(format!(
                "{origin}: [scopes] names {c}, which `capabilities` does not ask for"
            )));
        }
        m.summarizer.check(origin)?;
        let e = &m.exporter;
        if e.batch_flows == 0 || e.batch_flows > 100_000 {
            return Err(HostError::Manifest(format!(
                "{origin}: exporter.batch_flows must be 1-100000, got {}",
                e.batch_flows
            )));
        }
        if e.in_flight == 0 || e.in_flight > MAX_IN_FLIGHT {
            return Err(HostError::Manifest(format!(
                "{origin}: exporter.in_flight must be 1-{MAX_IN_FLIGHT}, got {}",
                e.in_flight
            )));
        }
        if e.start != "now" && e.start != "oldest" {
            return Err(HostError::Manifest(format!(
                "{origin}: exporter.start must be \"now\" or \"oldest\", got {:?}",
                e.start
            )));
        }
        if !valid_media_type(&e.media_type) {
            return Err(HostError::Manifest(format!(
                "{origin}: exporter.media_type must be a media type like \"application/x-protobuf\" (type/subtype, no parameters), got {:?}",
                e.media_type
            )));
        }
        if let Err(err) = weir_core::query::parse(&e.filter) {
            return Err(HostError::Manifest(format!(
                "{origin}: exporter.filter: {err}"
            )));
        }
        Ok(m)
    }
}

/// Whether the bytes look like a WebAssembly component (not a core module).
pub fn is_component(wasm: &[u8]) -> bool {
    crate::wasm_bytes::has_magic(wasm) && wasm[6..8] == [1, 0] && wasm[4..6] != [1, 0]
}

/// The data of a top-level custom section, walking only the outer component's sections.
pub fn custom_section<'a>(wasm: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, HostError> {
    if !crate::wasm_bytes::has_magic(wasm) {
        return Err(HostError::Malformed(
            "not a WebAssembly file (bad magic)".into(),
        ));
    }
    for section in crate::wasm_bytes::sections(wasm) {
        let s = section.map_err(|at| {
            HostError::Malformed(format!("section at byte {at} runs past the end"))
        })?;
        let custom = s
            .custom()
            .map_err(|at| HostError::Malformed(format!("bad custom section name at byte {at}")))?;
        if let Some((found, data)) = custom
            && found == name.as_bytes()
        {
            return Ok(Some(data.rest()));
        }
    }
    Ok(None)
}

/// Appends a top-level custom section (how `weir plugin pack` embeds a manifest).
pub fn append_custom_section(wasm: &mut Vec<u8>, name: &str, data: &[u8]) {
    fn put_uleb(out: &mut Vec<u8>, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    let mut body = Vec::with_capacity(name.len() + data.len() + 5);
    put_uleb(&mut body, name.len() as u64);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(data);
    wasm.push(0);
    put_uleb(wasm, body.len() as u64);
    wasm.extend_from_slice(&body);
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "name = \"top-talkers\"\nversion = \"1.0.0\"\nkind = \"visualization\"\nwit = \"0.1\"\ncapabilities = [\"flows\", \"log\"]\n[limits]\nmemory_mb = 32\n";

    #[test]
    fn parses_and_checks() {
        let m = Manifest::parse(GOOD, "plugin.toml").unwrap();
        assert_eq!(m.kind, Kind::Visualization);
        assert_eq!(m.capabilities, vec![Capability::Flows, Capability::Log]);
        assert_eq!(m.limits.memory_mb, 32);
        assert_eq!(m.limits.timeout_ms, 1000);
        let e = Manifest::parse(&GOOD.replace("\"0.1\"", "\"1.0\""), "x").unwrap_err();
        assert!(e.to_string().contains("this host supports 0.1"), "{e}");
        let e = Manifest::parse(&GOOD.replace("flows", "network"), "x").unwrap_err();
        assert!(e.to_string().contains("unknown variant `network`"), "{e}");
        let e = Manifest::parse(&GOOD.replace("top-talkers", "Top Talkers"), "x").unwrap_err();
        assert!(e.to_string().contains("name 'Top Talkers'"), "{e}");
        let e = Manifest::parse(&GOOD.replace("memory_mb = 32", "memory_mb = 0"), "x").unwrap_err();
        assert!(e.to_string().contains("limits.memory_mb"), "{e}");
        let e = Manifest::parse("name = \"x\"", "plugin.toml").unwrap_err();
        assert!(
            e.to_string().starts_with("invalid manifest: plugin.toml:"),
            "{e}"
        );
    }

    /// An exporter's manifest with these `[exporter]` lines.
    fn exporter(feed: &str) -> String {
        format!(
            "name = \"x\"\nversion = \"1.0.0\"\nkind = \"exporter\"\nwit = \"0.1\"\ncapabilities = [\"sink\"]\n[exporter]\n{feed}\n"
        )
    }

    #[test]
    fn exporter_media_types_are_checked() {
        let ex = |m: &str| exporter(&format!("media_type = \"{m}\""));
        let m = Manifest::parse(&ex("application/x-protobuf"), "x").unwrap();
        assert_eq!(m.exporter.media_type, "application/x-protobuf");
        let m = Manifest::parse(GOOD, "x").unwrap();
        assert_eq!(m.exporter.media_type, DEFAULT_MEDIA_TYPE);
        for bad in [
            "protobuf",
            "application/",
            "text/plain; charset=utf-8",
            "a/b\\r\\nx-evil: 1",
        ] {
            let e = Manifest::parse(&ex(bad), "plugin.toml").unwrap_err();
            assert!(
                e.to_string()
                    .contains("plugin.toml: exporter.media_type must be a media type"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn exporter_batches_and_batches_in_flight_are_bounded() {
        let ex = exporter;
        let m = Manifest::parse(&ex("batch_flows = 100000\nin_flight = 4"), "x").unwrap();
        assert_eq!((m.exporter.batch_flows, m.exporter.in_flight), (100_000, 4));
        assert_eq!(Manifest::parse(GOOD, "x").unwrap().exporter.in_flight, 1);
        for (bad, says) in [
            (
                "batch_flows = 0",
                "exporter.batch_flows must be 1-100000, got 0",
            ),
            (
                "batch_flows = 100001",
                "exporter.batch_flows must be 1-100000, got 100001",
            ),
            ("in_flight = 0", "exporter.in_flight must be 1-4, got 0"),
            ("in_flight = 5", "exporter.in_flight must be 1-4, got 5"),
        ] {
            let e = Manifest::parse(&ex(bad), "plugin.toml").unwrap_err();
            assert!(
                e.to_string().contains(&format!("plugin.toml: {says}")),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn custom_sections_round_trip() {
        let mut wasm = b"\0asm\x0d\x00\x01\x00".to_vec();
        append_custom_section(&mut wasm, "other", b"zz");
        append_custom_section(&mut wasm, SECTION, GOOD.as_bytes());
        assert!(is_component(&wasm));
        assert_eq!(
            custom_section(&wasm, SECTION).unwrap(),
            Some(GOOD.as_bytes())
        );
        assert_eq!(custom_section(&wasm, "nope").unwrap(), None);
        assert!(custom_section(b"junk", SECTION).is_err());
        let mut cut = wasm.clone();
        cut.truncate(wasm.len() - 3);
        assert!(custom_section(&cut, SECTION).is_err());
    }
}
