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
    let resp = app
        .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
        .await
        .expect("response");
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
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
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
