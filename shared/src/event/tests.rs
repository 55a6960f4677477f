use super::*;

fn err(line: &str) -> ParseError {
    parse(line.as_bytes()).expect_err(line)
}

#[test]
fn parses_a_typed_interaction() {
    let line = r#"{"type":"interaction","user_id":"u1","product_id":"p7","action":"view","ts":"2026-11-26T10:00:00Z"}"#;
    let event = Event::parse(line.as_bytes()).unwrap();
    assert_eq!(event.key(), "u1");
    assert_eq!(event.ts.unwrap().to_rfc3339(), "2026-11-26T10:00:00+00:00");
    assert_eq!(
        event.body,
        EventBody::Interaction(Interaction {
            user_id: "u1".into(),
            product_id: "p7".into(),
            action: Action::View,
            price_cents: None,
        })
    );
}

#[test]
fn serialization_round_trips() {
    let line = r#"{"id":"0193a5c2-7f1e-7000-8000-000000000001","type":"interaction","user_id":"u1","product_id":"p7","action":"purchase","price_cents":1999}"#;
    let event = Event::parse(line.as_bytes()).unwrap();
    let again = Event::parse(&event.to_json()).unwrap();
    assert_eq!(event, again);
    assert_eq!(String::from_utf8(event.to_json()).unwrap(), line);
}

