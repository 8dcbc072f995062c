//! Router tests with `oneshot`, plus one real listener on port 0.

use super::*;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;
use weir_core::StoreConfig;

fn state(dir: &std::path::Path) -> AppState {
    let store = Arc::new(Store::open(StoreConfig::new(dir)).expect("store"));
    let mut flows = Vec::new();
    for i in 0..10u16 {
        let mut f = Flow::empty();
        f.time_flow_start_ms = 1_000;
        f.time_flow_end_ms = 2_000 + u64::from(i);
        f.src_addr = "198.18.0.1".parse().expect("ip");
        f.dst_addr = "198.18.0.2".parse().expect("ip");
        f.dst_port = 80 + i % 2;
        f.proto = 6;
        f.bytes = 100;
        f.packets = 1;
        flows.push(f);
    }
    store.append(&flows).expect("append");
    store.flush().expect("flush");
    AppState::new(store, None, Arc::new(IngestStats::default()))
}

async fn get(app: Router, uri: &str) -> (StatusCode, Value) {
    send(app, Request::get(uri).body(Body::empty()).expect("request")).await
}

/// Sends a request; its status and JSON body (Null when not JSON).
async fn send(app: Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app.oneshot(req).await.expect("response");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn lists_and_aggregates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = router(state(dir.path()));
    let (s, v) = get(app.clone(), "/api/v1/flows?filter=DstPort%3D81&from=0").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["total"], 5);
    let (s, v) = get(app, "/api/v1/flows/aggregate?group_by=DstPort&from=0").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["groups"][0]["bytes"], 500);
    assert_eq!(v["total"]["flows"], 10);
}

#[tokio::test]
async fn errors_are_json_with_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = router(state(dir.path()));
    let (s, v) = get(app.clone(), "/api/v1/flows?filter=DstPort%3D%3D").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["kind"], "bad_query");
    assert_eq!(v["error"]["parameter"], "filter");
    assert_eq!(v["error"]["position"], 9);
    // Found by Schemathesis: a page this deep made every partition rank billions of rows and
    // aborted the agent (a failed allocation).
    let (s, v) = get(
        app.clone(),
        "/api/v1/flows?limit=7912&offset=7835365970133182",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["parameter"], "offset", "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("above the maximum of 1000000") && msg.contains("narrow the range"),
        "{v}"
    );
    // Every natural-number parameter is read by one reader, its bounds from its list.
    let (s, v) = get(app.clone(), "/api/v1/flows?offset=-1").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(
        v["error"]["message"], "offset must be a whole number from 0 to 1000000, got '-1'",
        "{v}"
    );
    let other = tempfile::tempdir().expect("tempdir");
    let mut with_records = state(&other.path().join("flows"));
    with_records.records = Some(Arc::new(
        weir_core::records::RecordStore::open(&other.path().join("records")).expect("records"),
    ));
    let records_app = router(with_records);
    let (s, v) = get(records_app.clone(), "/api/v1/records?after=x1").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["parameter"], "after", "{v}");
    assert_eq!(
        v["error"]["message"], "after must be a whole number, got 'x1'",
        "{v}"
    );
    let (s, v) = get(records_app, "/api/v1/records?after=18446744073709551615").await;
    assert_eq!(
        s,
        StatusCode::OK,
        "the largest sequence number is taken: {v}"
    );
    let (s, v) = get(app.clone(), "/api/v1/capture/flush").await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{v}");
    let resp = app
        .oneshot(
            Request::post("/api/v1/capture/flush")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(
        resp.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "no capture in this state"
    );
}

