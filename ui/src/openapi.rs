//! The /api/v1 surface described once, served as OpenAPI 3.1 at `GET /api/v1/openapi.json`.
//!
//! [`OPS`] lists every operation: its method and path, what it does, the query parameters it
//! takes (the very lists its handler reads the query through, so a parameter cannot be taken
//! without being described), its body, its answer and the errors it can give. Every error is
//! the one [`crate::error::ApiError`] body. Answers are named schemas in
//! `openapi/components.json` (written from the handlers and the structs they serialize), and
//! [`LINKS`] say which answer's values lead to which operation.
//!
//! Checked four ways: the router tests check that [`OPS`] and the router's routes are the
//! same set, that every `$ref` and link resolves, and that every GET answers as described on
//! a live router; every end-to-end test checks each /api/v1 answer it gets against the
//! agent's own description (`weir_ui::schema_check`); CI runs Schemathesis against a live
//! agent with this description (`scripts/api-fuzz.sh`): no 5xx, every answer as described.

use crate::handlers::{alerts, flows, incident, ovs, plugins, records, timeline};
use crate::params::{Param, Schema};
use serde_json::{Map, Value, json};

/// What an operation takes as its body.
pub struct Body {
    /// Media types accepted.
    pub media: &'static [&'static str],
    /// Its JSON Schema (as JSON text), for JSON bodies; other media are bytes.
    pub schema: &'static str,
    pub doc: &'static str,
    pub required: bool,
}

/// What a successful answer carries.
pub struct Answer {
    pub status: u16,
    pub media: &'static str,
    /// JSON Schema as JSON text (`{}` for a byte stream).
    pub schema: &'static str,
    pub doc: &'static str,
}

/// One operation of the API.
pub struct Op {
    pub method: &'static str,
    /// Under /api/v1, with `{name}` for path parameters.
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub params: &'static [Param],
    pub body: Option<Body>,
    pub answer: Answer,
    /// Errors beside the ones every operation can give (401, 408, 429), the 400 of a
    /// parameter or body, the 413 of a body and the 403 of a change.
    pub errors: &'static [u16],
}

const NONE: &[Param] = &[];