#[test]
fn errors_name_the_field_and_expectation() {
    assert_eq!(err("{not json").code(), "invalid_json");
    assert_eq!(err("[1,2]"), ParseError::NotAnObject("an array"));
    assert_eq!(err(r#"{"user_id":"u1"}"#), ParseError::MissingType);
    assert_eq!(
        err(r#"{"type":"teleport"}"#),
        ParseError::UnknownType("teleport".into())
    );
    assert_eq!(
        err(r#"{"type":"interaction","product_id":"p1","action":"view"}"#),
        ParseError::MissingField("user_id".into())
    );
    let wrong_type = err(
        r#"{"type":"interaction","user_id":"u1","product_id":"p1","action":"purchase","price_cents":"ten"}"#,
    );
    assert!(
        matches!(&wrong_type, ParseError::InvalidField { field, message } if field == "price_cents" && message.contains("expected u64")),
        "{wrong_type:?}"
    );
    let bad_action =
        err(r#"{"type":"interaction","user_id":"u1","product_id":"p1","action":"buy"}"#);
    assert!(matches!(&bad_action, ParseError::InvalidField { field, .. } if field == "action"));
    assert_eq!(
        err(
            r#"{"type":"interaction","user_id":"u1","product_id":"p1","action":"view","colour":"red"}"#
        ),
        ParseError::UnknownField("colour".into())
    );
    assert!(
        matches!(err(r#"{"type":"interaction","user_id":"u1","product_id":"p1","action":"purchase"}"#),
        ParseError::InvalidField { field, .. } if field == "price_cents")
    );
    assert!(
        matches!(err(r#"{"type":"user_updated","user_id":"","email":"a@b"}"#),
        ParseError::InvalidField { field, .. } if field == "user_id")
    );
    assert!(
        matches!(err(r#"{"type":"page_access","page":"/","id":"nope"}"#),
        ParseError::InvalidField { field, .. } if field == "id")
    );
    assert!(
        matches!(err(r#"{"type":"page_access","page":"/","ts":"yesterday"}"#),
        ParseError::InvalidField { field, .. } if field == "ts")
    );
    assert!(
        matches!(err(r#"{"type":7}"#), ParseError::InvalidField { field, .. } if field == "type")
    );
}

/// A bidirectional control in an id makes it read as another id where it is
/// shown: refused like a NUL, by the fast path and the precise one alike.
#[test]
fn ids_with_bidi_controls_are_invalid_fields() {
    let lines = [
        (r#"{"type":"interaction","user_id":"u\u202Ex","product_id":"p1","action":"view"}"#, "user_id"),
        ("{\"type\":\"interaction\",\"user_id\":\"u1\",\"product_id\":\"p\u{2066}1\",\"action\":\"view\"}", "product_id"),
        (r#"{"type":"user_updated","user_id":"u\u200Fx","email":"a@example.com"}"#, "user_id"),
        (r#"{"type":"page_access","page":"/a\u061Cb"}"#, "page"),
        (r#"{"type":"product_uploaded","product_id":"p1","seller_id":"s\u202Ax","metadata":{},"assets":[]}"#, "seller_id"),
    ];
    for (line, field) in lines {
        let error = err(line);
        assert!(
            matches!(&error, ParseError::InvalidField { field: f, message } if f == field && message.contains("bidirectional")),
            "{line}: {error:?}"
        );
        assert_eq!(super::parse::parse_precisely(line.as_bytes()), Err(error));
    }
}

#[test]
fn display_names_and_ip_literals_are_not_emails() {
    for email in ["Bob<x@evil.com>", "x@[127.0.0.1]"] {
        let line = format!(r#"{{"type":"user_updated","user_id":"u1","email":"{email}"}}"#);
        assert!(
            matches!(err(&line), ParseError::InvalidField { field, .. } if field == "email"),
            "{line}"
        );
    }
}

#[test]
fn counts_sizes_versions_and_chunks_fit_their_columns() {
    let events = [
        (
            "version",
            r#"{"type":"user_updated","user_id":"u1","email":"a@example.com"}"#,
        ),
        ("count", r#"{"type":"page_count","job_id":1,"page":"/a"}"#),
        (
            "lines",
            r#"{"type":"chunk_done","marker":"m","job_id":1,"chunk":0,"rejected":0,"records":1,"bytes":1}"#,
        ),
        (
            "bytes",
            r#"{"type":"chunk_done","marker":"m","job_id":1,"chunk":0,"lines":1,"rejected":0,"records":1}"#,
        ),
    ];
    let largest = i64::MAX.unsigned_abs();
    for (field, event) in events {
        let with = |value: u64| {
            let mut object: serde_json::Value = serde_json::from_str(event).unwrap();
            object[field] = value.into();
            object.to_string()
        };
        let ok = with(largest);
        Event::parse(ok.as_bytes()).unwrap_or_else(|e| panic!("{ok}: {e}"));
        let over = with(largest + 1);
        assert!(
            matches!(err(&over), ParseError::InvalidField { field: f, .. } if f == field),
            "{over}"
        );
    }
    let chunk = |n: u32| {
        format!(
            r#"{{"type":"chunk_done","marker":"m","job_id":1,"chunk":{n},"lines":1,"rejected":0,"records":1,"bytes":1}}"#
        )
    };
    Event::parse(chunk(i32::MAX.unsigned_abs()).as_bytes()).unwrap();
    assert!(matches!(
        err(&chunk(i32::MAX.unsigned_abs() + 1)),
        ParseError::InvalidField { field, .. } if field == "chunk"
    ));
}

#[test]
fn every_type_parses_and_keys_by_its_entity() {
    let lines = [
        (
            r#"{"type":"interaction","user_id":"u1","product_id":"p1","action":"add_to_cart"}"#,
            "u1",
        ),
        (
            r#"{"type":"user_updated","user_id":"u2","email":"a@example.com","name":"Ann"}"#,
            "u2",
        ),
        (
            r#"{"type":"mail_requested","user_id":"u3","subject":"hi","body":"hello"}"#,
            "u3",
        ),
        (
            r#"{"type":"product_uploaded","product_id":"p1","seller_id":"s1","metadata":{"title":"Lamp"},"assets":[{"part":"image-1","kind":"image","token":"0193a5c2-7f1e-7000-8000-0000000000aa","sha256":"ab","size":4,"content_type":"image/png","name":"a.png"}]}"#,
            "p1",
        ),
        (
            r#"{"type":"asset_processed","product_id":"p2","part":"video","kind":"video","result":{"seconds":3}}"#,
            "p2",
        ),
        (
            r#"{"type":"asset_failed","product_id":"p3","part":"image-1","kind":"image","reason":"corrupt"}"#,
            "p3",
        ),
        (
            r#"{"type":"product_created","product_id":"p4","title":"Lamp","parts":{}}"#,
            "p4",
        ),
        (
            r#"{"type":"product_failed","product_id":"p5","status":"incomplete","reason":"timeout","missing":["video"]}"#,
            "p5",
        ),
        (
            r#"{"type":"page_access","page":"/home","status":200}"#,
            "/home",
        ),
    ];
    for (line, key) in lines {
        let event = Event::parse(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(event.key(), key);
        assert_eq!(Event::parse(&event.to_json()).unwrap(), event);
    }
}

#[test]
fn claim_check_envelope_parses_without_the_body() {
    let claimed = ClaimedEvent {
        event_type: EventType::ProductUploaded,
        id: Some(Uuid::nil()),
        ts: None,
        key: "p1".into(),
        claim_check: ClaimRef {
            token: Uuid::from_u128(7),
            sha256: "00".repeat(32),
            size: 1 << 20,
            content_type: "application/json".into(),
        },
    };
    let envelope = parse(&claimed.to_json()).unwrap();
    assert_eq!(envelope, Envelope::Claimed(claimed));
    assert_eq!(envelope.event_type(), EventType::ProductUploaded);
    assert_eq!(envelope.key(), "p1");
    assert_eq!(Event::parse(br#"{"type":"product_failed","key":"p1","claim_check":{"token":"00000000-0000-0000-0000-000000000007","sha256":"","size":1,"content_type":"x"}}"#),
        Err(ParseError::UnexpectedClaimCheck));
}

#[test]
fn derived_ids_are_stable() {
    assert_eq!(derived_id("events", 3, 42), derived_id("events", 3, 42));
    assert_ne!(derived_id("events", 3, 42), derived_id("events", 3, 43));
}

#[test]
fn fast_and_precise_paths_agree() {
    let lines = [
        r#"{"type":"interaction","user_id":"u1","product_id":"p7","action":"view","ts":"2026-11-26T10:00:00Z"}"#,
        r#"{"id":"0193a5c2-7f1e-7000-8000-000000000001","ts":"2026-11-20T10:00:00+02:00","type":"interaction","user_id":"u\"1","product_id":"p7","action":"purchase","price_cents":5}"#,
        r#"{"user_id":"u2","email":"a@example.com","type":"user_updated","id":null}"#,
        r#"{"type":"interaction","user_id":"u1","product_id":"p7","action":"view","type":"interaction"}"#,
        r#"{"type":"interaction","user_id":"u1","product_id":"p7","action":"view","user_id":"u2"}"#,
        r#"{"type":"interaction","user_id":"u1","product_id":"p7","action":"view"} trailing"#,
        r#"{"type":"interaction","user_id":"u1","product_id":"p7","action":"view","extra":1}"#,
        r#"{"type":"asset_processed","product_id":"p2","part":"video","kind":"video","result":{"seconds":3,"id":"x"}}"#,
        r#"{"type":"product_uploaded","product_id":"p1","metadata":{"title":"T"},"assets":[{"part":"video","kind":"video","token":"0193a5c2-7f1e-7000-8000-0000000000aa","sha256":"ab","size":2,"content_type":"video/mp4"}]}"#,
        r#"{"type":"interaction","user_id":"","product_id":"p7","action":"view"}"#,
        r#"{"type":"interaction","user_id":"u1","product_id":"p7","action":"purchase"}"#,
        r#"{"\u0074ype":"page_access","page":"/"}"#,
    ];
    for line in lines {
        let fast = super::fast::parse_inline(line.as_bytes());
        let precise = super::parse::parse_precisely(line.as_bytes());
        let combined = parse(line.as_bytes());
        assert_eq!(combined, precise, "{line}");
        if let Some(event) = fast {
            if combined.is_ok() {
                assert_eq!(Ok(Envelope::Inline(event)), precise, "{line}");
            }
        }
    }
}

#[test]
fn the_fast_path_takes_common_shapes() {
    let typed_first = br#"{"type":"interaction","user_id":"u1","product_id":"p7","action":"view"}"#;
    let canonical = br#"{"id":"0193a5c2-7f1e-7000-8000-000000000001","ts":"2026-11-20T10:00:00Z","type":"interaction","user_id":"u1","product_id":"p7","action":"view"}"#;
    assert!(super::fast::parse_inline(typed_first).is_some());
    assert!(super::fast::parse_inline(canonical).is_some());
    let body_first = br#"{"user_id":"u1","type":"interaction","product_id":"p7","action":"view"}"#;
    assert!(super::fast::parse_inline(body_first).is_none());
    assert!(parse(body_first).is_ok(), "the precise path still takes it");
}

#[test]
fn a_peek_names_the_type_every_valid_event_has() {
    let lines = [
        r#"{"type":"interaction","user_id":"u1","product_id":"p7","action":"view"}"#,
        r#"{"id":"0193a5c2-7f1e-7000-8000-000000000001","ts":"2026-11-20T10:00:00Z","type":"user_updated","user_id":"u2","email":"a@example.com"}"#,
        r#"{"user_id":"u1","subject":"s","body":"{\"type\":\"interaction\"}","type":"mail_requested"}"#,
        r#"{"type":"product_uploaded","product_id":"p1","metadata":{"type":"lamp","title":"T"},"assets":[]}"#,
        r#"{"\u0074ype":"page_access","page":"/"}"#,
        r#"{"type":"mail_requested","key":"u1","claim_check":{"token":"0193a5c2-7f1e-7000-8000-0000000000aa","sha256":"ab","size":2,"content_type":"application/json"}}"#,
    ];
    for line in lines {
        let parsed = parse(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(
            super::peek_type(line.as_bytes()),
            Some(parsed.event_type()),
            "{line}"
        );
    }
    // Nothing to tell: the precise parse decides (and dead-letters).
    for line in [
        "not json",
        r#"{"user_id":"u1"}"#,
        r#"{"type":"no_such_type"}"#,
        r#"{"type":7}"#,
        r#"["type","interaction"]"#,
        r#"{"user_id":}"#,
    ] {
        assert_eq!(super::peek_type(line.as_bytes()), None, "{line}");
    }
}