#[tokio::test]
async fn serves_on_a_real_listener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = router(state(dir.path()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let clients = limits::Clients::new(limits::Limits::default());
    let server = tokio::spawn(serve::serve(
        listener,
        app,
        clients,
        std::future::pending(),
        std::time::Duration::from_secs(1),
    ));
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut buf = String::new();
    stream.read_to_string(&mut buf).await.expect("read");
    assert!(buf.starts_with("HTTP/1.1 200"), "{buf}");
    assert!(buf.ends_with("ok\n"), "{buf}");
    server.abort();
}

#[tokio::test]
async fn an_access_token_guards_the_api_not_the_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut st = state(dir.path());
    st.token = Some(Arc::from("correct-horse-battery-staple"));
    let app = router(st);
    let call = |auth: Option<&'static str>, uri: &'static str| {
        let app = app.clone();
        async move {
            let mut req = Request::get(uri);
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let resp = app
                .oneshot(req.body(Body::empty()).expect("request"))
                .await
                .expect("response");
            let www = resp.headers().get("www-authenticate").is_some();
            (resp.status(), www)
        }
    };
    let (s, www) = call(None, "/api/v1/status").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(www);
    let (s, _) = call(Some("Bearer wrong"), "/api/v1/flows?from=0").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = call(
        Some("Bearer correct-horse-battery-staple"),
        "/api/v1/flows?from=0",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // The page and health check load without it (the page asks for the token).
    let (s, _) = call(None, "/").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(None, "/healthz").await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn live_tails_are_bounded_and_a_closed_one_frees_its_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = router(state(dir.path()));
    let open = |app: Router| async move {
        app.oneshot(
            Request::get("/api/v1/flows/follow")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("response")
    };
    let mut tails = Vec::new();
    for _ in 0..handlers::flows::MAX_FOLLOWERS {
        let r = open(app.clone()).await;
        assert_eq!(r.status(), StatusCode::OK);
        tails.push(r);
    }
    let refused = open(app.clone()).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let body = axum::body::to_bytes(refused.into_body(), 1 << 20)
        .await
        .expect("body");
    assert!(
        String::from_utf8_lossy(&body).contains("live tails are open"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    drop(tails.pop());
    assert_eq!(open(app).await.status(), StatusCode::OK);
}

// ---- The HTTP limits, on a real listener ----

mod limits_on_a_real_listener {
    use super::*;
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Serves `st` with `l` on a loopback port until the test ends.
    async fn serving(mut st: AppState, l: limits::Limits) -> (SocketAddr, Arc<limits::Clients>) {
        let clients = limits::Clients::new(l);
        st.clients = clients.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(serve::serve(
            listener,
            router(st),
            clients.clone(),
            std::future::pending(),
            Duration::from_secs(1),
        ));
        (addr, clients)
    }

    /// A state that accepts imports (into a queue nobody reads: an upload never completes).
    fn importing(
        dir: &std::path::Path,
    ) -> (
        AppState,
        std::sync::mpsc::Receiver<weir_core::ingest::Batch>,
    ) {
        let mut st = state(dir);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        st.ingest_tx = Some(tx);
        (st, rx)
    }

    /// Reads until the server closes (or 5 s pass: then what came so far, and `false`).
    async fn read_all(s: &mut TcpStream) -> (String, bool) {
        let mut buf = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
            .await
            .is_ok();
        (String::from_utf8_lossy(&buf).into_owned(), closed)
    }

    async fn request(addr: SocketAddr, raw: &str) -> String {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(raw.as_bytes()).await.expect("write");
        let (text, closed) = read_all(&mut s).await;
        assert!(closed, "the server should answer and close: {text}");
        text
    }

    fn get(path: &str, extra: &str) -> String {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n")
    }

    #[tokio::test]
    async fn a_client_trickling_its_headers_is_cut_and_others_are_still_served() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (addr, _) = serving(
            state(dir.path()),
            limits::Limits {
                header_timeout: Duration::from_millis(400),
                ..limits::Limits::default()
            },
        )
        .await;
        let mut slow = TcpStream::connect(addr).await.expect("connect");
        let started = Instant::now();
        let head = b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa";
        let mut cut = false;
        for b in head {
            if slow.write_all(&[*b]).await.is_err() {
                cut = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(
                request(addr, &get("/healthz", ""))
                    .await
                    .starts_with("HTTP/1.1 200"),
                "another client is served meanwhile"
            );
        }
        if !cut {
            let (text, closed) = read_all(&mut slow).await;
            assert!(closed, "the trickling client should be cut: {text}");
            assert!(!text.contains("200 OK"), "{text}");
        }
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(4),
            "cut after {took:?}, the head timeout being 400 ms"
        );
    }

    #[tokio::test]
    async fn a_slow_upload_is_answered_408_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (st, _rx) = importing(dir.path());
        let (addr, clients) = serving(
            st,
            limits::Limits {
                request_timeout: Duration::from_millis(500),
                ..limits::Limits::default()
            },
        )
        .await;
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(
            b"POST /api/v1/flows HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n[{",
        )
        .await
        .expect("write");
        let (text, closed) = read_all(&mut s).await;
        assert!(closed, "{text}");
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("--request-timeout"), "{text}");
        assert_eq!(
            clients
                .refused
                .timeouts
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        let status = request(addr, &get("/api/v1/status", "")).await;
        assert!(status.contains("\"timed_out_requests\":1"), "{status}");
    }

    #[tokio::test]
    async fn connections_and_requests_over_a_clients_caps_get_429() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (st, _rx) = importing(dir.path());
        let (addr, clients) = serving(
            st,
            limits::Limits {
                connections_per_client: 3,
                requests_per_client: 1,
                ..limits::Limits::default()
            },
        )
        .await;
        // One request in progress: an upload that has not finished.
        let mut held = TcpStream::connect(addr).await.expect("connect");
        held.write_all(b"POST /api/v1/flows HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n[")
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let second = request(addr, &get("/api/v1/status", "")).await;
        assert!(second.starts_with("HTTP/1.1 429"), "{second}");
        assert!(second.contains("--max-requests-per-client"), "{second}");
        assert!(second.to_lowercase().contains("retry-after: 1"), "{second}");
        // Connections: `held` and two idle ones fill the cap; the next is refused at once.
        let _idle = TcpStream::connect(addr).await.expect("connect");
        let _idle2 = TcpStream::connect(addr).await.expect("connect");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut over = TcpStream::connect(addr).await.expect("connect");
        let (text, closed) = read_all(&mut over).await;
        assert!(closed && text.starts_with("HTTP/1.1 429"), "{text}");
        assert!(text.contains("--max-connections-per-client"), "{text}");
        drop(held);
        drop(_idle);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = request(addr, &get("/api/v1/status", "")).await;
        assert!(
            after.starts_with("HTTP/1.1 200"),
            "slots come back: {after}"
        );
        assert!(after.contains("\"refused_connections\":1"), "{after}");
        assert!(after.contains("\"refused_requests\":1"), "{after}");
        assert_eq!(clients.open_connections(), 1, "the idle one left open");
    }

    #[tokio::test]
    async fn live_tails_per_client_are_capped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (addr, _) = serving(
            state(dir.path()),
            limits::Limits {
                follows_per_client: 1,
                ..limits::Limits::default()
            },
        )
        .await;
        let mut tail = TcpStream::connect(addr).await.expect("connect");
        tail.write_all(get("/api/v1/flows/follow", "").as_bytes())
            .await
            .expect("write");
        let mut head = [0u8; 12];
        tail.read_exact(&mut head).await.expect("head");
        assert_eq!(&head, b"HTTP/1.1 200");
        let second = request(addr, &get("/api/v1/flows/follow", "")).await;
        assert!(second.starts_with("HTTP/1.1 429"), "{second}");
        assert!(second.contains("--max-follows-per-client"), "{second}");
        drop(tail);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut again = TcpStream::connect(addr).await.expect("connect");
        again
            .write_all(get("/api/v1/flows/follow", "").as_bytes())
            .await
            .expect("write");
        again.read_exact(&mut head).await.expect("head");
        assert_eq!(&head, b"HTTP/1.1 200", "a closed tail frees its place");
    }

    #[tokio::test]
    async fn too_many_wrong_tokens_lock_the_client_out_even_with_the_right_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut st = state(dir.path());
        st.token = Some(Arc::from("correct-horse-battery-staple"));
        let (addr, _) = serving(
            st,
            limits::Limits {
                wrong_tokens: 3,
                lockout: Duration::from_secs(2),
                ..limits::Limits::default()
            },
        )
        .await;
        let with = |t: &str| get("/api/v1/status", &format!("Authorization: Bearer {t}\r\n"));
        assert!(
            request(addr, &with("correct-horse-battery-staple"))
                .await
                .starts_with("HTTP/1.1 200")
        );
        for _ in 0..3 {
            let r = request(addr, &with("guess")).await;
            assert!(r.starts_with("HTTP/1.1 401"), "{r}");
        }
        let locked = request(addr, &with("correct-horse-battery-staple")).await;
        assert!(locked.starts_with("HTTP/1.1 429"), "{locked}");
        assert!(locked.contains("too many wrong access tokens"), "{locked}");
        assert!(locked.to_lowercase().contains("retry-after: "), "{locked}");
        // The page itself still loads (it asks for the token).
        assert!(
            request(addr, &get("/", ""))
                .await
                .starts_with("HTTP/1.1 200")
        );
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let r = request(addr, &with("correct-horse-battery-staple")).await;
        assert!(r.starts_with("HTTP/1.1 200"), "the lockout ends: {r}");
        assert!(r.contains("\"wrong_tokens\":3"), "{r}");
        assert!(r.contains("\"locked_out_requests\":1"), "{r}");
    }
}

