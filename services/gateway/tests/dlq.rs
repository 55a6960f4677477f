//! The dead-letter queue as a tool: `GET /dlq` lists and pages, counts by
//! reason and filters; `POST /dlq/redrive` puts the original record back on
//! its origin topic with `redrive-count` and its provenance, once per dead
//! letter unless asked again, and refuses a record that keeps failing once
//! it reached `dlq.max_redrives`. On the real broker, each test with its own
//! topics; dead letters are written by the shared DLQ writer, as workers do.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use serde_json::{json, Value};
use shared::dlq::{header_str, redrive, DeadLetters};

use common::TestApp;

/// A gateway, a producer and the DLQ writer on one test's topics.
struct World {
    app: TestApp,
    producer: FutureProducer,
    letters: DeadLetters,
    events: String,
}

impl World {
    async fn new(name: &str) -> World {
        let mut app = common::spawn_app(name, |_, _| {}).await;
        let kafka = app.env.settings.kafka.clone();
        // The redrive log, created on first use: removed with the test's topics.
        app.env.topics.push(format!("{}.redrives", kafka.dlq_topic));
        World {
            producer: shared::kafka::producer(&kafka).unwrap(),
            letters: DeadLetters::new(&kafka).unwrap(),
            events: kafka.events_topic.clone(),
            app,
        }
    }

    /// Produces a record to `topic`; returns (partition, offset).
    async fn produce(
        &self,
        topic: &str,
        key: Option<&str>,
        payload: &[u8],
        headers: &[(&str, &str)],
        timestamp: Option<i64>,
    ) -> (i32, i64) {
        let mut own = OwnedHeaders::new();
        for (key, value) in headers {
            own = own.insert(Header {
                key,
                value: Some(*value),
            });
        }
        let mut record: FutureRecord<'_, str, [u8]> =
            FutureRecord::to(topic).payload(payload).headers(own);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(ts) = timestamp {
            record = record.timestamp(ts);
        }
        let delivery = self
            .producer
            .send(record, Timeout::After(Duration::from_secs(30)))
            .await
            .map_err(|(e, _)| e)
            .expect("the broker takes the record");
        (delivery.partition, delivery.offset)
    }

    /// Puts a record on the events topic and dead-letters it from there, as
    /// a worker does; returns its origin (partition, offset).
    async fn dead_letter(&self, key: Option<&str>, payload: &[u8], code: &str) -> (i32, i64) {
        let (p, o) = self.produce(&self.events, key, payload, &[], None).await;
        self.letters
            .send_from_origin(&self.events, p, o, code, &format!("{code}: test"))
            .await
            .unwrap();
        (p, o)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.app.get_authed(path).await;
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON answer"))
    }

    async fn redrive(&self, filter: Value) -> (u16, Value) {
        let response = self
            .app
            .client
            .post(self.app.url("/dlq/redrive"))
            .bearer_auth(self.app.token())
            .json(&filter)
            .send()
            .await
            .expect("gateway answers");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON answer"))
    }

    /// Every dead letter, in the listing's order.
    async fn all(&self, query: &str) -> Vec<Value> {
        let (status, page) = self.get(&format!("/dlq?limit=1000{query}")).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["more"], false);
        page["records"].as_array().unwrap().clone()
    }

    /// The record at `to` (a redrive answer's `to`).
    async fn fetch(&self, to: &Value) -> OwnedMessage {
        self.letters
            .fetch_origin(
                to["topic"].as_str().unwrap(),
                to["partition"].as_i64().unwrap() as i32,
                to["offset"].as_i64().unwrap(),
            )
            .await
            .unwrap()
    }
}

/// Tests that count metrics (process-wide, by `why`) take turns.
static METRICS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    message
        .headers()
        .and_then(|h| header_str(h, name))
        .map(str::to_owned)
}

