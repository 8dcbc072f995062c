//! The query commands: they talk to a running agent over its HTTP API.

use crate::output;
use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};

/// A request the agent refused as malformed (exit code 2).
#[derive(Debug)]
pub struct BadRequest(pub String);

impl std::fmt::Display for BadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadRequest {}

#[derive(Args, Debug, Clone)]
pub struct Server {
    /// The agent's API.
    #[arg(
        long,
        env = "WEIR_SERVER",
        default_value = "http://127.0.0.1:9977",
        global = true
    )]
    server: String,
    /// The agent's access token, when it has one.
    #[arg(long, env = "WEIR_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
}

impl Server {
    /// Adds the access token to a request.
    fn auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("authorization", format!("Bearer {t}")),
            None => req,
        }
    }
}

#[derive(Args, Debug)]
pub struct FlowsArgs {
    /// Filter, e.g. 'SrcAddr=10.0.0.0/8 and DstPort=443'. See `weir fields`.
    #[arg(default_value = "")]
    filter: String,
    /// Start of the time range: -15m, 2h, now, Unix time, or 2026-01-31T12:00:00Z.
    #[arg(long, default_value = "-1h", allow_hyphen_values = true)]
    from: String,
    /// End of the time range (default: now).
    #[arg(long, allow_hyphen_values = true)]
    to: Option<String>,
    /// Sort field, '-' prefix for descending (e.g. -Bytes).
    #[arg(long, default_value = "-TimeFlowEndMs")]
    sort: String,
    /// Rows to show (at most 10000).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Rows to skip (paging).
    #[arg(long, default_value_t = 0)]
    offset: usize,
    /// Print JSON (one object with `total` and `flows`; with --follow, one flow per line).
    #[arg(long)]
    json: bool,
    /// Keep printing new flows as they are stored, like `hubble observe -f`.
    #[arg(long, short = 'f')]
    follow: bool,
    #[command(flatten)]
    server: Server,
}

#[derive(Args, Debug)]
pub struct TopArgs {
    /// Fields to group by, comma-separated (e.g. SrcAddr,DstAddr or DstPort).
    #[arg(long, short = 'g', default_value = "SrcAddr,DstAddr")]
    group_by: String,
    /// What to rank by: bytes, packets or flows.
    #[arg(long, short = 'm', default_value = "bytes")]
    metric: String,
    /// How many groups.
    #[arg(long, short = 'n', default_value_t = 10)]
    top: usize,
    /// Filter, as for `weir flows`.
    #[arg(default_value = "")]
    filter: String,
    #[arg(long, default_value = "-1h", allow_hyphen_values = true)]
    from: String,
    #[arg(long)]
    to: Option<String>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: Server,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: Server,
}