/// The routes of the api router, as (method, path), read from this crate's `router`.
fn routed() -> std::collections::BTreeSet<(String, String)> {
    let src = include_str!("lib.rs");
    let start = src.find("let api = Router::new()").expect("the api router");
    let end = src[start..].find("let metrics").expect("its end") + start;
    let mut out = std::collections::BTreeSet::new();
    let parts: Vec<&str> = src[start..end].split(".route(").skip(1).collect();
    for part in parts {
        let path = part.split('"').nth(1).expect("a path literal");
        for m in ["get", "post", "put", "delete", "patch"] {
            let called = part.match_indices(&format!("{m}(")).any(|(i, _)| {
                // `get(`, `.post(`, `routing::delete(`: not the tail of another word.
                !part[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            });
            if called {
                out.insert((m.to_string(), path.to_string()));
            }
        }
    }
    out
}

#[test]
fn every_route_is_described_and_every_description_is_a_route() {
    let described: std::collections::BTreeSet<(String, String)> = openapi::OPS
        .iter()
        .map(|o| (o.method.to_string(), o.path.to_string()))
        .collect();
    let routed = routed();
    assert!(routed.len() > 40, "the router was read: {routed:?}");
    let missing: Vec<_> = routed.difference(&described).collect();
    assert!(
        missing.is_empty(),
        "routes with no description: {missing:?}"
    );
    let extra: Vec<_> = described.difference(&routed).collect();
    assert!(extra.is_empty(), "described but not routed: {extra:?}");
}

#[tokio::test]
async fn the_description_is_served_and_its_answers_hold_on_a_live_router() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = router(state(dir.path()));
    let (s, doc) = get(app.clone(), "/api/v1/openapi.json").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["security"], serde_json::json!([]), "no token here");
    let mut checked = 0;
    for op in openapi::OPS {
        let o = &doc["paths"][op.path][op.method];
        assert!(o.is_object(), "{} {} in the document", op.method, op.path);
        // Path parameters declared, every answer with a schema.
        for p in openapi::path_params(op.path) {
            let declared = o["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|d| d["name"] == p && d["in"] == "path");
            assert!(declared, "{} {}: path parameter {p}", op.method, op.path);
        }
        for (status, r) in o["responses"].as_object().expect("responses") {
            let content = r["content"].as_object().expect("content");
            for (media, m) in content {
                assert!(
                    m["schema"]
                        .get("description")
                        .is_none_or(|d| !d.as_str().unwrap_or("").contains("line")),
                    "{} {} {status} {media}: schema text does not parse: {m}",
                    op.method,
                    op.path
                );
            }
        }
        // Every GET without required parameters answers here as described.
        let required =
            op.params.iter().any(|p| p.required) || !openapi::path_params(op.path).is_empty();
        if op.method != "get" || required || op.answer.media != "application/json" {
            continue;
        }
        let (s, v) = get(app.clone(), &format!("/api/v1{}", op.path)).await;
        let documented = o["responses"][s.as_str()].is_object();
        assert!(documented, "GET {}: {s} is not described: {v}", op.path);
        let schema = &o["responses"][s.as_str()]["content"]["application/json"]["schema"];
        let broken = crate::schema_check::violations(&doc, schema, &v);
        assert!(broken.is_empty(), "GET {} {s}: {broken:?} in {v}", op.path);
        checked += 1;
    }
    assert!(
        checked > 15,
        "{checked} answers checked against the description"
    );
}

