//! Every bad input gets a clear JSON answer, and nothing reaches the topic.

mod common;

use serde_json::Value;

async fn json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.json().await.expect("error bodies are JSON");
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_answered_and_nothing_is_produced() {
    let app = common::spawn_app("rejects", |_, http| http.body_limit_bytes = 1024 * 1024).await;
    let valid = r#"{"type":"page_access","page":"/ok"}"#;

    let cases = [
        ("{not json", "invalid_json"),
        (r#"{"type":"teleport","user_id":"u1"}"#, "unknown_type"),
        (
            r#"{"type":"interaction","product_id":"p1","action":"view"}"#,
            "missing_field",
        ),
        (
            r#"{"type":"interaction","user_id":"u1","product_id":"p1","action":"purchase","price_cents":"ten"}"#,
            "invalid_field",
        ),
        (
            r#"{"type":"interaction","user_id":42,"product_id":"p1","action":"view"}"#,
            "invalid_field",
        ),
        (r#"["not","an","object"]"#, "not_an_object"),
    ];
    for (line, code) in cases {
        // The bad line sits between two valid ones: the whole batch is refused.
        let (status, body) =
            json(app.post_ndjson(format!("{valid}\n{line}\n{valid}\n")).await).await;
        assert_eq!(status, 400, "{line}");
        assert_eq!(body["error"], "invalid_events");
        assert_eq!(body["invalid"], 1);
        assert_eq!(body["errors"][0]["line"], 2, "{body}");
        assert_eq!(body["errors"][0]["code"], code, "{body}");
        assert!(!body["errors"][0]["error"].as_str().unwrap().is_empty());
    }
    // The message names the field and what was expected.
    let (_, body) = json(app.post_ndjson(cases[3].0).await).await;
    let error = body["errors"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("price_cents") && error.contains("expected u64"),
        "{error}"
    );

    // Several invalid lines are reported together, each with its own code.
    let body = format!(
        "{valid}\n{}\n{valid}\n{}\n\n{}\n",
        cases[0].0, cases[2].0, cases[5].0
    );
    let (status, body) = json(app.post_ndjson(body).await).await;
    assert_eq!(status, 400);
    assert_eq!(body["invalid"], 3);
    let listed: Vec<(u64, &str)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["line"].as_u64().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        listed,
        vec![
            (2, "invalid_json"),
            (4, "missing_field"),
            (6, "not_an_object")
        ]
    );

    // At most 100 errors are listed; `invalid` counts them all.
    let many: String = (0..150).map(|_| format!("{}\n", cases[1].0)).collect();
    let (status, body) = json(app.post_ndjson(many).await).await;
    assert_eq!(status, 400);
    assert_eq!(body["invalid"], 150);
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 100);
    assert_eq!(errors[99]["line"], 100, "the first hundred, in order");

    // Ids that no store could hold: too long, or with a control character.
    let long_id = format!(
        r#"{{"type":"interaction","user_id":"{}","product_id":"p","action":"view"}}"#,
        "u".repeat(3000)
    );
    let (status, body) = json(app.post_ndjson(long_id).await).await;
    assert_eq!(status, 400);
    assert!(
        body["errors"][0]["error"]
            .as_str()
            .unwrap()
            .contains("at most 256 bytes"),
        "{body}"
    );

    // Wrong method: 405 with the JSON shape, before any token check.
    let get_events = app.client.get(app.url("/events")).send().await.unwrap();
    assert_eq!(get_events.headers()["content-type"], "application/json");
    let (status, body) = json(get_events).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (405, Some("method_not_allowed"))
    );
    // A path segment that does not decode: 400 with the JSON shape.
    let bad_segment = app
        .client
        .get(app.url("/claims/%FF"))
        .bearer_auth(app.token())
        .send()
        .await
        .unwrap();
    assert_eq!(json(bad_segment).await.0, 400);
    // The scheme of a token is case-insensitive (RFC 7235).
    let lowercase = app
        .client
        .post(app.url("/events"))
        .header("authorization", format!("bearer {}", app.token()))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        json(lowercase).await.0,
        400,
        "authenticated, then refused for its body"
    );

    let (status, body) = json(app.post_ndjson("\n\n").await).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("empty_body")));

    // Oversize body: 413 with a JSON body.
    let big = format!(
        "{{\"type\":\"page_access\",\"page\":\"/{}\"}}",
        "x".repeat(2 * 1024 * 1024)
    );
    let too_large = app.post_ndjson(big).await;
    assert_eq!(
        too_large.headers()["connection"],
        "close",
        "the unread rest of the body leaves the connection unusable"
    );
    let (status, body) = json(too_large).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("payload_too_large"))
    );

    // Missing and wrong tokens: 401 with a JSON body.
    let no_token = app
        .client
        .post(app.url("/events"))
        .body(valid)
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.headers()["www-authenticate"], "Bearer");
    let (status, body) = json(no_token).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );
    let wrong = app
        .client
        .post(app.url("/events"))
        .bearer_auth("wrong")
        .body(valid)
        .send()
        .await
        .unwrap();
    assert_eq!(json(wrong).await.0, 401);
    let claim = app
        .client
        .get(app.url("/claims/0193a5c2-7f1e-7000-8000-000000000001"))
        .send()
        .await
        .unwrap();
    assert_eq!(json(claim).await.0, 401);

    // Unknown route and malformed token in a path: JSON too.
    let (status, body) = json(app.client.get(app.url("/nope")).send().await.unwrap()).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let bad_path = app
        .client
        .get(app.url("/claims/not-a-uuid"))
        .bearer_auth(app.token())
        .send()
        .await
        .unwrap();
    assert_eq!(json(bad_path).await.0, 400);

    let topic = app.env.settings.kafka.events_topic.clone();
    assert_eq!(app.env.count(&topic).await, 0, "nothing reached the topic");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_too_large_for_the_broker_is_413_with_the_limit_named() {
    // Claim-check above 2 MiB, so a 1.2 MB event would go to the broker inline.
    let app = common::spawn_app("too_large", |s, _| {
        s.claim_check.threshold_bytes = 2 * 1024 * 1024
    })
    .await;
    let big = format!(
        r#"{{"type":"mail_requested","user_id":"u1","subject":"s","body":"{}"}}"#,
        "x".repeat(1_200_000)
    );
    let too_large = app.post_ndjson(big).await;
    assert_eq!(
        too_large.headers()["connection"],
        "close",
        "the unread rest of the body leaves the connection unusable"
    );
    let (status, body) = json(too_large).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("payload_too_large"))
    );
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("message.max.bytes") && message.contains("1000000"),
        "{message}"
    );
    let topic = app.env.settings.kafka.events_topic.clone();
    assert_eq!(app.env.count(&topic).await, 0, "nothing reached the topic");
    app.stop().await;
}