#[derive(Args, Debug)]
pub struct FieldsArgs {
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: Server,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// GETs a JSON document; API errors become readable messages (with a caret for filters).
pub fn get_json(
    server: &Server,
    path: &str,
    query: &[(&str, &str)],
    filter: Option<&str>,
) -> Result<Value> {
    let url = format!("{}{}", server.server.trim_end_matches('/'), path);
    let mut req = server.auth(agent().get(&url));
    for (k, v) in query {
        req = req.query(*k, *v);
    }
    answer(server, &url, req.call(), filter)
}

/// GETs a file (an incident) as bytes, up to `limit`; API errors as for [`get_json`].
pub fn get_bytes(
    server: &Server,
    path: &str,
    query: &[(&str, &str)],
    filter: Option<&str>,
    limit: u64,
) -> Result<Vec<u8>> {
    let url = format!("{}{}", server.server.trim_end_matches('/'), path);
    let mut req = server.auth(agent().get(&url));
    for (k, v) in query {
        req = req.query(*k, *v);
    }
    let sent = req.call();
    if let Ok(r) = &sent
        && !r.status().is_success()
    {
        // The error body is JSON: let `answer` turn it into a message.
        answer(server, &url, sent, filter)?;
        bail!("agent refused {url}");
    }
    let mut resp = sent.with_context(|| {
        format!(
            "cannot reach the weir agent at {} (is `weir agent` running?)",
            server.server
        )
    })?;
    resp.body_mut()
        .with_config()
        .limit(limit)
        .read_to_vec()
        .with_context(|| format!("reading the answer of {url}"))
}

/// POSTs a JSON body and returns the JSON answer; API errors become readable messages
/// (400: exit code 2).
pub fn post_json(server: &Server, path: &str, body: &Value) -> Result<Value> {
    let url = format!("{}{}", server.server.trim_end_matches('/'), path);
    let sent = server
        .auth(agent().post(&url))
        .header("content-type", "application/json")
        .send(serde_json::to_vec(body)?);
    answer(server, &url, sent, None)
}

/// POSTs raw bytes (a summarizer's snapshot to merge) and returns the JSON answer (errors as
/// for [`post_json`]).
pub fn post_bytes(server: &Server, path: &str, body: &[u8]) -> Result<Value> {
    let url = format!("{}{}", server.server.trim_end_matches('/'), path);
    let sent = server
        .auth(agent().post(&url))
        .header("content-type", "application/octet-stream")
        .send(body);
    answer(server, &url, sent, None)
}

/// PUTs a JSON body and returns the JSON answer (errors as for [`post_json`]).
pub fn put_json(server: &Server, path: &str, body: &Value) -> Result<Value> {
    let url = format!("{}{}", server.server.trim_end_matches('/'), path);
    let sent = server
        .auth(agent().put(&url))
        .header("content-type", "application/json")
        .send(serde_json::to_vec(body)?);
    answer(server, &url, sent, None)
}

/// DELETEs a resource and returns the JSON answer (errors as for [`post_json`]).
pub fn delete_json(server: &Server, path: &str) -> Result<Value> {
    let url = format!("{}{}", server.server.trim_end_matches('/'), path);
    let sent = server.auth(agent().delete(&url)).call();
    answer(server, &url, sent, None)
}

/// The JSON answer of a request; errors become readable messages (a caret under the filter
/// position for bad filters; 400 is a [`BadRequest`], exit code 2).
fn answer(
    server: &Server,
    url: &str,
    sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    filter: Option<&str>,
) -> Result<Value> {
    let mut resp = sent.with_context(|| {
        format!(
            "cannot reach the weir agent at {} (is `weir agent` running?)",
            server.server
        )
    })?;
    let status = resp.status();
    let body: Value = resp
        .body_mut()
        .with_config()
        .limit(512 * 1024 * 1024)
        .read_json()
        .with_context(|| format!("reading the answer of {url}"))?;
    if status.is_success() {
        return Ok(body);
    }
    let err = &body["error"];
    let msg = err["message"]
        .as_str()
        .unwrap_or("request failed")
        .to_string();
    if status.as_u16() == 400 {
        let caret = match (err["parameter"].as_str(), err["position"].as_u64(), filter) {
            (Some("filter"), Some(pos), Some(f)) => {
                let col = f
                    .get(..pos as usize)
                    .map(|s| s.chars().count())
                    .unwrap_or(0);
                format!("\n  {f}\n  {}^", " ".repeat(col))
            }
            _ => String::new(),
        };
        return Err(BadRequest(format!("{msg}{caret}")).into());
    }
    Err(anyhow!("agent answered {status}: {msg}"))
}

pub fn flows(a: FlowsArgs) -> Result<()> {
    if a.follow {
        return follow(&a);
    }
    let (limit, offset) = (a.limit.to_string(), a.offset.to_string());
    let mut q = vec![
        ("filter", a.filter.as_str()),
        ("from", a.from.as_str()),
        ("sort", a.sort.as_str()),
        ("limit", limit.as_str()),
        ("offset", offset.as_str()),
    ];
    if let Some(t) = &a.to {
        q.push(("to", t));
    }
    let v = get_json(&a.server, "/api/v1/flows", &q, Some(&a.filter))?;
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
    } else {
        let flows = v["flows"].as_array().cloned().unwrap_or_default();
        output::flow_table(&mut out, &flows, true)?;
        writeln!(
            out,
            "{} of {} matching flows{}",
            flows.len(),
            v["total"].as_u64().unwrap_or(0),
            if a.offset > 0 {
                format!(" (from row {})", a.offset)
            } else {
                String::new()
            }
        )?;
    }
    Ok(())
}