/// Every link leads to an operation that takes each parameter it fills, from a place the
/// source's answer schema has.
#[test]
fn every_link_leads_somewhere_from_somewhere() {
    /// The schema at a JSON pointer into values of `schema` (following $ref and allOf).
    fn at<'a>(doc: &'a Value, schema: &'a Value, pointer: &[&str]) -> Option<&'a Value> {
        let schema = match schema["$ref"].as_str() {
            Some(r) => crate::schema_check::resolve(doc, r)?,
            None => schema,
        };
        let Some((first, rest)) = pointer.split_first() else {
            return Some(schema);
        };
        let next = if first.parse::<usize>().is_ok() {
            schema.get("items")
        } else {
            schema["properties"].get(*first)
        };
        match next {
            Some(n) => at(doc, n, rest),
            None => schema["allOf"]
                .as_array()?
                .iter()
                .find_map(|sub| at(doc, sub, pointer)),
        }
    }
    let doc = openapi::document(false);
    assert!(!openapi::LINKS.is_empty());
    for l in openapi::LINKS {
        let from = &doc["paths"][l.from.1][l.from.0];
        let to = &doc["paths"][l.to.1][l.to.0];
        assert!(to.is_object(), "{}: leads to no operation", l.name);
        assert_eq!(
            from["responses"]["200"]["links"][l.name]["operationId"], to["operationId"],
            "{}",
            l.name
        );
        let answer = &from["responses"]["200"]["content"]["application/json"]["schema"];
        let takes = |op: &Value, name: &str| {
            op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["name"] == name)
        };
        for (param, expr) in l.params {
            assert!(
                takes(to, param),
                "{}: {} {} takes no {param}",
                l.name,
                l.to.0,
                l.to.1
            );
            if let Some(pointer) = expr.strip_prefix("$response.body#") {
                let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
                assert!(
                    at(&doc, answer, &parts).is_some(),
                    "{}: the answer of {} {} has no {pointer}",
                    l.name,
                    l.from.0,
                    l.from.1
                );
            } else if let Some(q) = expr.strip_prefix("$request.query.") {
                assert!(
                    takes(from, q),
                    "{}: {} {} takes no {q}",
                    l.name,
                    l.from.0,
                    l.from.1
                );
            } else {
                panic!("{}: {expr} is no expression a link here uses", l.name);
            }
        }
    }
}