fn ids(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// (partition, offset) of a listed `id`, for ordering.
fn position(id: &str) -> (i64, i64) {
    let (p, o) = id.split_once(':').unwrap();
    (p.parse().unwrap(), o.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dlq_is_listed_with_counts_previews_and_pages() {
    let world = World::new("dlq_list").await;
    let events = world.events.clone();
    let long = "x".repeat(1000);
    let binary = [0xffu8; 300];
    let planted: Vec<(&str, Option<&str>, &[u8], &str)> = vec![
        ("a", Some("u1"), b"{not json", "invalid_json"),
        (
            "b",
            Some("u2"),
            br#"{"type":"teleport","id":"ev-b"}"#,
            "unknown_type",
        ),
        ("c", Some("u3"), br#"{"type":"teleport"}"#, "unknown_type"),
        ("d", Some("u4"), long.as_bytes(), "invalid_json"),
        ("e", None, &binary, "invalid_json"),
        ("f", Some("u5"), b"{broken", "invalid_json"),
    ];
    let mut origins = std::collections::HashMap::new();
    for (name, key, payload, code) in &planted {
        origins.insert(*name, world.dead_letter(*key, payload, code).await);
    }

    let (status, page) = world.get("/dlq").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["topic"], world.app.env.settings.kafka.dlq_topic);
    assert_eq!(page["total"], 6);
    assert_eq!(page["matched"], 6);
    assert_eq!(
        page["counts"],
        json!({"invalid_json": 4, "unknown_type": 2})
    );
    assert_eq!(page["more"], false);
    let records = page["records"].as_array().unwrap();
    assert_eq!(records.len(), 6);
    let order: Vec<(i64, i64)> = ids(records).iter().map(|id| position(id)).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "by partition, then offset");

    let by_origin = |name: &str| -> &Value {
        let (p, o) = origins[name];
        records
            .iter()
            .find(|r| r["origin"]["partition"] == p && r["origin"]["offset"] == o)
            .unwrap_or_else(|| panic!("{name} is listed: {page}"))
    };
    let a = by_origin("a");
    assert_eq!(a["code"], "invalid_json");
    assert_eq!(a["reason"], "invalid_json: test");
    assert_eq!(a["origin"]["topic"], events);
    assert!(
        a["origin"]["timestamp"].is_string() && a["time"].is_string(),
        "{a}"
    );
    assert_eq!(
        a["payload"],
        json!({"size": 9, "encoding": "text", "data": "{not json", "truncated": false})
    );
    assert_eq!(a["key"]["data"], "u1");
    assert_eq!(a["redrive_count"], 0);
    assert_eq!(a["redrives"], 0);
    assert!(a["first_origin"].is_null());
    // No id in the payload: the one consumers derive from the origin.
    let (p, o) = origins["a"];
    assert_eq!(
        a["event_id"],
        shared::event::derived_id(&events, p, o).to_string()
    );
    assert_eq!(a["event_id_derived"], true);
    let b = by_origin("b");
    assert_eq!(
        (&b["event_id"], &b["event_id_derived"]),
        (&json!("ev-b"), &json!(false))
    );
    // Bounded previews: 256 bytes, as text, or as base64 when not UTF-8.
    let d = by_origin("d");
    assert_eq!(d["payload"]["size"], 1000);
    assert_eq!(d["payload"]["truncated"], true);
    assert_eq!(d["payload"]["data"], "x".repeat(256));
    let e = by_origin("e");
    assert!(e["key"].is_null());
    assert_eq!(e["payload"]["encoding"], "base64");
    let shown = base64::engine::general_purpose::STANDARD
        .decode(e["payload"]["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(shown, vec![0xffu8; 256]);

    // By reason, a page at a time: the pages make up the four, once each.
    let (_, first) = world.get("/dlq?reason=invalid_json&limit=3").await;
    assert_eq!(first["matched"], 4);
    assert_eq!(first["total"], 6, "the counts cover the whole DLQ");
    assert_eq!(first["records"].as_array().unwrap().len(), 3);
    assert_eq!(first["more"], true);
    let next = first["next"].as_str().unwrap().to_owned();
    let (status, second) = world
        .get(&format!("/dlq?reason=invalid_json&limit=3&after={next}"))
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["records"].as_array().unwrap().len(), 1);
    assert_eq!(second["more"], false);
    let mut paged = ids(first["records"].as_array().unwrap());
    paged.extend(ids(second["records"].as_array().unwrap()));
    let expected: Vec<String> = records
        .iter()
        .filter(|r| r["code"] == "invalid_json")
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(paged, expected, "in order, none twice, none missed");
    for r in second["records"].as_array().unwrap() {
        assert!(r["code"] == "invalid_json");
    }

    // The last page's `next` is where to look for what arrives later.
    let tail = second["next"].as_str().unwrap().to_owned();
    let (_, nothing) = world.get(&format!("/dlq?after={tail}")).await;
    assert_eq!(nothing["records"], json!([]), "{nothing}");
    let (p, o) = world.dead_letter(Some("u6"), b"late", "invalid_json").await;
    let (_, later) = world.get(&format!("/dlq?after={tail}")).await;
    let later = later["records"].as_array().unwrap();
    assert_eq!(later.len(), 1, "{later:?}");
    assert_eq!(
        (
            later[0]["origin"]["partition"].as_i64(),
            later[0]["origin"]["offset"].as_i64()
        ),
        (Some(p as i64), Some(o))
    );

    // A dead letter in a transaction still open is not listed, and the
    // cursor does not pass it: once committed, the next page has it.
    let (_, now) = world.get("/dlq").await;
    let tail = now["next"].as_str().unwrap().to_owned();
    let kafka = world.app.env.settings.kafka.clone();
    let txn: FutureProducer = shared::kafka::producer_config(&kafka)
        .set("transactional.id", world.app.env.unique("dlq-list-txn"))
        .create()
        .unwrap();
    txn.init_transactions(Duration::from_secs(30)).unwrap();
    txn.begin_transaction().unwrap();
    let headers = OwnedHeaders::new().insert(Header {
        key: "dlq.code",
        value: Some("in_transaction"),
    });
    let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&kafka.dlq_topic)
        .partition(0)
        .payload(&b"{}"[..])
        .headers(headers);
    txn.send(record, Timeout::After(Duration::from_secs(30)))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let (_, open) = world.get(&format!("/dlq?after={tail}")).await;
    assert_eq!(open["records"], json!([]), "{open}");
    let cursor = open["next"].as_str().unwrap().to_owned();
    txn.commit_transaction(Duration::from_secs(30)).unwrap();
    let (_, committed) = world.get(&format!("/dlq?after={cursor}")).await;
    assert_eq!(
        committed["records"][0]["code"], "in_transaction",
        "{committed}"
    );
    world.app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redrive_puts_the_original_back_once_with_its_provenance() {
    let _turn = METRICS.lock().await;
    let world = World::new("dlq_redrive").await;
    let events = world.events.clone();
    let payload = br#"{"type":"teleport","id":"ev-1","user_id":"u1"}"#;
    let ts = 1_767_323_045_000i64; // 2026-01-02T03:04:05Z
    let (p, o) = world
        .produce(&events, Some("u1"), payload, &[("trace", "t-1")], Some(ts))
        .await;
    world
        .letters
        .send_from_origin(&events, p, o, "redrive_test", "refused by a test")
        .await
        .unwrap();
    let listed = world.all("").await;
    let dlq_id = listed[0]["id"].as_str().unwrap().to_owned();
    let before = world.app.scrape().await;

    // A dry run by origin range decides, and publishes nothing.
    let (status, dry) = world
        .redrive(json!({"origin": {"topic": events, "partition": p, "from_offset": o, "to_offset": o + 1}, "dry_run": true}))
        .await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(
        (&dry["dry_run"], &dry["matched"]),
        (&json!(true), &json!(1))
    );
    assert_eq!(dry["redriven"][0]["redrive_count"], 1);
    assert!(dry["redriven"][0]["to"].is_null());

    // By event id: the original payload, key, headers and event time, with
    // the redrive's headers.
    let (status, answer) = world.redrive(json!({"ids": ["ev-1"]})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["matched"], 1);
    assert_eq!(answer["refused"], json!([]));
    let done = &answer["redriven"][0];
    assert_eq!(done["id"], dlq_id.as_str());
    assert_eq!(
        (&done["redrive_count"], &done["again"], &done["rekeyed"]),
        (&json!(1), &json!(false), &json!(false))
    );
    assert_eq!(done["origin"]["offset"], o);
    let to = done["to"].clone();
    assert_eq!(to["topic"], events);
    assert_eq!(
        to["partition"], p,
        "the same key lands in the same partition"
    );
    let copy = world.fetch(&to).await;
    assert_eq!(copy.payload(), Some(&payload[..]));
    assert_eq!(copy.key(), Some(&b"u1"[..]));
    assert_eq!(copy.timestamp().to_millis(), Some(ts));
    assert_eq!(header(&copy, "trace").as_deref(), Some("t-1"));
    assert_eq!(header(&copy, redrive::COUNT).as_deref(), Some("1"));
    assert_eq!(header(&copy, redrive::ORIGIN_TOPIC), Some(events.clone()));
    assert_eq!(
        header(&copy, redrive::ORIGIN_PARTITION),
        Some(p.to_string())
    );
    assert_eq!(header(&copy, redrive::ORIGIN_OFFSET), Some(o.to_string()));
    assert_eq!(
        header(&copy, redrive::ORIGIN_TIMESTAMP),
        Some(ts.to_string())
    );
    let (dp, doff) = dlq_id.split_once(':').unwrap();
    assert_eq!(header(&copy, redrive::DLQ_PARTITION).as_deref(), Some(dp));
    assert_eq!(header(&copy, redrive::DLQ_OFFSET).as_deref(), Some(doff));
    assert!(
        copy.headers()
            .unwrap()
            .iter()
            .all(|h| !h.key.starts_with("dlq.")),
        "no dlq.* header on the copy"
    );

    // The same dead letter again: refused and reported, nothing published.
    let (status, twice) = world.redrive(json!({"ids": [dlq_id]})).await;
    assert_eq!(status, 200, "{twice}");
    assert_eq!(twice["redriven"], json!([]));
    assert_eq!(twice["refused"][0]["why"], "already_redriven");
    assert_eq!(
        twice["refused"][0]["last_redrive"]["to"]["offset"],
        to["offset"]
    );
    assert_eq!(twice["refused_counts"], json!({"already_redriven": 1}));
    world
        .app
        .env
        .read_exactly(&events, 2, Duration::from_secs(30))
        .await;
    let listed = world.all("").await;
    assert_eq!(listed[0]["redrives"], 1);
    assert_eq!(
        listed[0]["last_redrive"]["to"],
        json!({"topic": events, "partition": p, "offset": to["offset"], "timestamp": "2026-01-02T03:04:05Z"})
    );

    // Asked for again, it is redriven and counts.
    let (_, again) = world.redrive(json!({"ids": [dlq_id], "again": true})).await;
    assert_eq!(again["redriven"][0]["redrive_count"], 2, "{again}");
    assert_eq!(again["redriven"][0]["again"], true);
    let copy = world.fetch(&again["redriven"][0]["to"]).await;
    assert_eq!(header(&copy, redrive::COUNT).as_deref(), Some("2"));
    world
        .app
        .env
        .read_exactly(&events, 3, Duration::from_secs(30))
        .await;

    // A `key_mismatch` goes back keyed by its entity: the key was what was
    // wrong, and with it the copy would only fail the same way again.
    let body = br#"{"type":"interaction","user_id":"u7","product_id":"p7","action":"view"}"#;
    let (kp, ko) = world.produce(&events, Some("wrong"), body, &[], None).await;
    world
        .letters
        .send_from_origin(&events, kp, ko, "key_mismatch", "keyed wrong")
        .await
        .unwrap();
    let (_, rekeyed) = world.redrive(json!({"reason": "key_mismatch"})).await;
    assert_eq!(rekeyed["redriven"][0]["rekeyed"], true, "{rekeyed}");
    let copy = world.fetch(&rekeyed["redriven"][0]["to"]).await;
    assert_eq!(copy.key(), Some(&b"u7"[..]));
    assert_eq!(copy.payload(), Some(&body[..]));

    let after = world.app.scrape().await;
    let delta = |name: &str, label: &str| {
        shared::testkit::metric(&after, name, &[label])
            - shared::testkit::metric(&before, name, &[label])
    };
    // `redrive_test` is no code of the catalogue (`shared::dlq::codes`):
    // read from the record's header, it is counted as `other`, never as a
    // series of its own.
    assert_eq!(delta("kappa_dlq_redriven_total", "code=\"other\""), 2.0);
    assert!(
        !after
            .lines()
            .any(|l| l.starts_with("kappa_dlq_redriven_total") && l.contains("redrive_test")),
        "{after}"
    );
    assert_eq!(
        delta(
            "kappa_dlq_redrive_refused_total",
            "why=\"already_redriven\""
        ),
        1.0
    );
    world.app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_that_keeps_failing_is_refused_at_the_maximum() {
    let _turn = METRICS.lock().await;
    let world = World::new("dlq_max").await;
    let events = world.events.clone();
    let code = "keeps_failing";
    let (p, o) = world
        .dead_letter(Some("u9"), br#"{"type":"teleport"}"#, code)
        .await;
    let before = world.app.scrape().await;

    // Redriven, failing again (the shared DLQ writer, as any worker), three times.
    for round in 1..=3i64 {
        let fresh: Vec<Value> = world
            .all(&format!("&reason={code}"))
            .await
            .into_iter()
            .filter(|r| r["redrives"] == 0)
            .collect();
        assert_eq!(fresh.len(), 1, "round {round}: {fresh:?}");
        assert_eq!(
            fresh[0]["redrive_count"],
            round - 1,
            "the count survived the DLQ"
        );
        if round > 1 {
            assert_eq!(fresh[0]["first_origin"]["offset"], o);
            assert_eq!(fresh[0]["first_origin"]["partition"], p);
        }
        let (status, answer) = world.redrive(json!({"ids": [fresh[0]["id"]]})).await;
        assert_eq!(status, 200, "{answer}");
        let done = &answer["redriven"][0];
        assert_eq!(done["redrive_count"], round, "{answer}");
        assert_eq!(done["origin"]["offset"], o, "the first origin is kept");
        let copy = world.fetch(&done["to"]).await;
        assert_eq!(header(&copy, redrive::COUNT), Some(round.to_string()));
        assert_eq!(header(&copy, redrive::ORIGIN_OFFSET), Some(o.to_string()));
        world
            .letters
            .send(&copy, code, "failed again")
            .await
            .unwrap();
    }

    let letters = world.all(&format!("&reason={code}")).await;
    assert_eq!(letters.len(), 4);
    let last = letters.iter().find(|r| r["redrives"] == 0).unwrap();
    assert_eq!(last["redrive_count"], 3);
    let (status, answer) = world.redrive(json!({"ids": [last["id"]]})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["max_redrives"], 3);
    assert_eq!(answer["redriven"], json!([]), "{answer}");
    let refused = &answer["refused"][0];
    assert_eq!(refused["why"], "max_redrives");
    assert_eq!(refused["redrive_count"], 3);
    assert!(refused["message"]
        .as_str()
        .unwrap()
        .contains("maximum is 3"));

    // `again` counts toward the maximum too: the third copy's dead letter
    // (count 2) was redriven once, so once more would be a fourth.
    let third = letters.iter().find(|r| r["redrive_count"] == 2).unwrap();
    let (_, again) = world
        .redrive(json!({"ids": [third["id"]], "again": true}))
        .await;
    assert_eq!(again["refused"][0]["why"], "max_redrives", "{again}");

    // By reason: every one of them refused, each with its why.
    let (_, all) = world.redrive(json!({"reason": code})).await;
    assert_eq!(all["matched"], 4);
    assert_eq!(all["redriven"], json!([]));
    assert_eq!(
        all["refused_counts"],
        json!({"already_redriven": 3, "max_redrives": 1})
    );

    // One original and three copies on the topic, nothing more.
    world
        .app
        .env
        .read_exactly(&events, 4, Duration::from_secs(30))
        .await;
    let after = world.app.scrape().await;
    let delta = |name: &str, label: &str| {
        shared::testkit::metric(&after, name, &[label])
            - shared::testkit::metric(&before, name, &[label])
    };
    assert_eq!(delta("kappa_dlq_redriven_total", "code=\"other\""), 3.0);
    assert_eq!(
        delta("kappa_dlq_redrive_refused_total", "why=\"max_redrives\""),
        3.0
    );
    world.app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_refused_and_name_the_field() {
    let world = World::new("dlq_bad").await;
    let events = world.events.clone();
    world.dead_letter(Some("u1"), b"{bad", "invalid_json").await;
    // A dead letter whose origin is not the stream's, one without any.
    let elsewhere = OwnedMessage::new(
        Some(b"{}".to_vec()),
        None,
        "not-the-stream".into(),
        rdkafka::Timestamp::CreateTime(1_000),
        0,
        5,
        None,
    );
    world
        .letters
        .send(&elsewhere, "invalid_json", "elsewhere")
        .await
        .unwrap();
    let dlq = world.app.env.settings.kafka.dlq_topic.clone();
    world.produce(&dlq, None, b"{}", &[], None).await;

    // No token: 401 before anything else.
    let url = world.app.url("/dlq");
    assert_eq!(
        world.app.client.get(&url).send().await.unwrap().status(),
        401
    );
    let url = world.app.url("/dlq/redrive");
    let response = world
        .app
        .client
        .post(&url)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = world
        .app
        .client
        .get(world.app.url("/dlq"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // An empty filter never means "everything".
    for empty in [
        json!({}),
        json!({"ids": []}),
        json!({"origin": {}}),
        json!({"again": true, "dry_run": false}),
    ] {
        let (status, body) = world.redrive(empty.clone()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("empty_filter")),
            "{empty}: {body}"
        );
    }
    for (filter, field) in [
        (json!({"reason": ""}), "reason"),
        (json!({"origin": {"partition": -1}}), "origin.partition"),
        (json!({"origin": {"from_offset": -3}}), "origin.from_offset"),
        (
            json!({"origin": {"from_offset": 5, "to_offset": 5}}),
            "origin.to_offset",
        ),
        (json!({"origin": {"topic": ""}}), "origin.topic"),
        (json!({"ids": ["0:0"], "limit": 0}), "limit"),
        (json!({"ids": ["0:0"], "limit": 1001}), "limit"),
        (json!({"ids": [""]}), "ids"),
    ] {
        let (status, body) = world.redrive(filter.clone()).await;
        assert_eq!(status, 400, "{filter}: {body}");
        assert_eq!(body["field"], field, "{filter}: {body}");
    }
    for (filter, named) in [
        (json!({"ids": ["0:0"], "bogus": 1}), "bogus"),
        (json!({"ids": "0:0"}), "ids"),
        (json!({"ids": ["0:0"], "limit": "ten"}), "limit"),
    ] {
        let (status, body) = world.redrive(filter.clone()).await;
        assert_eq!(status, 400, "{filter}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(named),
            "{filter}: {body}"
        );
    }
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("after=garbage", "after"),
        ("after=0:1,0:2", "after"),
        ("after=0:-4", "after"),
        ("after=99:0", "after"),
    ] {
        let (status, body) = world.get(&format!("/dlq?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["field"], field, "{query}: {body}");
    }
    let (status, body) = world.get("/dlq?bogus=1").await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("bogus"),
        "{body}"
    );

    // Dead letters a redrive cannot send anywhere are refused and reported.
    let (status, answer) = world.redrive(json!({"reason": "invalid_json"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["refused_counts"],
        json!({"origin_topic_not_allowed": 1}),
        "{answer}"
    );
    assert_eq!(answer["redriven"].as_array().unwrap().len(), 1);
    let (_, answer) = world.redrive(json!({"reason": "unknown"})).await;
    assert_eq!(answer["refused"][0]["why"], "no_origin", "{answer}");
    // Only the one that could be redriven reached the topic.
    world
        .app
        .env
        .read_exactly(&events, 2, Duration::from_secs(30))
        .await;

    // The routes are described, with their parameters and body.
    let (status, api) = world.get("/openapi.json").await;
    assert_eq!(status, 200);
    let list = &api["paths"]["/dlq"]["get"];
    let names: BTreeSet<&str> = list["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, BTreeSet::from(["reason", "after", "limit"]));
    assert_eq!(list["security"][0]["bearer"], json!([]));
    let redrive = &api["paths"]["/dlq/redrive"]["post"];
    assert!(redrive["requestBody"].is_object(), "{redrive}");
    assert!(redrive["responses"]["400"].is_object() && redrive["responses"]["401"].is_object());
    world.app.stop().await;
}

/// Every consumer group that refuses a record writes a dead letter of its
/// own: five here, of one view without an id keyed by another user. A
/// redrive republishes the record once for all five, with its first origin
/// (the id every consumer derives for the copy is the original's); the same
/// range again publishes nothing; a copy that fails again (five dead
/// letters more) comes back as one copy, never five or twenty-five.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_dead_lettered_by_many_consumers_is_redriven_once() {
    let _turn = METRICS.lock().await;
    let world = World::new("dlq_once").await;
    let events = world.events.clone();
    let body = br#"{"type":"interaction","user_id":"u5","product_id":"p5","action":"view","ts":"1971-07-13T00:00:00Z"}"#;
    let (p, o) = world
        .produce(&events, Some("wrongkey"), body, &[], None)
        .await;
    for _ in 0..5 {
        world
            .letters
            .send_from_origin(&events, p, o, "key_mismatch", "keyed wrong")
            .await
            .unwrap();
    }
    let range = json!({"topic": events, "partition": p, "from_offset": o, "to_offset": o + 1});

    let (status, answer) = world.redrive(json!({"origin": range})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["matched"], 5, "{answer}");
    let copies = answer["redriven"].as_array().unwrap();
    assert_eq!(copies.len(), 1, "one copy for five dead letters: {answer}");
    assert_eq!(copies[0]["dead_letters"].as_array().unwrap().len(), 5);
    assert_eq!(copies[0]["redrive_count"], 1);
    let copy = world.fetch(&copies[0]["to"]).await;
    assert_eq!(copy.key(), Some(&b"u5"[..]), "rekeyed by its entity");
    // The copy is the original event to every consumer: the id they derive
    // for it is the one they would have derived for the original.
    let place = shared::consume::Place::copied(copy.headers()).expect("a copy names its origin");
    assert_eq!(place.derived_id(), shared::event::derived_id(&events, p, o));
    let listed = world.all("").await;
    assert!(
        listed.iter().all(|r| r["redrives"] == 1),
        "all five marked: {listed:?}"
    );
    assert!(listed
        .iter()
        .all(|r| r["event_id"] == place.derived_id().to_string()));

    // The same range again: every dead letter already redriven, nothing published.
    let (_, twice) = world.redrive(json!({"origin": range})).await;
    assert_eq!(twice["redriven"], json!([]), "{twice}");
    assert_eq!(twice["refused_counts"], json!({"already_redriven": 5}));
    world
        .app
        .env
        .read_exactly(&events, 2, Duration::from_secs(30))
        .await;

    // The copy fails again in all five consumers: one copy again, the
    // second, counted as such; the older dead letters stay redriven.
    for _ in 0..5 {
        world
            .letters
            .send(&copy, "key_mismatch", "failed again")
            .await
            .unwrap();
    }
    let (_, dry) = world
        .redrive(json!({"origin": range, "dry_run": true}))
        .await;
    assert_eq!(dry["matched"], 10, "{dry}");
    assert_eq!(dry["redriven"].as_array().unwrap().len(), 1, "{dry}");
    assert_eq!(dry["redriven"][0]["redrive_count"], 2);
    assert_eq!(
        dry["redriven"][0]["dead_letters"].as_array().unwrap().len(),
        5
    );
    assert_eq!(dry["refused_counts"], json!({"already_redriven": 5}));
    // Asked again for all ten: still one copy, counted after the highest.
    let (_, again) = world.redrive(json!({"origin": range, "again": true})).await;
    assert_eq!(again["redriven"].as_array().unwrap().len(), 1, "{again}");
    assert_eq!(again["redriven"][0]["redrive_count"], 2);
    assert_eq!(
        again["redriven"][0]["dead_letters"]
            .as_array()
            .unwrap()
            .len(),
        10
    );
    world
        .app
        .env
        .read_exactly(&events, 3, Duration::from_secs(30))
        .await;
    world.app.stop().await;
}