fn follow(a: &FlowsArgs) -> Result<()> {
    // Check the filter first, so a typo is reported before waiting on the stream.
    get_json(
        &a.server,
        "/api/v1/flows",
        &[("filter", &a.filter), ("limit", "1")],
        Some(&a.filter),
    )?;
    let url = format!(
        "{}/api/v1/flows/follow",
        a.server.server.trim_end_matches('/')
    );
    let resp = a
        .server
        .auth(agent().get(&url))
        .query("filter", &a.filter)
        .call()
        .with_context(|| format!("cannot reach the weir agent at {}", a.server.server))?;
    if !resp.status().is_success() {
        return Err(anyhow!("agent answered {}", resp.status()));
    }
    let reader = BufReader::new(resp.into_body().into_reader());
    let mut out = std::io::stdout().lock();
    let mut header = !a.json;
    for line in reader.lines() {
        let line = line.context("reading the flow stream")?;
        if line.trim().is_empty() {
            continue;
        }
        if a.json {
            writeln!(out, "{line}")?;
        } else {
            let v: Value = serde_json::from_str(&line).context("decoding a flow")?;
            if let Some(n) = v.get("lagged") {
                writeln!(out, "... {n} batches skipped (too slow to keep up)")?;
                continue;
            }
            output::flow_table(&mut out, &[v], header)?;
            header = false;
        }
        out.flush()?;
    }
    Ok(())
}

pub fn top(a: TopArgs) -> Result<()> {
    let top = a.top.to_string();
    let mut q = vec![
        ("group_by", a.group_by.as_str()),
        ("metric", a.metric.as_str()),
        ("top", top.as_str()),
        ("filter", a.filter.as_str()),
        ("from", a.from.as_str()),
    ];
    if let Some(t) = &a.to {
        q.push(("to", t));
    }
    let v = get_json(&a.server, "/api/v1/flows/aggregate", &q, Some(&a.filter))?;
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
    } else {
        output::top_table(&mut out, &v)?;
    }
    Ok(())
}

