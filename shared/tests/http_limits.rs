//! What one client may hold of a server (`shared::http::limits`), over
//! real sockets: trickled headers are cut off, a trickled body is answered
//! 408, and beyond the concurrency limit requests are refused at once with
//! 503 and `Retry-After` while probes still answer. The limits are
//! process-wide, so this binary installs small ones and holds one test.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use axum::Router;
use shared::http::HttpLimits;
use shared::shutdown::CancellationToken;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `/slow` reports each arrival on `entered` and then waits for `release`.
struct Gate {
    entered: tokio::sync::mpsc::UnboundedSender<()>,
    release: tokio::sync::watch::Receiver<bool>,
}

async fn start(gate: Gate) -> (std::net::SocketAddr, CancellationToken) {
    let gate = std::sync::Arc::new(gate);
    HttpLimits::install(HttpLimits {
        header_timeout_ms: 500,
        body_timeout_ms: 1_000,
        max_concurrent_requests: 2,
        retry_after_secs: 3,
    });
    let routes = Router::new()
        .route(
            "/echo",
            post(|body: Bytes| async move { body.len().to_string() }),
        )
        .route(
            "/slow",
            post(move || {
                let gate = gate.clone();
                async move {
                    let _ = gate.entered.send(());
                    let mut release = gate.release.clone();
                    let _ = release.wait_for(|open| *open).await;
                    "done"
                }
            }),
        );
    shared::testkit::serve_finished("limits", routes).await
}

/// Writes `bytes` one at a time every `pace`, then reads what comes back
/// (until the server closes); `None` if the server closed while we wrote.
async fn trickle(
    addr: std::net::SocketAddr,
    head: &[u8],
    bytes: &[u8],
    pace: Duration,
) -> Option<String> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head).await.unwrap();
    for byte in bytes {
        if stream.write_all(&[*byte]).await.is_err() {
            return None;
        }
        tokio::time::sleep(pace).await;
        // A server that answered (or closed) already: stop writing.
        let mut probe = [0u8; 1];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(1), stream.peek(&mut probe)).await
        {
            if n == 0 {
                return None;
            }
            break;
        }
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    Some(String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_and_floods_do_not_hold_the_server() {
    let (entered, mut arrivals) = tokio::sync::mpsc::unbounded_channel();
    let (open, release) = tokio::sync::watch::channel(false);
    let (addr, shutdown) = start(Gate { entered, release }).await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://{addr}{path}");

    // Headers at 5 bytes per second: cut off after the 0.5 s header timeout,
    // long before the 40 s it would take to send them.
    let started = Instant::now();
    let headers = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\nok";
    let answer = trickle(addr, b"", headers, Duration::from_millis(200)).await;
    assert!(
        answer.as_deref().is_none_or(|a| !a.contains("200 OK")),
        "a trickled request was served: {answer:?}"
    );
    // Cut off before the trickle could end (40 s), however loaded the box.
    assert!(
        started.elapsed() < Duration::from_secs(35),
        "the connection was held for {:?}",
        started.elapsed()
    );

    // Headers in full, then a body at 5 bytes per second: 408 with a JSON
    // body once the 1 s body deadline passes, and the connection closes.
    let body = vec![b'x'; 100];
    let answer = trickle(
        addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n",
        &body,
        Duration::from_millis(200),
    )
    .await
    .expect("the server answers a slow body");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\":\"request_timeout\""), "{answer}");
    assert!(
        answer.to_lowercase().contains("connection: close"),
        "{answer}"
    );

    // A body in time is served.
    let ok = client
        .post(url("/echo"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.text().await.unwrap(), "5");

    // Two requests in flight fill the limit: the third is refused at once
    // with 503, Retry-After and a JSON body; probes still answer.
    let busy: Vec<_> = (0..2)
        .map(|_| tokio::spawn(client.post(url("/slow")).send()))
        .collect();
    for _ in 0..2 {
        let arrived = arrivals.recv();
        shared::testkit::within(Duration::from_secs(30), "a slow request arriving", arrived)
            .await
            .expect("a slow request arrived");
    }
    let refused = client.post(url("/echo")).body("x").send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "3");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "overloaded", "{body}");
    let health = client.get(url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "probes are never refused");
    open.send(true).unwrap();
    for request in busy {
        let response = request.await.unwrap().unwrap();
        assert_eq!(response.text().await.unwrap(), "done");
    }
    // Permits come back: served again.
    let again = client.post(url("/echo")).body("xy").send().await.unwrap();
    assert_eq!(again.text().await.unwrap(), "2");
    shutdown.cancel();
}