/// `/openapi.json` describes every route, its error answers with the shared
/// schema, and the bearer scheme: the contract schemathesis checks in CI.
#[tokio::test(flavor = "multi_thread")]
async fn the_api_is_described_with_its_error_answers() {
    let app = common::spawn_app("gw_openapi", |_, _| {}).await;
    let api = shared::testkit::assert_openapi(
        &app.addr.to_string(),
        &[
            "POST /events",
            "POST /products",
            "GET /claims/{token}",
            "GET /dlq",
            "POST /dlq/redrive",
        ],
    )
    .await;
    assert_eq!(
        api["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let events = &api["paths"]["/events"]["post"];
    assert_eq!(events["security"][0]["bearer"], serde_json::json!([]));
    for status in ["400", "401", "413", "500"] {
        let answer = &events["responses"][status]["$ref"];
        assert!(answer.is_string(), "POST /events documents no {status}");
    }
    let event_types = api["components"]["schemas"]["Event"]["oneOf"]
        .as_array()
        .expect("Event is one of the types");
    let interaction = event_types
        .iter()
        .find(|t| t["properties"]["type"]["enum"][0] == "interaction")
        .expect("an interaction schema");
    assert_eq!(interaction["additionalProperties"], false);
    for field in ["type", "user_id", "product_id", "action"] {
        assert!(
            interaction["required"]
                .as_array()
                .unwrap()
                .contains(&field.into()),
            "{field}"
        );
    }
    app.stop().await;
}
