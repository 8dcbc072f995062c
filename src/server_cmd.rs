//! `weir server --clickhouse URL`: the cluster view. Creates or migrates weir's schema in
//! ClickHouse (`weir-clickhouse`), then serves the agent's web UI and API with the flow
//! listing, aggregation and time series read from ClickHouse, over every agent that writes
//! into it (the bundled `clickhouse-export` plugin). Runs as an agent without capture and
//! without imports, keeping its own state in its own data directory; its plugins' `flows`
//! capability reads ClickHouse too, so visualizations and alert rules see the whole cluster,
//! and its summarizers merge the windows agents publish (`weir agent --publish-summaries`).

use crate::agent::AgentArgs;
use anyhow::{Context, Result};
use clap::{Args, Parser};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use weir_clickhouse::ClickHouse;

/// The ClickHouse the flow API reads (shared with the agent's state).
#[derive(Clone)]
pub struct Cluster(pub Arc<ClickHouse>);

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&weir_core::flowquery::FlowQuery::describe(self.0.as_ref()))
    }
}

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// ClickHouse's HTTP interface the agents write into, e.g. http://clickhouse:8123
    /// (credentials as http://user:password@host:8123).
    #[arg(
        long,
        env = "WEIR_CLICKHOUSE",
        value_name = "URL",
        hide_env_values = true
    )]
    clickhouse: String,
    /// The database weir's tables are in (created when missing).
    #[arg(long, default_value = "weir")]
    database: String,
    /// Address of the web UI and API. Beyond loopback an access token is required.
    #[arg(long, env = "WEIR_LISTEN", default_value = "127.0.0.1:9978")]
    listen: SocketAddr,
    /// The server's own state (records, alerts). Default: the agent's default with
    /// `-server` appended (/var/lib/weir-server as root).
    #[arg(long, env = "WEIR_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// File holding the access token API clients must send (as `weir agent --token-file`).
    #[arg(long, env = "WEIR_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Also take agents' flows through Kafka: ClickHouse's Kafka engine reads this topic
    /// (`kafka://HOST:PORT[,HOST:PORT]/TOPIC`, the URL agents give `--sink`), where agents'
    /// `ndjson-export` writes every field. ClickHouse needs a librdkafka that talks to the
    /// brokers; its `<kafka>` config section takes credentials and `auto_offset_reset`.
    #[arg(long, value_name = "URL")]
    kafka: Option<String>,
    /// The consumer group ClickHouse reads --kafka's topic as.
    #[arg(long, default_value = "weir-clickhouse", value_name = "NAME")]
    kafka_group: String,
    /// How often the agents' summarizer windows (published with `weir agent
    /// --publish-summaries`) are gathered and merged for the summarizers installed here.
    #[arg(long, default_value = "5s", value_parser = crate::units::duration)]
    summaries_every: std::time::Duration,
    /// Leave out `flows_addr`, which holds each flow again by its source and by its
    /// destination address so that a listing filtered by an address reads only that
    /// address's rows (under 0.12 s over 100 M flows where a scan takes 2.5-4 s): without
    /// it ClickHouse takes inserts made inside it ~1.5x faster on two cores (an agent's feed
    /// the same) and needs about half the disk (docs/PERFORMANCE.md), and such listings scan
    /// the address columns of every flow in their range. Given where the table exists,
    /// drops it; a later migration without this flag makes it again.
    #[arg(long)]
    no_address_table: bool,
    /// Create or migrate the schema, print what agents need, and exit.
    #[arg(long)]
    migrate_only: bool,
    /// Output of --migrate-only as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Parser)]
struct AsAgent {
    #[command(flatten)]
    agent: AgentArgs,
}