/// Every `$ref` in the document names a schema it has, and every named schema is used.
#[test]
fn every_reference_in_the_description_resolves() {
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                    out.push(r);
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let doc = openapi::document(false);
    let mut found = Vec::new();
    refs(&doc, &mut found);
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    assert!(
        schemas.len() > 50,
        "the components file was read: {}",
        schemas.len()
    );
    for r in &found {
        let target = crate::schema_check::resolve(&doc, r);
        assert!(target.is_some_and(Value::is_object), "{r} names nothing");
    }
    for name in schemas.keys() {
        let r = format!("#/components/schemas/{name}");
        assert!(found.contains(&r.as_str()), "{name} is never used");
    }
}

#[tokio::test]
async fn an_agent_with_a_token_describes_every_operation_as_needing_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut st = state(dir.path());
    st.token = Some(Arc::from("s3cret"));
    let req = Request::get("/api/v1/openapi.json")
        .header("authorization", "Bearer s3cret")
        .body(Body::empty())
        .expect("request");
    let (s, doc) = send(router(st), req).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["security"], serde_json::json!([{ "token": [] }]));
    assert_eq!(
        doc["components"]["securitySchemes"]["token"]["scheme"],
        "bearer"
    );
}

#[tokio::test]
async fn a_flag_parameter_refuses_what_is_not_a_boolean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let req = Request::post("/api/v1/plugins?upgrade=yes")
        .body(Body::empty())
        .expect("request");
    let (status, v) = send(router(state(dir.path())), req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["parameter"], "upgrade", "{v}");
}

#[test]
fn the_flow_schema_is_what_a_flow_serializes_to() {
    let schema = openapi::flow_schema();
    let props = schema["properties"].as_object().expect("properties");
    let mut f = Flow::empty();
    f.src_addr = "198.18.0.1".parse().expect("ip");
    f.dst_addr = "2001:db8::1".parse().expect("ip");
    f.interface = "eth0".into();
    f.bytes = 7;
    let v = serde_json::to_value(&f).expect("json");
    let fields = v.as_object().expect("an object");
    assert_eq!(fields.len(), props.len(), "the same fields: {v}");
    for (k, val) in fields {
        let want = props
            .get(k)
            .unwrap_or_else(|| panic!("{k} is not described"));
        let ok = match want["type"].as_str() {
            Some("integer") => val.is_u64(),
            Some("string") => val.is_string(),
            other => panic!("{k}: type {other:?}"),
        };
        assert!(ok, "{k}: {val} is not a {}", want["type"]);
    }
}

/// A `from` after the `to` it defaults to (now) is refused, naming `from`: the timeline once
/// answered 503 for it (a reversed range reached the records' minute counts).
#[tokio::test]
async fn a_bucketed_answer_refuses_a_from_after_now() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = router(state(dir.path()));
    let future = weir_core::query::now_ms() + 600_000;
    for path in ["/api/v1/timeline", "/api/v1/flows/timeseries"] {
        let (s, v) = get(app.clone(), &format!("{path}?from={future}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {v}");
        assert_eq!(v["error"]["parameter"], "from", "{path}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("is after to")),
            "{v}"
        );
    }
}
