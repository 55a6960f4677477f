//! What a running service answers, for the tests that ask it: a metric's
//! value on `/metrics`, and an OpenAPI document that lists the operations
//! and whose every `$ref` resolves; and that a stored enum's schema lists
//! the texts it is written as.

/// The value of a Prometheus sample: the sum over every label set of
/// `name` whose labels contain all of `labels` (e.g. `consumer="g"`).
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, rest)) => (m, rest),
                None => (series, ""),
            };
            (metric == name && labels.iter().all(|want| rest.contains(want)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// The Prometheus text a service at `addr` (`host:port`) serves on
/// `/metrics`; empty while it does not answer. A plain HTTP/1.0 GET, so
/// every crate's tests can read metrics the same way.
pub async fn metrics_text(addr: &str) -> String {
    get_text(addr, "/metrics").await
}

/// The body of `GET path` on `addr`; empty while it does not answer.
async fn get_text(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return String::new();
    };
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut answer = Vec::new();
    if stream.write_all(request.as_bytes()).await.is_err()
        || stream.read_to_end(&mut answer).await.is_err()
    {
        return String::new();
    }
    let text = String::from_utf8_lossy(&answer);
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// Checks the service at `addr` describes exactly `operations` (like
/// `"GET /users/{id}"`, besides the ops routes) in `/openapi.json`: each
/// with a success answer and the shared error answers it can give (401
/// when it needs the token, 404 when it takes a path parameter), every
/// `$ref` resolving. Returns the document for further checks.
pub async fn assert_openapi(addr: &str, operations: &[&str]) -> serde_json::Value {
    let text = get_text(addr, "/openapi.json").await;
    let api: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("/openapi.json on {addr} is not JSON ({e}): {text:.200}"));
    assert!(api["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.1")));
    let mut described = Vec::new();
    for (path, item) in api["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            let operation_name = format!("{} {path}", method.to_uppercase());
            let responses = operation["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|status| status.starts_with('2')),
                "{operation_name}: no success answer"
            );
            assert!(responses.contains_key("500"), "{operation_name}: no 500");
            if operation["security"].is_array() {
                assert!(responses.contains_key("401"), "{operation_name}: no 401");
            }
            if path.contains('{') {
                assert!(responses.contains_key("404"), "{operation_name}: no 404");
            }
            described.push(operation_name);
        }
    }
    let mut expected: Vec<String> = ["GET /healthz", "GET /readyz", "GET /metrics"]
        .into_iter()
        .chain(operations.iter().copied())
        .map(str::to_owned)
        .collect();
    expected.sort();
    described.sort();
    assert_eq!(
        described, expected,
        "the operations /openapi.json describes"
    );
    assert_refs_resolve(&api, &api);
    api
}

fn assert_refs_resolve(api: &serde_json::Value, node: &serde_json::Value) {
    match node {
        serde_json::Value::Object(map) => {
            if let Some(reference) = map.get("$ref").and_then(|r| r.as_str()) {
                let pointer = reference.trim_start_matches('#');
                assert!(
                    api.pointer(pointer).is_some(),
                    "{reference} does not resolve"
                );
            }
            map.values().for_each(|v| assert_refs_resolve(api, v));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| assert_refs_resolve(api, v)),
        _ => {}
    }
}

/// The OpenAPI enum of `T` lists exactly the texts serde writes (for the
/// tests of each [`text_enum!`](crate::text_enum)).
pub fn schema_matches<T: utoipa::PartialSchema + serde::Serialize>(all: &[T]) {
    let schema = serde_json::to_value(T::schema()).unwrap();
    let texts: Vec<serde_json::Value> = all
        .iter()
        .map(|v| serde_json::to_value(v).unwrap())
        .collect();
    assert_eq!(schema["enum"], serde_json::Value::from(texts), "{schema}");
}
