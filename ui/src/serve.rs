//! The HTTP listener: accepts connections and serves a router on each under the connection
//! limits of [`crate::limits`]: a deadline for every request head (a client trickling its
//! headers byte by byte is cut), a cap on connections per client address and in all (beyond,
//! a one-line 429 or 503 and the connection closed), and a stop that lets open connections
//! finish for a bounded grace. Requests carry their client's address (axum's `ConnectInfo`).

use crate::ApiError;
use crate::limits::{Clients, Refusal};
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

/// Serves `app` on `listener` until `stop` resolves, then waits at most `grace` for open
/// connections (a live tail, a long query) before returning.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    clients: Arc<Clients>,
    stop: impl Future<Output = ()>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors (or a connection reset before it was taken):
                    // wait a little rather than spin; open connections keep being served.
                    tracing::warn!(error = %e, "accepting a connection failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let slot = match clients.connect(peer.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                tracing::debug!(client = %peer, ?why, "connection refused: over a connection limit");
                tokio::spawn(refuse(stream, why, clients.clone()));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let svc = app
            .clone()
            .map_request(move |mut req: axum::http::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.map(Body::new)
            });
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(clients.limits.header_timeout);
        let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = conn.await {
                tracing::debug!(client = %peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "connections still open after the grace period: closing them");
        }
    }
}

/// Answers a connection over a limit with one short response and closes it.
async fn refuse(mut stream: TcpStream, why: Refusal, clients: Arc<Clients>) {
    let l = &clients.limits;
    let err = match why {
        Refusal::ClientFull => ApiError::busy(format!(
            "this client has {} connections open, the most one client may hold (--max-connections-per-client): close some",
            l.connections_per_client
        )),
        Refusal::AgentFull => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            ..ApiError::busy(format!(
                "the agent has {} connections open, the most it serves (--max-connections): try again shortly",
                l.connections
            ))
        },
    };
    let body = err.body().to_string();
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
        err.status.as_u16(),
        err.status.canonical_reason().unwrap_or(""),
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    };
    // A client that does not read its refusal is not waited on.
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}
