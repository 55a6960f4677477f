//! Request metrics (`shared::http::ops::track`) over a real socket: what a
//! client sends never becomes a label of its own. A 3,000-character method
//! is counted under `method="other"`, an unknown path under
//! `route="unmatched"`, and neither appears on `/metrics`. The recorder is
//! process-wide, so this binary holds one test.

use shared::shutdown::CancellationToken;
use shared::testkit::metric;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start() -> (std::net::SocketAddr, CancellationToken) {
    let routes = axum::Router::new().route("/users", axum::routing::get(|| async { "[]" }));
    shared::testkit::serve_finished("labels", routes).await
}

/// Sends `method path` as written (no client checks or rewrites it) and
/// returns the whole answer.
async fn send(addr: std::net::SocketAddr, method: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    let answer = send(addr, "GET", "/metrics").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    answer
}

#[tokio::test(flavor = "multi_thread")]
async fn request_labels_are_from_a_fixed_set() {
    let (addr, shutdown) = start().await;
    let requests = "kappa_http_requests_total";
    let before = scrape(addr).await;

    let long = "X".repeat(3_000);
    let answer = send(addr, &long, "/users").await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    let unknown = format!("/no/such/{}", "y".repeat(3_000));
    let answer = send(addr, "GET", &unknown).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    let answer = send(addr, "GET", "/users").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let after = scrape(addr).await;
    assert!(!after.contains(&long[..64]), "the method became a label");
    assert!(!after.contains(&unknown[..64]), "the path became a label");
    let delta =
        |labels: &[&str]| metric(&after, requests, labels) - metric(&before, requests, labels);
    assert_eq!(
        delta(&[r#"method="other""#, r#"route="/users""#, r#"status="405""#]),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta(&[r#"method="GET""#, r#"route="unmatched""#, r#"status="404""#]),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta(&[r#"method="GET""#, r#"route="/users""#, r#"status="200""#]),
        1.0,
        "{after}"
    );
    // The histogram has the same labels: no series of its own either.
    assert_eq!(
        metric(
            &after,
            "kappa_http_request_duration_seconds_count",
            &[r#"method="other""#]
        ),
        1.0,
        "{after}"
    );
    shutdown.cancel();
}
