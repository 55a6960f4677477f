//! MapReduce jobs on the real broker and database: counts equal an
//! independent count (messy real-world lines included), through SIGKILLs of
//! a mapper and a reducer, with overlapping jobs, cancellation and bad
//! requests.

mod common;

use std::time::Duration;

use common::{independent_count, loadgen_lines, World};
use reqwest::Method;
use serde_json::json;

/// Real logs' oddities, each with the page it must count for (or none: rejected).
fn messy() -> Vec<(Vec<u8>, Option<&'static str>)> {
    let long = format!(
        r#"192.0.2.3 - - [26/Nov/2026:10:00:00 +0000] "GET /{} HTTP/1.1" 200 5 "-" "-""#,
        "x".repeat(400)
    );
    let mut lines: Vec<(Vec<u8>, Option<&'static str>)> = [
        (r#"2001:db8::7 - - [26/Nov/2026:10:00:00 +0000] "GET /products/p1?utm=x HTTP/1.1" 200 - "-" "Mozilla/5.0""#, Some("/products/p1")),
        (r#"192.0.2.1 - alice [26/Nov/2026:10:00:01 +0000] "POST /cart HTTP/2.0" 302 - "https://shop.example/cart" "agent \"with\" quotes""#, Some("/cart")),
        (r#"192.0.2.2 - - [26/Nov/2026:10:00:02 +0000] "GET http://shop.example/products/p1 HTTP/1.0" 200 10 "-" "-""#, Some("/products/p1")),
        (r#"192.0.2.2 - - [26/Nov/2026:10:00:03 +0000] "-" 408 0 "-" "-""#, None),
        ("192.0.2.2 - - [26/Nov/2026:10:00:04 +0000] \"\\x16\\x03\\x01\\x00\\xa5\\x01\" 400 0 \"-\" \"-\"", None),
        (r#"192.0.2.2 - - [26/Nov/2026:10:00:05 +0000] "GET /cart HTTP/1.1" 200"#, None),
        ("garbage that is not a log line", None),
        (r#"192.0.2.9 - - [26/Nov/2026:10:00:06 +0000] "GET /a#frag HTTP/1.1" 200 1 "-" "-""#, Some("/a")),
    ]
    .into_iter()
    .map(|(l, p)| (l.as_bytes().to_vec(), p))
    .collect();
    lines.push((long.into_bytes(), None));
    lines.push((b"\xff\xfe not utf-8".to_vec(), None));
    lines
}

#[tokio::test(flavor = "multi_thread")]
async fn counts_equal_an_independent_count_and_every_line_is_counted_or_dead_lettered() {
    let world = World::new("pc_counts").await;
    let generated = loadgen_lines(3_000, 5);
    let mut expected = independent_count(&generated);
    let messy = messy();
    let mut rejected = 0;
    for (_, page) in &messy {
        match page {
            Some(page) => *expected.entry((*page).to_owned()).or_default() += 1,
            None => rejected += 1,
        }
    }
    let mut lines = generated.clone();
    lines.extend(messy.into_iter().map(|(l, _)| l));
    world.produce(&lines).await;
    // A redrive's copy of a record of three lines, two of them bad: each
    // bad line is a dead letter of its own (its index in the record) that
    // keeps the copy's redrive count and first origin.
    let copy_of = [
        ("redrive-count", "1"),
        ("redrive.origin.topic", "access-logs-elsewhere"),
        ("redrive.origin.partition", "0"),
        ("redrive.origin.offset", "77"),
    ];
    let good = r#"192.0.2.4 - - [26/Nov/2026:10:00:07 +0000] "GET /cart HTTP/1.1" 200 1 "-" "-""#;
    world
        .produce_with(format!("bad one\n{good}\nbad two").as_bytes(), &copy_of)
        .await;
    *expected.entry("/cart".to_owned()).or_default() += 1;
    rejected += 2;
    let read = lines.len() + 3;

    let coordinator = world.spawn("coordinator", "1").await;
    let _map = world.spawn("map", "1").await;
    let _reduce = world.spawn("reduce", "1").await;
    let id = world.job(&coordinator, json!({"chunk_lines": 400})).await;
    let job = world
        .finished(&coordinator, id, Duration::from_secs(120))
        .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["lines"]["read"], read as u64, "{job}");
    assert_eq!(job["lines"]["rejected"], rejected, "{job}");
    assert_eq!(job["lines"]["counted"], (read - rejected) as u64);
    assert_eq!(job["chunks"]["done"], job["chunks"]["total"]);
    assert!(job["shuffle"]["records"].as_u64().unwrap() > 0);
    assert_eq!(world.pages(&coordinator, id).await, expected);
    // Every rejected line is in the DLQ with its reason and origin.
    let dead = world
        .env
        .read_exactly(
            &world.env.settings.kafka.dlq_topic,
            rejected,
            Duration::from_secs(30),
        )
        .await;
    let mut copied = Vec::new();
    for message in &dead {
        use rdkafka::message::{Headers, Message};
        let headers = message.headers().unwrap();
        let codes: Vec<&str> = headers
            .iter()
            .filter(|h| h.key == "dlq.code")
            .map(|h| std::str::from_utf8(h.value.unwrap()).unwrap())
            .collect();
        assert_eq!(codes.len(), 1);
        assert!(headers.iter().any(|h| h.key == "dlq.origin.offset"));
        let text = |name| shared::dlq::header_str(headers, name).map(str::to_owned);
        if message.payload().is_some_and(|p| p.starts_with(b"bad ")) {
            copied.push((
                String::from_utf8_lossy(message.payload().unwrap()).into_owned(),
                text("dlq.origin.line"),
                text("redrive-count"),
                text("redrive.origin.offset"),
            ));
        }
    }
    copied.sort();
    let carried = |line: &str, index: &str| {
        (
            line.to_owned(),
            Some(index.to_owned()),
            Some("1".to_owned()),
            Some("77".to_owned()),
        )
    };
    assert_eq!(copied, [carried("bad one", "0"), carried("bad two", "2")]);
    // The single-process count agrees.
    let kafka = world.env.settings.kafka.clone();
    let topic = kafka.access_logs_topic.clone();
    let local = tokio::task::spawn_blocking(move || pagecount::local::count_topic(&kafka, &topic))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(local.pages, expected);
    assert_eq!(local.rejected as usize, rejected);

    // The same count without the combiner: one shuffle record per line.
    let plain = world
        .job(
            &coordinator,
            json!({"chunk_lines": 1000, "combiner": false}),
        )
        .await;
    let job = world
        .finished(&coordinator, plain, Duration::from_secs(120))
        .await;
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["shuffle"]["records"], (read - rejected) as u64, "{job}");
    assert_eq!(world.pages(&coordinator, plain).await, expected);

    // The logs an operator reads: the mapper's chunk reader reaching the end
    // of a partition is not an error, no line carries a path of the build
    // machine, and the coordinator logs each request with its id.
    let map_log = std::fs::read_to_string(&_map.log).unwrap();
    for line in map_log.lines() {
        assert!(!line.contains("PartitionEOF"), "{line}");
        assert!(!line.contains("\"level\":\"ERROR\""), "{line}");
        assert!(
            !line.contains("/.cargo/") && !line.contains("log.file"),
            "{line}"
        );
    }
    let coordinator_log = std::fs::read_to_string(&coordinator.log).unwrap();
    let access: Vec<serde_json::Value> = coordinator_log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["target"] == "access" && l["path"] == "/jobs" && l["method"] == "POST")
        .collect();
    assert_eq!(
        access.len(),
        2,
        "one access line per POST /jobs:\n{coordinator_log}"
    );
    for line in &access {
        assert_eq!(line["status"], 202, "{line}");
        assert!(
            line["request_id"].as_str().is_some_and(|id| id.len() >= 32),
            "{line}"
        );
        assert!(line["latency_ms"].as_f64().is_some(), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkills_of_a_mapper_and_a_reducer_leave_exact_counts() {
    let world = World::new("pc_crash").await;
    let lines = loadgen_lines(60_000, 9);
    let expected = independent_count(&lines);
    world.produce(&lines).await;
    let coordinator = world.spawn("coordinator", "1").await;
    let first_map = world.spawn("map", "1").await;
    let _second_map = world.spawn("map", "2").await;
    let first_reduce = world.spawn("reduce", "1").await;
    let _second_reduce = world.spawn("reduce", "2").await;
    let id = world.job(&coordinator, json!({"chunk_lines": 500})).await;
    // Mid-job: some chunks are through, most are not.
    shared::testkit::eventually(
        "some chunks to be mapped",
        Duration::from_secs(60),
        || async {
            let (_, job) = world
                .call(
                    Method::GET,
                    format!("{}/jobs/{id}", coordinator.base()),
                    None,
                )
                .await;
            (job["chunks"]["done"].as_u64()? >= 10).then_some(())
        },
    )
    .await;
    first_map.kill();
    first_reduce.kill();
    let _first_map = world.spawn("map", "1").await;
    let _first_reduce = world.spawn("reduce", "1").await;
    let job = world
        .finished(&coordinator, id, Duration::from_secs(180))
        .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(
        job["lines"]["counted"],
        lines.len() as u64,
        "no line counted twice or lost: {job}"
    );
    assert_eq!(job["lines"]["rejected"], 0);
    assert_eq!(world.pages(&coordinator, id).await, expected);
    // Two reducers finishing partitions of one job wait for each other's
    // lock on the job's row; neither is chosen as a deadlock's victim.
    let deadlocks = world.log_lines("deadlock detected");
    assert!(deadlocks.is_empty(), "{deadlocks:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn overlapping_jobs_are_each_exact_a_cancelled_one_serves_nothing_and_bad_requests_are_refused(
) {
    let world = World::new("pc_jobs").await;
    let lines = loadgen_lines(8_000, 3);
    world.produce(&lines).await;
    let coordinator = world.spawn("coordinator", "1").await;
    let _map = world.spawn("map", "1").await;
    let _reduce = world.spawn("reduce", "1").await;
    let base = coordinator.base();

    // Bad requests.
    let (status, body) = world
        .call(Method::GET, format!("{base}/jobs/999999"), None)
        .await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let (status, _) = world
        .call(
            Method::POST,
            format!("{base}/jobs"),
            Some(json!({"offsets": {"0": [5, 2]}})),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = world
        .call(
            Method::POST,
            format!("{base}/jobs"),
            Some(json!({"offsets": {"99": [0, 1]}})),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = world
        .call(
            Method::POST,
            format!("{base}/jobs"),
            Some(json!({"chunk_lines": 1})),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = world
        .call(
            Method::POST,
            format!("{base}/jobs"),
            Some(json!({"from": "yesterday"})),
        )
        .await;
    assert_eq!(status, 400);
    // A job over the whole topic in disguise, and an empty one: refused as
    // the dashboard's replays refuse them, naming the field.
    for (range, field) in [
        (json!({"from": "0001-01-01T00:00:00Z"}), "from"),
        (json!({"from": "1969-12-31T23:59:59Z"}), "from"),
        (json!({"to": "1900-01-01T00:00:00Z"}), "to"),
        (
            json!({"from": "2026-11-27T00:00:00Z", "to": "2026-11-26T00:00:00Z"}),
            "to",
        ),
        (
            json!({"from": "2026-11-26T00:00:00Z", "to": "2026-11-26T00:00:00Z"}),
            "to",
        ),
    ] {
        let (status, body) = world
            .call(Method::POST, format!("{base}/jobs"), Some(range.clone()))
            .await;
        assert_eq!(
            (status, body["error"].as_str(), body["field"].as_str()),
            (400, Some("invalid_range"), Some(field)),
            "{range}: {body}"
        );
    }
    let status = world
        .client
        .get(format!("{base}/jobs"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);

    // Two jobs at once over overlapping ranges: everything, and partition 0's first half.
    let (status, whole) = world
        .call(
            Method::POST,
            format!("{base}/jobs"),
            Some(json!({"chunk_lines": 300})),
        )
        .await;
    assert_eq!(status, 202, "{whole}");
    let end0 = whole["ranges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["partition"] == 0)
        .unwrap()["end"]
        .as_i64()
        .unwrap();
    let half = world
        .job(
            &coordinator,
            json!({"offsets": {"0": [0, end0 / 2]}, "chunk_lines": 200}),
        )
        .await;
    let whole = whole["id"].as_i64().unwrap();
    // A third, cancelled at once.
    let cancelled = world.job(&coordinator, json!({"chunk_lines": 100})).await;
    let (status, job) = world
        .call(
            Method::POST,
            format!("{base}/jobs/{cancelled}/cancel"),
            None,
        )
        .await;
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("cancelled")),
        "{job}"
    );

    let job = world
        .finished(&coordinator, whole, Duration::from_secs(120))
        .await;
    assert_eq!(job["state"], "succeeded");
    assert_eq!(
        world.pages(&coordinator, whole).await,
        independent_count(&lines)
    );
    let job = world
        .finished(&coordinator, half, Duration::from_secs(120))
        .await;
    assert_eq!(job["state"], "succeeded");
    let counted: u64 = world.pages(&coordinator, half).await.values().sum();
    assert_eq!(counted as i64, end0 / 2, "{job}");

    let (status, body) = world
        .call(Method::GET, format!("{base}/jobs/{cancelled}/pages"), None)
        .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (409, Some("cancelled")),
        "{body}"
    );
    let (pages,): (i64,) = sqlx::query_as("SELECT count(*) FROM pagecount_pages WHERE job_id = $1")
        .bind(cancelled)
        .fetch_one(&world.env.pool().await)
        .await
        .unwrap();
    // Reducers skip a cancelled job's records, and the cancel removed what was there.
    assert_eq!(pages, 0);
    let (status, _) = world
        .call(Method::POST, format!("{base}/jobs/{whole}/cancel"), None)
        .await;
    assert_eq!(status, 409, "a finished job cannot be cancelled");
    let (status, list) = world.call(Method::GET, format!("{base}/jobs"), None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["jobs"].as_array().unwrap().len(), 3);
}

/// `/openapi.json` of the coordinator describes its routes (202 for a new
/// job, 409 for a finished or unfinished one) with the shared error answers;
/// a mapper describes only its ops routes.
#[tokio::test(flavor = "multi_thread")]
async fn the_api_is_described_with_its_error_answers() {
    let world = World::new("pc_openapi").await;
    let coordinator = world.spawn("coordinator", "1").await;
    let api = shared::testkit::assert_openapi(
        &format!("127.0.0.1:{}", coordinator.port),
        &[
            "GET /jobs",
            "POST /jobs",
            "GET /jobs/{id}",
            "POST /jobs/{id}/cancel",
            "GET /jobs/{id}/pages",
        ],
    )
    .await;
    let start = &api["paths"]["/jobs"]["post"];
    assert_eq!(
        start["responses"]["202"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Job"
    );
    assert!(
        start["responses"]["415"].is_object(),
        "a body: 415 documented"
    );
    assert!(api["paths"]["/jobs/{id}/cancel"]["post"]["responses"]["409"].is_object());
    assert!(api["paths"]["/jobs/{id}/pages"]["get"]["responses"]["409"].is_object());
    let schemas = &api["components"]["schemas"];
    assert_eq!(
        schemas["JobState"]["enum"],
        json!(["running", "succeeded", "cancelled"])
    );
    let offsets = &schemas["NewJob"]["properties"]["offsets"];
    assert_eq!(offsets["additionalProperties"]["maxItems"], 2, "{offsets}");
    assert!(schemas["FinalPartitions"]["properties"]["final"].is_object());

    // The answer has the shape described, and nothing to count (a range
    // before every record) succeeds at once.
    let base = coordinator.base();
    let (status, job) = world
        .call(
            Method::POST,
            format!("{base}/jobs"),
            Some(json!({"from": "1970-01-01T00:00:00Z", "to": "1970-01-01T00:00:01Z"})),
        )
        .await;
    assert_eq!(
        (status, job["state"].as_str()),
        (202, Some("succeeded")),
        "{job}"
    );
    for field in [
        "chunks",
        "shuffle_partitions",
        "lines",
        "shuffle",
        "seconds",
    ] {
        assert!(job[field].is_object(), "{field}: {job}");
    }
    assert_eq!(job["shuffle_partitions"]["final"], 0);
    let (status, _) = world
        .call(
            Method::GET,
            format!("{base}/jobs/{}/pages?after=1:%00", job["id"]),
            None,
        )
        .await;
    assert_eq!(status, 400);

    let mapper = world.spawn("map", "1").await;
    shared::testkit::assert_openapi(&format!("127.0.0.1:{}", mapper.port), &[]).await;
}
