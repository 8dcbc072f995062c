//! The summary-exchange port: where agents leave their summarizers' windows and where the
//! cluster view (`weir server`) gathers them, so one summary answers for every node.
//!
//! An agent publishes each kept window of each summarizer (its snapshot, in the plugin's own
//! format: DataSketches images for the bundled `edge-summary`) under its node name, again
//! whenever the window changed; the exchange keeps the latest copy per node, plugin and
//! window. The server gathers every node's copies of the windows it keeps and merges them
//! through the same plugin. Publishing twice is harmless (the latest copy replaces the
//! earlier one), so a publisher retries whatever failed. The ClickHouse adapter
//! (`weir-clickhouse`, table `summaries`) implements it.

/// One node's copy of one summarizer window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedWindow {
    /// The node that summarized it (`weir agent --node`).
    pub node: String,
    /// The summarizer plugin's name.
    pub plugin: String,
    /// When the window started (ms since the epoch; 0 for a single endless window).
    pub start_ms: u64,
    /// The window's length in seconds (the plugin's `[summarizer] window_secs`; 0: endless).
    /// Only windows of the same length merge.
    pub window_secs: u64,
    /// The snapshot, as the plugin's `snapshot` returns it.
    pub snapshot: Vec<u8>,
}

/// Why publishing or gathering failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The exchange could not be reached or refused the request (its own message).
    #[error("summary exchange {0}")]
    Backend(String),
    /// An answer that is not what was asked for.
    #[error("summary exchange: unexpected answer: {0}")]
    Decode(String),
}

/// Where summarizer windows of many agents meet.
pub trait SummaryExchange: Send + Sync {
    /// Stores these windows (each replacing the same node's earlier copy of it).
    fn publish(&self, windows: &[PublishedWindow]) -> Result<(), ExchangeError>;

    /// The latest copy of every node's windows of `plugin` that are `window_secs` long and
    /// start at or after `since_ms`.
    fn gather(
        &self,
        plugin: &str,
        window_secs: u64,
        since_ms: u64,
    ) -> Result<Vec<PublishedWindow>, ExchangeError>;

    /// How many copies [`SummaryExchange::gather`] would read with the same arguments, and
    /// when the newest was published: cheap, so a gatherer downloads only what changed.
    fn stamp(
        &self,
        plugin: &str,
        window_secs: u64,
        since_ms: u64,
    ) -> Result<(u64, u64), ExchangeError>;

    /// Where the windows are, for status and logs.
    fn describe(&self) -> String;
}

/// What a publisher or gatherer did last, for `GET /api/v1/status` (`summary_exchange`).
#[derive(Debug)]
pub struct ExchangeStatus {
    state: std::sync::Mutex<ExchangeState>,
}

/// One exchange's state.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExchangeState {
    /// `publish` (an agent) or `gather` (`weir server`).
    pub role: &'static str,
    /// Where the windows go or come from ([`SummaryExchange::describe`]).
    pub target: String,
    /// How often it publishes or gathers (ms).
    pub every_ms: u64,
    /// When it last succeeded (ms since the epoch).
    pub last_ok_ms: Option<u64>,
    /// The last failure's message, until the next success.
    pub last_error: Option<String>,
    /// Failures in a row.
    pub failures: u64,
    /// Windows published since start (publish), or merged at the last gather (gather).
    pub windows: u64,
    /// Nodes whose windows the last gather merged (gather; 0 when publishing).
    pub nodes: u64,
}

impl ExchangeStatus {
    pub fn new(role: &'static str, target: String, every_ms: u64) -> ExchangeStatus {
        ExchangeStatus {
            state: std::sync::Mutex::new(ExchangeState {
                role,
                target,
                every_ms,
                last_ok_ms: None,
                last_error: None,
                failures: 0,
                windows: 0,
                nodes: 0,
            }),
        }
    }

    /// Changes the state (a poisoned lock is taken over: the state is plain counters).
    pub fn update(&self, f: impl FnOnce(&mut ExchangeState)) {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn state(&self) -> ExchangeState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn status(&self) -> serde_json::Value {
        serde_json::to_value(self.state()).unwrap_or(serde_json::Value::Null)
    }
}