/// An object with these top-level members (each any JSON).
macro_rules! object {
    ($($k:literal),*) => {
        concat!(r#"{"type":"object","required":["#, object!(@list $($k),*), "]}")
    };
    (@list) => { "" };
    (@list $first:literal $(, $k:literal)*) => {
        concat!("\"", $first, "\"" $(, ",\"", $k, "\"")*)
    };
}

/// An answer's schema in `openapi/components.json`, by its name there.
macro_rules! component {
    ($name:literal) => {
        concat!(r##"{"$ref":"#/components/schemas/"##, $name, "\"}")
    };
}

/// The named schemas of answers (and of what they hold), as JSON: `components.schemas` of the
/// document. Written from the handlers and the structs they serialize; the router tests check
/// live answers against them, and CI's Schemathesis run every answer it gets.
const COMPONENTS: &str = include_str!("openapi/components.json");

const fn json_ok(schema: &'static str, doc: &'static str) -> Answer {
    Answer {
        status: 200,
        media: "application/json",
        schema,
        doc,
    }
}

const fn json_body(schema: &'static str, doc: &'static str) -> Option<Body> {
    Some(Body {
        media: &["application/json"],
        schema,
        doc,
        required: true,
    })
}

const FILE_LIST: &str = r#"{"type":"array","items":{"type":"object","required":["name","text"],"additionalProperties":false,"properties":{"name":{"type":"string"},"text":{"type":"string","description":"Kubernetes YAML or JSON: NetworkPolicies, Namespaces, Pods"}}}}"#;

/// Every operation under /api/v1.
pub const OPS: &[Op] = &[
    Op {
        method: "get",
        path: "/flows",
        tag: "flows",
        summary: "List stored flows, filtered, sorted and paged.",
        params: flows::LIST,
        body: None,
        answer: json_ok(
            r##"{"type":"object","required":["flows","total"],"additionalProperties":false,"properties":{"total":{"type":"integer","minimum":0},"flows":{"type":"array","items":{"$ref":"#/components/schemas/Flow"}}}}"##,
            "A page of flows and how many matched.",
        ),
        errors: &[503],
    },
    Op {
        method: "post",
        path: "/flows",
        tag: "flows",
        summary: "Import flows (a JSON array or newline-delimited JSON); answered once durable.",
        params: NONE,
        body: Some(Body {
            media: &["application/json", "application/x-ndjson"],
            schema: r##"{"anyOf":[{"type":"array","items":{"$ref":"#/components/schemas/Flow"}},{"$ref":"#/components/schemas/Flow"}],"description":"Flows (or one flow); absent fields are zero or empty"}"##,
            doc: "Flows with the field names of GET /api/v1/fields (an empty body imports none).",
            required: false,
        }),
        answer: json_ok(component!("Accepted"), "How many flows were stored."),
        errors: &[503],
    },
    Op {
        method: "get",
        path: "/flows/aggregate",
        tag: "flows",
        summary: "Rank groups of flows (top-N by a metric), with the rest summed.",
        params: flows::AGGREGATE,
        body: None,
        answer: json_ok(
            r##"{"type":"object","required":["group_by","metric","groups","others","total","group_count"],"additionalProperties":false,"properties":{"group_by":{"type":"array","items":{"type":"string"}},"metric":{"$ref":"#/components/schemas/Metric"},"groups":{"type":"array","items":{"allOf":[{"$ref":"#/components/schemas/Totals"}],"required":["key"],"properties":{"key":{"type":"object"}}}},"others":{"$ref":"#/components/schemas/Totals"},"total":{"$ref":"#/components/schemas/Totals"},"group_count":{"type":"integer","minimum":0}}}"##,
            "The top groups (each its key and sums), the others and the total.",
        ),
        errors: &[503],
    },
    Op {
        method: "get",
        path: "/flows/timeseries",
        tag: "flows",
        summary: "A metric over time in buckets, one series per top group.",
        params: flows::TIMESERIES,
        body: None,
        answer: json_ok(
            r##"{"type":"object","required":["metric","from_ms","step_ms","buckets","group_by","series"],"additionalProperties":false,"properties":{"metric":{"$ref":"#/components/schemas/Metric"},"from_ms":{"type":"integer","minimum":0},"step_ms":{"type":"integer","minimum":1},"buckets":{"type":"integer","minimum":0},"group_by":{"type":"array","items":{"type":"string"}},"series":{"type":"array","items":{"type":"object","required":["key","total","points"],"additionalProperties":false,"properties":{"key":{"type":"object"},"total":{"type":"integer","minimum":0},"points":{"type":"array","items":{"type":"array","items":{"type":"integer","minimum":0},"minItems":2,"maxItems":2}}}}}}}"##,
            "One series per top group: `[bucket start ms, value]` per bucket.",
        ),
        errors: &[503],
    },
    Op {
        method: "get",
        path: "/flows/follow",
        tag: "flows",
        summary: "New flows as they are stored, as newline-delimited JSON, until the client leaves.",
        params: flows::FOLLOW,
        body: None,
        answer: Answer {
            status: 200,
            media: "application/x-ndjson",
            schema: "{}",
            doc: "One flow per line.",
        },
        errors: &[503],
    },
    Op {
        method: "get",
        path: "/plugins",
        tag: "plugins",
        summary: "Installed plugins, their kinds, grants and health.",
        params: NONE,
        body: None,
        answer: json_ok(component!("PluginList"), "The installed plugins."),
        errors: &[503],
    },
    Op {
        method: "post",
        path: "/plugins",
        tag: "plugins",
        summary: "Install a plugin: the component as the body, or `source` with an empty body.",
        params: plugins::INSTALL,
        body: Some(Body {
            media: &["application/wasm", "application/octet-stream"],
            schema: "{}",
            doc: "A WebAssembly component with its manifest embedded (or empty, with `source`).",
            required: false,
        }),
        answer: json_ok(component!("PluginInstall"), "What was installed."),
        errors: &[409, 422, 503],
    },
    Op {
        method: "delete",
        path: "/plugins/{name}",
        tag: "plugins",
        summary: "Remove a plugin and its state.",
        params: NONE,
        body: None,
        answer: json_ok(component!("PluginRemoved"), "What was removed."),
        errors: &[404, 503],
    },
    Op {
        method: "post",
        path: "/plugins/{name}/enable",
        tag: "plugins",
        summary: "Enable an installed plugin.",
        params: NONE,
        body: None,
        answer: json_ok(component!("PluginEnabled"), "The plugin's new state."),
        errors: &[404, 503],
    },
    Op {
        method: "post",
        path: "/plugins/{name}/disable",
        tag: "plugins",
        summary: "Disable a plugin (kept installed).",
        params: NONE,
        body: None,
        answer: json_ok(component!("PluginDisabled"), "The plugin's new state."),
        errors: &[404, 503],
    },
    Op {
        method: "post",
        path: "/plugins/{name}/run",
        tag: "plugins",
        summary: "Run a plugin now (a view, a summary, a correlation...) and answer its output.",
        params: NONE,
        body: json_body(
            r#"{"type":"object","description":"Fields by the plugin's kind: from_ms, to_ms, filter, params, input, events, query"}"#,
            "What the run works on.",
        ),
        answer: json_ok("{}", "The plugin's output."),
        errors: &[404, 422, 503],
    },
    Op {
        method: "post",
        path: "/plugins/{name}/grants",
        tag: "plugins",
        summary: "Grant or revoke one capability of an installed plugin.",
        params: NONE,
        body: json_body(
            r#"{"type":"object","additionalProperties":false,"properties":{"grant":{"type":"string"},"revoke":{"type":"string"},"scope":{"type":"array","items":{"type":"string"}}}}"#,
            "`grant` (with `scope` for a scoped capability) or `revoke`.",
        ),
        answer: json_ok(component!("PluginGrants"), "What the plugin now holds."),
        errors: &[404, 503],
    },
    Op {
        method: "get",
        path: "/plugins/{name}/snapshot",
        tag: "plugins",
        summary: "A summarizer's state (its kept windows merged), to merge on another agent.",
        params: NONE,
        body: None,
        answer: Answer {
            status: 200,
            media: "application/octet-stream",
            schema: "{}",
            doc: "The snapshot's bytes.",
        },
        errors: &[404, 422, 503],
    },
    Op {
        method: "post",
        path: "/plugins/{name}/merge",
        tag: "plugins",
        summary: "Merge another agent's summarizer snapshot into the current window.",
        params: NONE,
        body: Some(Body {
            media: &["application/octet-stream"],
            schema: "{}",
            doc: "A snapshot from GET .../snapshot.",
            required: true,
        }),
        answer: json_ok(component!("SnapshotMerged"), "What was merged."),
        errors: &[404, 422, 503],
    },
    Op {
        method: "get",
        path: "/alerts",
        tag: "alerts",
        summary: "Pending and firing alerts, silences and queued notifications.",
        params: NONE,
        body: None,
        answer: json_ok(component!("Alerting"), "The alerting state."),
        errors: &[503],
    },
    Op {
        method: "get",
        path: "/alerts/history",
        tag: "alerts",
        summary: "Alert state changes, newest first.",
        params: alerts::HISTORY,
        body: None,
        answer: json_ok(component!("AlertHistory"), "The changes."),
        errors: &[503],
    },
    Op {
        method: "post",
        path: "/alerts/evaluate",
        tag: "alerts",
        summary: "Evaluate every alert rule now; answers the state changes.",
        params: NONE,
        body: None,
        answer: json_ok(component!("AlertChanges"), "The state changes."),
        errors: &[503],
    },
    Op {
        method: "post",
        path: "/alerts/silences",
        tag: "alerts",
        summary: "Silence alerts whose labels match, for a while.",
        params: NONE,
        body: json_body(
            r#"{"type":"object","required":["matchers","duration"],"additionalProperties":false,"properties":{"matchers":{"type":"object","additionalProperties":{"type":"string"}},"duration":{"type":"string","description":"e.g. 2h"},"comment":{"type":"string"}}}"#,
            "The labels to match and for how long.",
        ),
        answer: json_ok(component!("SilenceCreated"), "The silence."),
        errors: &[503],
    },
    Op {
        method: "delete",
        path: "/alerts/silences/{id}",
        tag: "alerts",
        summary: "End a silence.",
        params: NONE,
        body: None,
        answer: json_ok(component!("SilenceRemoved"), "The silence ended."),
        errors: &[404, 503],
    },
    Op {
        method: "get",
        path: "/records",
        tag: "records",
        summary: "Stored records (plugin outputs, OVS collections, logs...), paged.",
        params: records::PARAMS,
        body: None,
        answer: json_ok(component!("RecordPage"), "A page; `next_after` resumes it."),
        errors: &[503],
    },
    Op {
        method: "get",
        path: "/ovs",
        tag: "ovs",
        summary: "Live OVS collection status and the collections kept.",
        params: NONE,
        body: None,
        answer: json_ok(component!("OvsOverview"), "Status and collections."),
        errors: &[503],
    },
    Op {
        method: "post",
        path: "/ovs/import",
        tag: "ovs",
        summary: "Store an OVS dump taken elsewhere (dpctl/dump-flows or ovs-ofctl dump-flows).",
        params: NONE,
        body: json_body(
            r#"{"type":"object","required":["text"],"additionalProperties":false,"properties":{"text":{"type":"string"},"syntax":{"enum":["dpctl","ofctl"]},"name":{"type":"string"},"time":{"type":"string"}}}"#,
            "The dump's text, its syntax (told from the text when absent), the datapath or bridge, when it was taken.",
        ),
        answer: json_ok(component!("OvsImported"), "The stored collection."),
        errors: &[422, 503],
    },
    Op {
        method: "get",
        path: "/ovs/flows",
        tag: "ovs",
        summary: "A collection's datapath flows, with OVS's own names.",
        params: ovs::FLOWS,
        body: None,
        answer: json_ok(component!("OvsFlows"), "The collection and its flows."),
        errors: &[404, 503],
    },
    Op {
        method: "get",
        path: "/ovs/tree",
        tag: "ovs",
        summary: "The datapath tree: in_port, then recirculation.",
        params: ovs::VIEW,
        body: None,
        answer: json_ok(component!("OvsTree"), "The tree."),
        errors: &[404, 503],
    },
    Op {
        method: "get",
        path: "/ovs/graph",
        tag: "ovs",
        summary: "Recirculation ids, outputs and conntrack zones as a graph.",
        params: ovs::VIEW,
        body: None,
        answer: json_ok(component!("OvsGraph"), "Nodes and edges."),
        errors: &[404, 503],
    },
    Op {
        method: "get",
        path: "/ovs/openflow",
        tag: "ovs",
        summary: "OpenFlow tables and their flows, each with the datapath flows traced through it.",
        params: ovs::OPENFLOW,
        body: None,
        answer: json_ok(component!("OvsOpenFlow"), "The tables."),
        errors: &[404, 503],
    },
    Op {
        method: "get",
        path: "/ovs/churn",
        tag: "ovs",
        summary: "Megaflows added and removed between two collections, and the busiest.",
        params: ovs::CHURN,
        body: None,
        answer: json_ok(component!("OvsChurn"), "The churn."),
        errors: &[404, 503],
    },
    Op {
        method: "get",
        path: "/ovs/conversations",
        tag: "ovs",
        summary: "The stored flows a datapath flow carried.",
        params: ovs::CONVERSATIONS,
        body: None,
        answer: json_ok(component!("OvsConversations"), "The conversations."),
        errors: &[404, 503],
    },
    Op {
        method: "get",
        path: "/ovs/path",
        tag: "ovs",
        summary: "The datapath flows that carried one conversation, as paths.",
        params: ovs::PATH,
        body: None,
        answer: json_ok(component!("OvsPaths"), "The paths."),
        errors: &[404, 503],
    },
    Op {
        method: "post",
        path: "/policy/describe",
        tag: "policy",
        summary: "Every network policy and every pod, in words.",
        params: NONE,
        body: json_body(
            POLICY_EVAL,
            "Policy files to add, whether to include the live objects, one pod.",
        ),
        answer: json_ok(component!("PolicyDescription"), "The descriptions."),
        errors: &[422, 503],
    },
    Op {
        method: "post",
        path: "/policy/table",
        tag: "policy",
        summary: "The truth table of who may reach whom, per port.",
        params: NONE,
        body: json_body(POLICY_EVAL, "Policy files and ports (`80/TCP`)."),
        answer: json_ok(component!("PolicyTable"), "The table."),
        errors: &[422, 503],
    },
    Op {
        method: "post",
        path: "/policy/explain",
        tag: "policy",
        summary: "One connection's verdict and the rules that decided it.",
        params: NONE,
        body: json_body(POLICY_EVAL, "Policy files, `from`, `to` and `port`."),
        answer: json_ok(component!("PolicyExplanation"), "The verdict."),
        errors: &[422, 503],
    },
    Op {
        method: "post",
        path: "/policy/whatif",
        tag: "policy",
        summary: "Stored conversations judged under proposed policies.",
        params: NONE,
        body: json_body(
            r##"{"type":"object","required":["proposed"],"additionalProperties":false,"properties":{"proposed":{"$ref":"#/components/schemas/Files"},"current":{"$ref":"#/components/schemas/Files"},"cluster":{"$ref":"#/components/schemas/Files"},"from":{"type":"string"},"to":{"type":"string"},"filter":{"type":"string"}}}"##,
            "Proposed and current policies, the cluster's objects, the window.",
        ),
        answer: json_ok(component!("PolicyWhatIf"), "What would change."),
        errors: &[422, 503],
    },
    Op {
        method: "post",
        path: "/policy/pod",
        tag: "policy",
        summary: "One pod's conversations judged by its policies, and a least-privilege suggestion.",
        params: NONE,
        body: json_body(
            r##"{"type":"object","required":["pod"],"additionalProperties":false,"properties":{"pod":{"type":"string","description":"ns/name"},"files":{"$ref":"#/components/schemas/Files"},"live":{"type":"boolean"},"from":{"type":"string"},"to":{"type":"string"}}}"##,
            "The pod (`ns/name`), policy files, the window.",
        ),
        answer: json_ok(component!("PolicyPodView"), "The pod's view."),
        errors: &[422, 503],
    },
    Op {
        method: "get",
        path: "/traces/{trace_id}",
        tag: "otlp",
        summary: "A trace received over OTLP, its spans with the flows they made.",
        params: NONE,
        body: None,
        answer: json_ok(component!("Trace"), "The trace."),
        errors: &[400, 404, 503],
    },
    Op {
        method: "get",
        path: "/timeline",
        tag: "timeline",
        summary: "Flows, alerts and records on one time axis.",
        params: timeline::PARAMS,
        body: None,
        answer: json_ok(component!("Timeline"), "Lanes of buckets and items."),
        errors: &[503],
    },
    Op {
        method: "get",
        path: "/incident",
        tag: "incident",
        summary: "An incident file: the flows, records and alerts of a window, to replay elsewhere.",
        params: incident::PARAMS,
        body: None,
        answer: Answer {
            status: 200,
            media: "application/gzip",
            schema: "{}",
            doc: "The incident file (`weir agent --replay FILE`).",
        },
        errors: &[503],
    },
    Op {
        method: "get",
        path: "/fields",
        tag: "meta",
        summary: "The flow fields: names, types and what they mean.",
        params: NONE,
        body: None,
        answer: json_ok(component!("FieldList"), "The fields."),
        errors: &[],
    },
    Op {
        method: "get",
        path: "/status",
        tag: "meta",
        summary: "The agent's state: capture, ingest, storage, enrichment, OVS, storage sampling, HTTP limits, replay.",
        params: NONE,
        body: None,
        answer: json_ok(component!("Status"), "The status."),
        errors: &[],
    },
    Op {
        method: "get",
        path: "/openapi.json",
        tag: "meta",
        summary: "This description.",
        params: NONE,
        body: None,
        answer: json_ok(object!("openapi", "paths"), "OpenAPI 3.1."),
        errors: &[],
    },
    Op {
        method: "post",
        path: "/capture/flush",
        tag: "capture",
        summary: "Evict every flow from the kernel maps now.",
        params: NONE,
        body: None,
        answer: json_ok(
            component!("Flushed"),
            "Every flow was evicted (and is being stored).",
        ),
        errors: &[503],
    },
    Op {
        method: "get",
        path: "/capture/filters",
        tag: "capture",
        summary: "The operator's in-kernel filter rules.",
        params: NONE,
        body: None,
        answer: json_ok(component!("FilterRules"), "The rules."),
        errors: &[503],
    },
    Op {
        method: "put",
        path: "/capture/filters",
        tag: "capture",
        summary: "Replace the in-kernel filter rules on live traffic.",
        params: NONE,
        body: json_body(
            r#"{"oneOf":[{"type":"object","required":["rules"],"properties":{"rules":{"type":"array","items":{"type":["object","string"]}}}},{"type":"array","items":{"type":["object","string"]}}]}"#,
            "`{\"rules\": [...]}` or a bare list of rules.",
        ),
        answer: json_ok(component!("FilterRules"), "The rules now in force."),
        errors: &[503],
    },
];

/// A way from one operation's answer to another operation (an OpenAPI link): clients and
/// Schemathesis' stateful phase follow them (an imported OVS dump's id into its views, a
/// silence's id into ending it).
pub struct Link {
    /// The operation whose 200 answer holds the values, as (method, path).
    pub from: (&'static str, &'static str),
    pub name: &'static str,
    /// The operation it leads to.
    pub to: (&'static str, &'static str),
    /// The parameters of `to` (path or query), each with the runtime expression that gives
    /// it: `$response.body#/json/pointer` into the answer, or `$request.query.NAME` of the
    /// request answered.
    pub params: &'static [(&'static str, &'static str)],
    pub doc: &'static str,
}

pub const LINKS: &[Link] = &[
    Link {
        from: ("post", "/alerts/silences"),
        name: "EndSilence",
        to: ("delete", "/alerts/silences/{id}"),
        params: &[("id", "$response.body#/silence/id")],
        doc: "End the silence just made.",
    },
    Link {
        from: ("post", "/ovs/import"),
        name: "ImportedFlows",
        to: ("get", "/ovs/flows"),
        params: &[("collection", "$response.body#/id")],
        doc: "The datapath flows of the imported dump.",
    },
    Link {
        from: ("post", "/ovs/import"),
        name: "ImportedTree",
        to: ("get", "/ovs/tree"),
        params: &[("collection", "$response.body#/id")],
        doc: "The imported dump's datapath tree.",
    },
    Link {
        from: ("post", "/ovs/import"),
        name: "ImportedGraph",
        to: ("get", "/ovs/graph"),
        params: &[("collection", "$response.body#/id")],
        doc: "The imported dump's recirculation graph.",
    },
    Link {
        from: ("post", "/ovs/import"),
        name: "ImportedOpenFlow",
        to: ("get", "/ovs/openflow"),
        params: &[("collection", "$response.body#/id")],
        doc: "The imported dump's OpenFlow tables.",
    },
    Link {
        from: ("get", "/ovs/flows"),
        name: "FirstFlowConversations",
        to: ("get", "/ovs/conversations"),
        params: &[
            ("collection", "$response.body#/collection/id"),
            ("flow", "$response.body#/flows/0/index"),
        ],
        doc: "The stored conversations the first datapath flow listed carried.",
    },
    Link {
        from: ("get", "/records"),
        name: "NextPage",
        to: ("get", "/records"),
        params: &[
            ("after", "$response.body#/next_after"),
            ("from", "$request.query.from"),
            ("to", "$request.query.to"),
            ("kind", "$request.query.kind"),
            ("source", "$request.query.source"),
            ("label", "$request.query.label"),
            ("limit", "$request.query.limit"),
        ],
        doc: "The next page of the same listing (when this one was full).",
    },
    Link {
        from: ("get", "/plugins"),
        name: "FirstPluginSnapshot",
        to: ("get", "/plugins/{name}/snapshot"),
        params: &[("name", "$response.body#/plugins/0/installed/manifest/name")],
        doc: "The first plugin's snapshot (a summarizer's; others answer 404 or 422).",
    },
];

/// An operation's id in the document.
pub fn operation_id(method: &str, path: &str) -> String {
    format!("{}{}", method, path.replace(['/', '{', '}', '.'], "_"))
}

const POLICY_EVAL: &str = r##"{"type":"object","additionalProperties":false,"properties":{"files":{"$ref":"#/components/schemas/Files"},"live":{"type":"boolean"},"ports":{"type":"array","items":{"type":"string"}},"pod":{"type":["string","null"]},"from":{"type":"string"},"to":{"type":"string"},"port":{"type":["string","null"]}}}"##;

const TOTALS: &str = r#"{"type":"object","required":["bytes","packets","flows","drop_bytes","drop_packets"],"properties":{"bytes":{"type":"integer","minimum":0},"packets":{"type":"integer","minimum":0},"flows":{"type":"integer","minimum":0},"drop_bytes":{"type":"integer","minimum":0},"drop_packets":{"type":"integer","minimum":0}}}"#;

/// A flow as the API writes and reads it, from the one field list (`weir_core::schema::FIELDS`).
pub fn flow_schema() -> Value {
    use weir_core::schema::{FIELDS, FieldKind};
    let properties: Map<String, Value> = FIELDS
        .iter()
        .map(|f| {
            let mut s = match f.kind {
                FieldKind::U64 => json!({ "type": "integer", "minimum": 0 }),
                FieldKind::Ip => {
                    json!({ "type": "string", "description": "an IPv4 or IPv6 address" })
                }
                FieldKind::Str => json!({ "type": "string" }),
            };
            s["title"] = f.doc.into();
            (f.name.to_string(), s)
        })
        .collect();
    json!({ "type": "object", "additionalProperties": false, "properties": properties })
}

const ERROR: &str = r#"{"type":"object","required":["error"],"properties":{"error":{"type":"object","required":["kind","message"],"properties":{"kind":{"type":"string"},"message":{"type":"string"},"parameter":{"type":"string"},"position":{"type":"integer","minimum":0}}}}}"#;

/// What an error status means here.
fn error_doc(status: u16) -> &'static str {
    match status {
        400 => "A parameter or the body is wrong; `parameter` (and `position`) say where.",
        401 => "The agent has a token and the request did not carry it.",
        403 => "Refused: a browser page from elsewhere (Origin), or a read-only replay.",
        404 => "No such plugin, collection, silence or trace.",
        408 => "The request took longer than --request-timeout.",
        409 => "Already installed (use upgrade=true).",
        413 => "The body is larger than this operation accepts.",
        422 => "A plugin failed serving it (trap, timeout, memory, its own error).",
        429 => "Too many requests in progress from this client (Retry-After says when).",
        503 => "The part of the agent this needs is not running here (or is failing).",
        _ => "An error.",
    }
}

fn schema_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| json!({ "description": format!("{e}") }))
}