pub fn run(a: ServerArgs) -> Result<()> {
    let ch = ClickHouse::new(&a.clickhouse, &a.database)?.address_table(!a.no_address_table);
    let m = ch
        .migrate()
        .context("creating or migrating weir's schema in ClickHouse")?;
    let kafka = match &a.kafka {
        Some(url) => {
            let k = weir_clickhouse::schema::KafkaSource::parse(url, &a.kafka_group)
                .map_err(|e| anyhow::anyhow!("--kafka {}: {e}", weir_core::sink::redact(url)))?;
            let made = ch
                .migrate_kafka(&k)
                .context("creating ClickHouse's Kafka table (flows_kafka)")?;
            // What agents run to write there: every field, as the ingest table has them.
            let fields: Vec<&str> = weir_core::schema::FIELDS.iter().map(|f| f.name).collect();
            Some(serde_json::json!({
                "topic": k.topic,
                "group": k.group,
                "created": made,
                "agent_sink": format!("--sink 'kafka={url}'"),
                "agent_plugin": format!(
                    "weir plugin install bundled:ndjson-export --config sink=kafka --config fields={}",
                    fields.join(",")
                ),
            }))
        }
        None => None,
    };
    let insert = ch.insert_url();
    // Agents send their inserts gzip-compressed (RowBinary rows shrink about fourfold).
    let sink_url = ch.sink_url();
    let sink = format!("--sink 'clickhouse={sink_url}'");
    let plugin = "weir plugin install bundled:clickhouse-export --config sink=clickhouse";
    // Summaries: agents publish their summarizer windows; the server merges them.
    let summaries = format!(
        "--publish-summaries {}{}",
        a.clickhouse,
        if a.database == "weir" {
            String::new()
        } else {
            format!(" --publish-summaries-database {}", a.database)
        }
    );
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "schema": {"from": m.from, "to": m.to, "added_columns": m.added},
                "database": a.database,
                "insert_url": insert,
                "sink_url": sink_url,
                "agent_sink": sink,
                "agent_plugin": plugin,
                "agent_summaries": summaries,
                "kafka": kafka,
            })
        );
    } else {
        let was = if m.from == 0 {
            "created".to_string()
        } else if m.from == m.to && m.added.is_empty() {
            "up to date".to_string()
        } else {
            format!("migrated from {}", m.from)
        };
        eprintln!(
            "weir: ClickHouse schema {} (version {}{})",
            was,
            m.to,
            if m.added.is_empty() {
                String::new()
            } else {
                format!(", columns added: {}", m.added.join(", "))
            }
        );
        eprintln!(
            "weir: agents write into it with\n  weir agent --node NODE_NAME {sink} ...\n  {plugin}\n\
             weir: and publish their summaries (merged here for the summarizers installed here) with\n  \
             weir agent ... {summaries}"
        );
        if let Some(k) = &kafka {
            eprintln!(
                "weir: ClickHouse reads topic {} ({}); agents write there with\n  weir agent --node NODE_NAME {} ...\n  {}",
                k["topic"].as_str().unwrap_or(""),
                if k["created"] == true {
                    "table flows_kafka created"
                } else {
                    "flows_kafka up to date"
                },
                k["agent_sink"].as_str().unwrap_or(""),
                k["agent_plugin"].as_str().unwrap_or(""),
            );
        }
    }
    if a.migrate_only {
        return Ok(());
    }
    let data_dir = a.data_dir.unwrap_or_else(|| {
        let mut d = crate::agent::default_data_dir().into_os_string();
        d.push("-server");
        PathBuf::from(d)
    });
    let mut argv: Vec<String> = vec![
        "weir-server".into(),
        "--no-capture".into(),
        "--listen".into(),
        a.listen.to_string(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--summaries-every".into(),
        format!("{}ms", a.summaries_every.as_millis()),
    ];
    if let Some(t) = &a.token_file {
        argv.push("--token-file".into());
        argv.push(t.display().to_string());
    }
    let mut agent = AsAgent::try_parse_from(argv)
        .context("the server's own settings")?
        .agent;
    agent.cluster = Some(Cluster(Arc::new(ch)));
    // The server ingests nothing: NODE_NAME in its pod names no flow of its own.
    agent.node = None;
    crate::agent::run(agent)
}
