//! The users API against the real database: create, read, update with
//! versions and If-Match, keyset pages, and every refusal as JSON.

use serde_json::{json, Value};
use shared::shutdown::CancellationToken;
use shared::testkit::TestEnv;
use users::{Application, UsersConfig};

struct Service {
    base: String,
    token: String,
    client: reqwest::Client,
    _stop: shared::shutdown::DropGuard,
}

impl Service {
    async fn start(env: &TestEnv, relay: bool) -> Service {
        let shutdown = CancellationToken::new();
        let config = UsersConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            relay,
            relay_interval_ms: 50,
        };
        let app = Application::build(env.settings.clone(), config, shutdown.clone())
            .await
            .unwrap();
        let base = format!("http://{}", app.addr());
        tokio::spawn(app.run());
        Service {
            base,
            token: env.settings.auth.admin_token.expose().to_owned(),
            client: reqwest::Client::new(),
            _stop: shutdown.drop_guard(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        if_match: Option<&str>,
    ) -> (u16, Option<String>, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(version) = if_match {
            request = request.header("if-match", version);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let etag = response
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, etag, response.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn users_are_created_read_updated_and_paged() {
    use reqwest::Method;
    let env = TestEnv::new("users_api").await;
    let s = Service::start(&env, false).await;

    let (status, etag, ann) = s
        .call(
            Method::POST,
            "/users",
            Some(json!({"id": "ann", "email": "ann@example.com", "name": "Ann"})),
            None,
        )
        .await;
    assert_eq!((status, etag.as_deref()), (201, Some("\"1\"")), "{ann}");
    assert_eq!(ann["version"], 1);
    let (status, _, generated) = s
        .call(
            Method::POST,
            "/users",
            Some(json!({"email": "bob@example.com"})),
            None,
        )
        .await;
    assert_eq!(status, 201);
    assert!(
        !generated["id"].as_str().unwrap().is_empty(),
        "an id is made up"
    );

    let (status, _, got) = s.call(Method::GET, "/users/ann", None, None).await;
    assert_eq!(
        (status, got["email"].as_str()),
        (200, Some("ann@example.com"))
    );

    // Updates grow the version; If-Match with a stale one is refused.
    let (status, etag, updated) = s
        .call(
            Method::PUT,
            "/users/ann",
            Some(json!({"email": "ann@new.example.com"})),
            Some("\"1\""),
        )
        .await;
    assert_eq!((status, etag.as_deref()), (200, Some("\"2\"")), "{updated}");
    let (status, _, stale) = s
        .call(
            Method::PUT,
            "/users/ann",
            Some(json!({"email": "ann@old.example.com"})),
            Some("\"1\""),
        )
        .await;
    assert_eq!(
        (status, stale["error"].as_str()),
        (412, Some("version_mismatch"))
    );
    assert_eq!(stale["version"], 2);

    // Concurrent updates: every one lands, the version counts them all.
    let writes = (0..20).map(|i| {
        s.call(
            Method::PUT,
            "/users/ann",
            Some(json!({"email": format!("ann{i}@example.com")})),
            None,
        )
    });
    for (status, _, _) in futures_join(writes).await {
        assert_eq!(status, 200);
    }
    let (_, _, ann) = s.call(Method::GET, "/users/ann", None, None).await;
    assert_eq!(ann["version"], 22);

    // Keyset pages.
    for i in 0..5 {
        let (status, _, body) = s
            .call(
                Method::POST,
                "/users",
                Some(json!({"id": format!("p{i}"), "email": format!("p{i}@example.com")})),
                None,
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (_, _, first) = s.call(Method::GET, "/users?limit=3", None, None).await;
    assert_eq!(first["users"].as_array().unwrap().len(), 3);
    let next = first["next"].as_str().unwrap().to_owned();
    let (_, _, second) = s
        .call(
            Method::GET,
            &format!("/users?limit=3&after={next}"),
            None,
            None,
        )
        .await;
    let ids: Vec<&str> = first["users"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["users"].as_array().unwrap())
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted, "ordered, no repeats across pages");

    // Refusals: a bad email names the field; unknown user 404; existing id 409; no token 401.
    let (status, _, bad) = s
        .call(
            Method::POST,
            "/users",
            Some(json!({"email": "not-an-address"})),
            None,
        )
        .await;
    assert_eq!(
        (status, bad["field"].as_str()),
        (400, Some("email")),
        "{bad}"
    );
    let (status, _, _) = s
        .call(
            Method::PUT,
            "/users/nobody",
            Some(json!({"email": "x@example.com"})),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _, _) = s.call(Method::GET, "/users/nobody", None, None).await;
    assert_eq!(status, 404);
    let (status, _, exists) = s
        .call(
            Method::POST,
            "/users",
            Some(json!({"id": "ann", "email": "a@example.com"})),
            None,
        )
        .await;
    assert_eq!((status, exists["error"].as_str()), (409, Some("exists")));
    let (status, _, _) = s
        .call(
            Method::PUT,
            "/users/ann",
            Some(json!({"email": "a@example.com", "age": 3})),
            None,
        )
        .await;
    assert_eq!(status, 400, "unknown fields are refused");
    let anonymous = s
        .client
        .get(format!("{}/users/ann", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    // Every write left exactly one outbox row (no relay ran here).
    let pool = env.pool().await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM users_outbox WHERE sent_at IS NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 2 + 1 + 20 + 5, "creates and updates, each once");
}

/// What a hostile client sends: an address with a display name or an IP
/// literal (the mailer would send to something else than what is shown), an
/// id with a bidirectional control (it would read as another id). Each is
/// 400 naming its field, and nothing is written.
#[tokio::test(flavor = "multi_thread")]
async fn display_names_ip_literals_and_bidi_ids_are_refused() {
    use reqwest::Method;
    let env = TestEnv::new("users_hostile").await;
    let s = Service::start(&env, false).await;
    let (status, _, _) = s
        .call(
            Method::POST,
            "/users",
            Some(json!({"id": "ann", "email": "ann@example.com"})),
            None,
        )
        .await;
    assert_eq!(status, 201);

    for email in [
        "Bob<x@evil.com>",
        "Bob <x@evil.com>",
        "x@[127.0.0.1]",
        "x@127.0.0.1",
    ] {
        let (status, _, body) = s
            .call(Method::POST, "/users", Some(json!({"email": email})), None)
            .await;
        assert_eq!(
            (status, body["error"].as_str(), body["field"].as_str()),
            (400, Some("invalid_field"), Some("email")),
            "POST {email}: {body}"
        );
        let (status, _, body) = s
            .call(
                Method::PUT,
                "/users/ann",
                Some(json!({"email": email})),
                None,
            )
            .await;
        assert_eq!(
            (status, body["field"].as_str()),
            (400, Some("email")),
            "PUT {email}: {body}"
        );
    }

    // `u\u{202E}gnp.exe` is shown as `uexe.png`.
    let (status, _, body) = s
        .call(
            Method::POST,
            "/users",
            Some(json!({"id": "u\u{202E}gnp.exe", "email": "u@example.com"})),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str(), body["field"].as_str()),
        (400, Some("invalid_field"), Some("id")),
        "{body}"
    );
    for path in [
        "/users/u%E2%80%AEx",
        "/users/u%E2%81%A6x",
        "/users/u%E2%80%8Fx",
    ] {
        let (status, _, body) = s
            .call(
                Method::PUT,
                path,
                Some(json!({"email": "u@example.com"})),
                None,
            )
            .await;
        assert_eq!(
            (status, body["field"].as_str()),
            (400, Some("id")),
            "PUT {path}: {body}"
        );
        let (status, _, body) = s.call(Method::GET, path, None, None).await;
        assert_eq!(
            (status, body["field"].as_str()),
            (400, Some("id")),
            "GET {path}: {body}"
        );
    }

    let pool = env.pool().await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM users_outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 1, "only ann's creation was written");
}

async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    futures::future::join_all(futures).await
}

/// `/openapi.json` describes every route with its own answers (201 with
/// `Location` and `ETag`, 409, 412) and the shared error answers: the
/// contract schemathesis checks in CI.
#[tokio::test(flavor = "multi_thread")]
async fn the_api_is_described_with_its_error_answers() {
    let env = TestEnv::new("users_openapi").await;
    let s = Service::start(&env, false).await;
    let api = shared::testkit::assert_openapi(
        s.base.trim_start_matches("http://"),
        &[
            "GET /users",
            "POST /users",
            "GET /users/{id}",
            "PUT /users/{id}",
        ],
    )
    .await;
    let create = &api["paths"]["/users"]["post"];
    assert_eq!(create["security"][0]["bearer"], json!([]));
    let created = &create["responses"]["201"];
    assert_eq!(
        created["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/User"
    );
    for header in ["Location", "ETag"] {
        assert!(
            created["headers"][header].is_object(),
            "{header}: {created}"
        );
    }
    assert!(create["responses"]["409"].is_object(), "409 documented");
    assert!(create["responses"]["415"].is_object(), "415 documented");
    let update = &api["paths"]["/users/{id}"]["put"];
    assert!(update["responses"]["412"].is_object(), "412 documented");
    let parameters = update["parameters"].as_array().unwrap();
    let names: Vec<&str> = parameters
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["id", "If-Match"], "{parameters:?}");
    let list = &api["paths"]["/users"]["get"];
    let names: Vec<&str> = list["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["limit", "after"]);
    let user = &api["components"]["schemas"]["User"];
    for field in ["id", "email", "version", "created_at", "updated_at"] {
        assert!(
            user["required"].as_array().unwrap().contains(&field.into()),
            "{field}"
        );
    }
    assert_eq!(
        api["components"]["schemas"]["NewUser"]["additionalProperties"], false,
        "unknown fields are refused, and described so"
    );

    // What a fuzzer sends: a NUL in an id or a cursor is no 5xx (an id no
    // write accepts is refused as one, naming `id`).
    let (status, _, _) = s
        .call(reqwest::Method::GET, "/users/a%00b", None, None)
        .await;
    assert_eq!(status, 400);
    let (status, _, _) = s
        .call(reqwest::Method::GET, "/users?after=%00", None, None)
        .await;
    assert_eq!(status, 400);
}

/// `Location` is a URL: an id beyond ASCII is percent-encoded in it (sent
/// raw, clients read its UTF-8 as Latin-1 and asked for another user), and
/// following it finds the user.
#[tokio::test(flavor = "multi_thread")]
async fn location_is_the_users_url_whatever_its_id() {
    let env = TestEnv::new("users_location").await;
    let service = Service::start(&env, false).await;
    for id in ["\u{10b715}n\u{83744}\u{fa1fb}", "ünï code", "plain-1"] {
        let response = service
            .client
            .post(format!("{}/users", service.base))
            .bearer_auth(&service.token)
            .json(&json!({"id": id, "email": "a@example.com"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201, "{id}");
        let location = response.headers().get("location").expect("a Location");
        assert!(
            location.as_bytes().iter().all(u8::is_ascii_graphic),
            "{location:?}"
        );
        let path = location.to_str().unwrap().to_owned();
        let (_, _, found) = service.call(reqwest::Method::GET, &path, None, None).await;
        assert_eq!(found["id"], id, "{found}");
    }
}