fn param_json(p: &Param) -> Value {
    let schema = match p.schema {
        Schema::Text => json!({ "type": "string" }),
        Schema::Count { default, max } => {
            json!({ "type": "integer", "minimum": 1, "maximum": max, "default": default })
        }
        Schema::Natural { max } => json!({ "type": "integer", "minimum": 0, "maximum": max }),
        Schema::Pattern(re) => json!({ "type": "string", "pattern": re }),
        Schema::Ip => {
            json!({ "type": "string", "anyOf": [{ "format": "ipv4" }, { "format": "ipv6" }] })
        }
        Schema::Flag => json!({ "type": "boolean", "default": false }),
        Schema::OneOf(words) => json!({ "type": "string", "enum": words }),
    };
    json!({
        "name": p.name,
        "in": "query",
        "required": p.required,
        "description": p.doc,
        "schema": schema,
    })
}

/// A path parameter's schema: what its handler accepts, or more (never less).
fn path_schema(name: &str) -> Value {
    match name {
        // A plugin every agent installs by default, so some requests reach one.
        "name" => json!({ "type": "string", "pattern": weir_core::plugins::PLUGIN_NAME_PATTERN,
                          "examples": ["chord"] }),
        "trace_id" => json!({ "type": "string", "pattern": "^[0-9a-fA-F]{32}$" }),
        "id" => json!({ "type": "string", "pattern": "^\\+?[0-9]{1,20}$" }),
        _ => json!({ "type": "string", "minLength": 1 }),
    }
}