pub fn status(a: StatusArgs) -> Result<()> {
    let v = get_json(&a.server, "/api/v1/status", &[], None)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
    } else {
        output::status(&mut out, &v)?;
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct FilterArgs {
    #[command(subcommand)]
    action: FilterAction,
    #[command(flatten)]
    server: Server,
}

#[derive(clap::Subcommand, Debug)]
enum FilterAction {
    /// Show the operator's rules, in the order they are tried (plugins granted
    /// capture-control add theirs after them, their `sample` rules after the operator's
    /// sample rules and before the rest: `weir status` lists every rule in force).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Replace the rules, e.g. `weir filter set "accept cidr=10.0.0.0/8" "reject ports=22"`.
    /// Keys: cidr, peer_cidr, proto, ports (80 or 80-90), direction (ingress, egress),
    /// tcp_flags (SYN,RST), drops_only, sampling. The first matching accept or reject rule
    /// decides; with any accept rule, traffic no rule matches is left out. A `sample` rule
    /// decides nothing: the first that matches samples what is kept 1 in its `sampling`
    /// (when that is more than the deciding rule's), e.g. `sample proto=udp ports=5201
    /// sampling=10`; one without `sampling` before it exempts what it matches.
    Set {
        #[arg(required = true, value_name = "RULE")]
        rules: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove every rule (capture everything again).
    Clear {
        #[arg(long)]
        json: bool,
    },
}

fn rule_text(r: &Value) -> String {
    let mut parts = vec![r["action"].as_str().unwrap_or("accept").to_string()];
    for k in ["cidr", "peer_cidr", "proto", "ports", "tcp_flags"] {
        if let Some(v) = r[k].as_str() {
            parts.push(format!("{k}={v}"));
        }
    }
    if let Some(d) = r["direction"].as_str().filter(|d| *d != "any") {
        parts.push(format!("direction={d}"));
    }
    if r["drops_only"].as_bool() == Some(true) {
        parts.push("drops_only".into());
    }
    if let Some(n) = r["sampling"].as_u64().filter(|n| *n > 1) {
        parts.push(format!("sampling={n}"));
    }
    parts.join(" ")
}

pub fn filter(a: FilterArgs) -> Result<()> {
    let (v, json) = match &a.action {
        FilterAction::List { json } => (
            get_json(&a.server, "/api/v1/capture/filters", &[], None)?,
            *json,
        ),
        FilterAction::Set { rules, json } => {
            // Checked here first, so a typo is reported before anything is sent.
            for (i, r) in rules.iter().enumerate() {
                weir_core::capture::FilterRule::parse(r)
                    .map_err(|e| BadRequest(format!("rule {}: {e}", i + 1)))?;
            }
            let body = serde_json::json!({ "rules": rules });
            (
                put_json(&a.server, "/api/v1/capture/filters", &body)?,
                *json,
            )
        }
        FilterAction::Clear { json } => (
            put_json(
                &a.server,
                "/api/v1/capture/filters",
                &serde_json::json!({ "rules": [] }),
            )?,
            *json,
        ),
    };
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
        return Ok(());
    }
    let rules = v["rules"].as_array().map(Vec::as_slice).unwrap_or_default();
    if rules.is_empty() {
        writeln!(out, "no filter rules: every packet is captured")?;
    }
    for (i, r) in rules.iter().enumerate() {
        writeln!(out, "{:>2}. {}", i + 1, rule_text(r))?;
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct AlertsArgs {
    #[command(subcommand)]
    action: Option<AlertsAction>,
    /// JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    server: Server,
}

#[derive(clap::Subcommand, Debug)]
enum AlertsAction {
    /// Pending and firing alerts, and the silences (the default).
    List,
    /// State changes (pending, firing, resolved), newest first.
    History {
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Mute notifications of alerts whose labels match, e.g.
    /// `weir alerts silence interface=eth0 alertname=PacketDrops --for 2h`.
    Silence {
        #[arg(required = true, value_name = "LABEL=VALUE")]
        matchers: Vec<String>,
        #[arg(long = "for", default_value = "1h")]
        duration: String,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Remove a silence by id.
    Unsilence { id: u64 },
    /// Run every alert rule now (instead of at the next interval).
    Evaluate,
}

fn alert_row(a: &Value) -> String {
    let labels: Vec<String> = a["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    let t = match a["state"].as_str() {
        Some("resolved") => a["resolved_ms"].as_u64(),
        Some("firing") => a["fired_ms"].as_u64(),
        _ => a["since_ms"].as_u64(),
    }
    .unwrap_or(0);
    format!(
        "{:<24} {:<9} {:<9} {:<22} {:<18} {}{}  {}",
        weir_core::query::format_ms(t),
        a["state"].as_str().unwrap_or(""),
        a["severity"].as_str().unwrap_or(""),
        a["name"].as_str().unwrap_or(""),
        a["rule"].as_str().unwrap_or(""),
        labels.join(","),
        if a["silenced"] == true {
            " (silenced)"
        } else {
            ""
        },
        a["summary"].as_str().unwrap_or("")
    )
}

pub fn alerts(a: AlertsArgs) -> Result<()> {
    let v = match &a.action {
        None | Some(AlertsAction::List) => get_json(&a.server, "/api/v1/alerts", &[], None)?,
        Some(AlertsAction::History { limit }) => get_json(
            &a.server,
            "/api/v1/alerts/history",
            &[("limit", &limit.to_string())],
            None,
        )?,
        Some(AlertsAction::Silence {
            matchers,
            duration,
            comment,
        }) => {
            let mut m = serde_json::Map::new();
            for x in matchers {
                let (k, v) = x
                    .split_once('=')
                    .ok_or_else(|| BadRequest(format!("matcher '{x}': write it as label=value")))?;
                m.insert(k.to_string(), Value::from(v));
            }
            post_json(
                &a.server,
                "/api/v1/alerts/silences",
                &serde_json::json!({"matchers": m, "duration": duration, "comment": comment}),
            )?
        }
        Some(AlertsAction::Unsilence { id }) => {
            delete_json(&a.server, &format!("/api/v1/alerts/silences/{id}"))?
        }
        Some(AlertsAction::Evaluate) => {
            post_json(&a.server, "/api/v1/alerts/evaluate", &serde_json::json!({}))?
        }
    };
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
        return Ok(());
    }
    let rows = |k: &str| v[k].as_array().cloned().unwrap_or_default();
    match &a.action {
        None | Some(AlertsAction::List) => {
            let active = rows("active");
            if active.is_empty() {
                writeln!(out, "no pending or firing alerts")?;
            }
            for x in &active {
                writeln!(out, "{}", alert_row(x))?;
            }
            for s in rows("silences") {
                writeln!(
                    out,
                    "silence {} until {}: {} {}",
                    s["id"],
                    weir_core::query::format_ms(s["ends_ms"].as_u64().unwrap_or(0)),
                    s["matchers"],
                    s["comment"].as_str().unwrap_or("")
                )?;
            }
            for (rule, e) in v["rule_errors"].as_object().into_iter().flatten() {
                writeln!(out, "rule {rule} failing: {}", e.as_str().unwrap_or(""))?;
            }
            let queued = v["queued_notifications"].as_u64().unwrap_or(0);
            let given_up = v["given_up_notifications"].as_u64().unwrap_or(0);
            if queued + given_up > 0 {
                writeln!(
                    out,
                    "notifications: {queued} waiting for delivery, {given_up} given up"
                )?;
            }
        }
        Some(AlertsAction::History { .. }) => {
            for x in rows("history") {
                writeln!(out, "{}", alert_row(&x))?;
            }
        }
        Some(AlertsAction::Evaluate) => {
            let changed = rows("changed");
            writeln!(out, "{} alert(s) changed state", changed.len())?;
            for x in &changed {
                writeln!(out, "{}", alert_row(x))?;
            }
        }
        Some(AlertsAction::Silence { .. }) => {
            writeln!(out, "silence {} added", v["silence"]["id"])?;
        }
        Some(AlertsAction::Unsilence { id }) => writeln!(out, "silence {id} removed")?,
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The check plugin to run (installed, kind `check`).
    name: String,
    /// Start of the window: -15m, 2h, now, Unix time, or 2026-01-31T12:00:00Z.
    #[arg(long, default_value = "-5m", allow_hyphen_values = true)]
    from: String,
    /// End of the window (default: now).
    #[arg(long, allow_hyphen_values = true)]
    to: Option<String>,
    /// Print the verdict as JSON (`pass`, `summary`, `table`).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: Server,
}

/// `weir check NAME`: runs a check plugin over a window. Ok(true) when it passes; the exit
/// code is 0 on pass, 1 on fail, 2 when the check could not run.
pub fn check(a: CheckArgs) -> Result<bool> {
    use weir_core::query::{now_ms, parse_time};
    let now = now_ms();
    let from = parse_time(&a.from, now).map_err(|e| BadRequest(format!("--from: {e}")))?;
    let to = match &a.to {
        Some(t) => parse_time(t, now).map_err(|e| BadRequest(format!("--to: {e}")))?,
        None => now,
    };
    let v = post_json(
        &a.server,
        &format!("/api/v1/plugins/{}/run", a.name),
        &serde_json::json!({"from_ms": from, "to_ms": to}),
    )?;
    if v["kind"] != "check" {
        return Err(BadRequest(format!(
            "{} is not a check (its kind: {})",
            a.name,
            v["kind"].as_str().unwrap_or("unknown")
        ))
        .into());
    }
    let r = &v["result"];
    let pass = r["pass"]
        .as_bool()
        .context("the check answered no verdict")?;
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, r)?;
        writeln!(out)?;
        return Ok(pass);
    }
    writeln!(
        out,
        "{} {}: {}",
        if pass { "PASS" } else { "FAIL" },
        a.name,
        r["summary"].as_str().unwrap_or("")
    )?;
    let columns: Vec<String> = r["table"]["columns"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c.as_str().unwrap_or("").to_string())
        .collect();
    let rows = r["table"]["rows"].as_array().cloned().unwrap_or_default();
    if !rows.is_empty() {
        writeln!(out, "{}", columns.join("\t"))?;
        for row in rows {
            let cells: Vec<String> = row
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c.as_str().unwrap_or("").escape_debug().to_string())
                .collect();
            writeln!(out, "{}", cells.join("\t"))?;
        }
    }
    Ok(pass)
}

#[derive(Args, Debug)]
pub struct RecordsArgs {
    /// Only these kinds, comma-separated (annotation, ovs-flow, k8s-event, ...).
    #[arg(long)]
    kind: Option<String>,
    /// Only records written by this source (a plugin name, or `agent`).
    #[arg(long)]
    source: Option<String>,
    /// Only records carrying these labels: name=value, comma-separated (all must match).
    #[arg(long)]
    label: Option<String>,
    /// Start of the time range: -15m, 2h, now, Unix time, or 2026-01-31T12:00:00Z.
    #[arg(long, default_value = "-1h", allow_hyphen_values = true)]
    from: String,
    /// End of the time range (default: now).
    #[arg(long, allow_hyphen_values = true)]
    to: Option<String>,
    /// Records after this sequence number (paging: pass the last one shown).
    #[arg(long, default_value_t = 0)]
    after: u64,
    /// Records to show (at most 10000).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Print JSON (`records`, and `next_after` when there may be more).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: Server,
}

/// `weir records`: what the records store keeps (decoded records, events, annotations).
pub fn records(a: RecordsArgs) -> Result<()> {
    let mut q: Vec<(&str, String)> = vec![
        ("from", a.from.clone()),
        ("after", a.after.to_string()),
        ("limit", a.limit.to_string()),
    ];
    for (k, v) in [
        ("to", &a.to),
        ("kind", &a.kind),
        ("source", &a.source),
        ("label", &a.label),
    ] {
        if let Some(v) = v {
            q.push((k, v.clone()));
        }
    }
    let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let v = get_json(&a.server, "/api/v1/records", &q, None)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
        return Ok(());
    }
    let rows = v["records"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        writeln!(out, "no records")?;
    }
    for r in &rows {
        let labels: Vec<String> = r["labels"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| {
                format!(
                    "{}={}",
                    l[0].as_str().unwrap_or(""),
                    l[1].as_str().unwrap_or("")
                )
            })
            .collect();
        writeln!(
            out,
            "{:>8} {} {:<12} {:<16} {}{}",
            r["seq"],
            weir_core::query::format_ms(r["time_ms"].as_u64().unwrap_or(0)),
            r["kind"].as_str().unwrap_or(""),
            r["source"].as_str().unwrap_or(""),
            r["text"].as_str().unwrap_or("").escape_debug(),
            if labels.is_empty() {
                String::new()
            } else {
                format!(" {{{}}}", labels.join(", "))
            }
        )?;
    }
    if let Some(n) = v["next_after"].as_u64() {
        writeln!(out, "more: weir records --after {n}")?;
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct TraceArgs {
    /// The trace id: 32 hex digits, as OpenTelemetry prints it.
    trace_id: String,
    /// Print JSON (`spans` each with `flows`, and `logs`).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: Server,
}

/// `weir trace ID`: a trace's spans received over OTLP, in start order, each with the
/// conversations of its connection (bytes, packets, RTT, drops), and the trace's log lines.
pub fn trace(a: TraceArgs) -> Result<()> {
    let v = get_json(
        &a.server,
        &format!("/api/v1/traces/{}", a.trace_id),
        &[],
        None,
    )?;
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
        return Ok(());
    }
    for s in v["spans"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "{} {:>9}us {:<8} {:<7} {} {}{}",
            weir_core::query::format_ms(s["start_ms"].as_u64().unwrap_or(0)),
            s["duration_us"],
            s["kind"].as_str().unwrap_or(""),
            s["status"].as_str().unwrap_or(""),
            s["service"].as_str().unwrap_or(""),
            s["name"].as_str().unwrap_or("").escape_debug(),
            s["peer"]
                .as_str()
                .map(|p| format!(" -> {p}"))
                .unwrap_or_default(),
        )?;
        let flows = &s["flows"];
        let matched = flows["matched"].as_str().unwrap_or("");
        if matched == "no-peer" {
            continue;
        }
        let convs = flows["conversations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if convs.is_empty() {
            writeln!(out, "    no stored flows ({matched})")?;
        }
        for c in convs {
            let rtt = c["rtt_ns"].as_u64().unwrap_or(0);
            writeln!(
                out,
                "    {matched}: {} -> {} {} bytes {} packets{}{}",
                c["client"].as_str().unwrap_or(""),
                c["server"].as_str().unwrap_or(""),
                c["bytes"],
                c["packets"],
                if rtt > 0 {
                    format!(" rtt {:.2} ms", rtt as f64 / 1e6)
                } else {
                    String::new()
                },
                match c["drop_packets"].as_u64().unwrap_or(0) {
                    0 => String::new(),
                    n => format!(" {n} dropped ({})", c["drop_cause"].as_str().unwrap_or("")),
                },
            )?;
        }
    }
    for l in v["logs"].as_array().into_iter().flatten() {
        let sev = l["labels"]
            .as_array()
            .and_then(|ls| ls.iter().find(|p| p[0] == "severity"))
            .and_then(|p| p[1].as_str())
            .unwrap_or("");
        writeln!(
            out,
            "{} log {:<5} {}",
            weir_core::query::format_ms(l["time_ms"].as_u64().unwrap_or(0)),
            sev,
            l["text"].as_str().unwrap_or("").escape_debug()
        )?;
    }
    Ok(())
}

pub fn fields(a: FieldsArgs) -> Result<()> {
    // The schema is compiled in; no agent needed.
    let _ = &a.server;
    let mut out = std::io::stdout().lock();
    if a.json {
        let list: Vec<Value> = weir_core::schema::FIELDS
            .iter()
            .map(|f| serde_json::json!({ "name": f.name, "doc": f.doc }))
            .collect();
        serde_json::to_writer_pretty(&mut out, &list)?;
        writeln!(out)?;
        return Ok(());
    }
    for f in weir_core::schema::FIELDS {
        writeln!(out, "{:<16} {}", f.name, f.doc)?;
    }
    for (n, a, b) in weir_core::schema::EITHER_SIDE {
        writeln!(out, "{n:<16} either {a} or {b} (filters only)")?;
    }
    writeln!(
        out,
        "\nfilters: Field=value, != < <= > >=, CIDRs (SrcAddr=10.0.0.0/8), ranges (DstPort=8000-9000),\n\
         names (Proto=tcp, IfDirection=egress, Flags=SYN,ACK), and/or/not, parentheses"
    )?;
    Ok(())
}