/// The path parameters of a path template (`{name}`).
pub fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

fn operation(op: &Op) -> Value {
    let mut params: Vec<Value> = path_params(op.path)
        .into_iter()
        .map(|n| json!({ "name": n, "in": "path", "required": true, "schema": path_schema(n) }))
        .collect();
    params.extend(op.params.iter().map(param_json));
    let mut statuses: Vec<u16> = vec![401, 408, 429];
    statuses.extend_from_slice(op.errors);
    if !op.params.is_empty() || !path_params(op.path).is_empty() || op.body.is_some() {
        statuses.push(400);
    }
    if op.body.is_some() {
        statuses.push(413);
    }
    if op.method != "get" {
        statuses.push(403);
    }
    statuses.sort_unstable();
    statuses.dedup();
    let mut responses = Map::new();
    responses.insert(
        op.answer.status.to_string(),
        json!({ "description": op.answer.doc,
                "content": { op.answer.media: { "schema": schema_of(op.answer.schema) } } }),
    );
    for s in statuses {
        responses.insert(
            s.to_string(),
            json!({ "description": error_doc(s),
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }),
        );
    }
    let links: Map<String, Value> = LINKS
        .iter()
        .filter(|l| l.from == (op.method, op.path))
        .map(|l| {
            let params: Map<String, Value> = l
                .params
                .iter()
                .map(|(n, expr)| (n.to_string(), json!(expr)))
                .collect();
            let link = json!({ "operationId": operation_id(l.to.0, l.to.1),
                               "parameters": params, "description": l.doc });
            (l.name.to_string(), link)
        })
        .collect();
    if let Some(ok) = responses.get_mut(&op.answer.status.to_string())
        && !links.is_empty()
    {
        ok["links"] = Value::Object(links);
    }
    let mut o = json!({
        "operationId": operation_id(op.method, op.path),
        "tags": [op.tag],
        "summary": op.summary,
        "parameters": params,
        "responses": responses,
    });
    if let Some(b) = &op.body {
        let content: Map<String, Value> = b
            .media
            .iter()
            .map(|m| {
                let schema = if m.ends_with("json") {
                    schema_of(b.schema)
                } else {
                    json!({ "type": "string", "format": "binary" })
                };
                (m.to_string(), json!({ "schema": schema }))
            })
            .collect();
        o["requestBody"] =
            json!({ "description": b.doc, "required": b.required, "content": content });
    }
    o
}

/// [`document`] as JSON text, built once per process for each value of `token` (the
/// description is fixed at build time, so the route serves the same bytes every time).
pub fn document_text(token: bool) -> &'static str {
    static TEXTS: [std::sync::OnceLock<String>; 2] =
        [std::sync::OnceLock::new(), std::sync::OnceLock::new()];
    TEXTS[usize::from(token)].get_or_init(|| document(token).to_string())
}

/// The OpenAPI 3.1 document of /api/v1; `token`: whether this agent asks for one (then every
/// operation requires it).
pub fn document(token: bool) -> Value {
    let mut paths = Map::new();
    for op in OPS {
        let entry = paths
            .entry(op.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[op.method] = operation(op);
    }
    let mut schemas: Map<String, Value> = match serde_json::from_str(COMPONENTS) {
        Ok(Value::Object(m)) => m,
        // Checked by the tests: the file is one object of schemas.
        _ => Map::new(),
    };
    schemas.extend([
        ("Error".to_string(), schema_of(ERROR)),
        ("Files".to_string(), schema_of(FILE_LIST)),
        ("Flow".to_string(), flow_schema()),
        ("Totals".to_string(), schema_of(TOTALS)),
        (
            "Metric".to_string(),
            json!({ "enum": ["bytes", "packets", "flows", "drop_bytes", "drop_packets"] }),
        ),
    ]);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "weir agent API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Flows kept on the node, plugins, alerts, OVS, policies. Errors are one JSON shape: {\"error\": {\"kind\", \"message\", \"parameter\"?, \"position\"?}}.",
        },
        "servers": [{ "url": "/api/v1" }],
        "security": if token { json!([{ "token": [] }]) } else { json!([]) },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "token": { "type": "http", "scheme": "bearer",
                           "description": "The agent's --token (or WEIR_TOKEN), when it has one." }
            }
        }
    })
}
