//! The replay engine on the real broker: a snapshotted range is read exactly,
//! whatever arrives meanwhile; ranges start and end by time; claim-checked
//! envelopes are counted without their payload; progress ends at 1.

use std::time::Duration;

use rdkafka::producer::FutureRecord;
use shared::event::{ClaimRef, ClaimedEvent, Envelope, Event, EventBody, EventType};
use shared::replay::{self, From, Progress};
use shared::testkit::TestEnv;

const DAY_MS: i64 = 86_400_000;
// 2026-11-01T00:00:00Z
const NOV_1: i64 = 1_793_491_200_000;

async fn produce(env: &TestEnv, day: i64, count: usize, tag: &str) {
    let producer = shared::kafka::producer(&env.settings.kafka).unwrap();
    let topic = &env.settings.kafka.events_topic;
    for i in 0..count {
        let user = format!("u{}", i % 7);
        let payload = format!(
            r#"{{"type":"interaction","user_id":"{user}","product_id":"{tag}-{i}","action":"view"}}"#
        );
        let record = FutureRecord::to(topic)
            .key(&user)
            .payload(&payload)
            .timestamp(NOV_1 + day * DAY_MS + i as i64);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

/// (partition, offset, product id or the key of a non-interaction) per record read.
fn read(env: &TestEnv, plan: &replay::Plan) -> (Vec<(i32, i64, String)>, usize, f64) {
    let progress = Progress::new(plan.total());
    let (mut seen, mut rejected) = (Vec::new(), 0);
    replay::run(
        &env.settings.kafka,
        plan,
        &progress,
        &shared::shutdown::CancellationToken::new(),
        |r| match r {
            Ok(received) => {
                let what = match &received.envelope {
                    Envelope::Inline(Event {
                        body: EventBody::Interaction(i),
                        ..
                    }) => i.product_id.clone(),
                    other => other.key().to_owned(),
                };
                seen.push((received.partition, received.offset, what));
            }
            Err(_) => rejected += 1,
        },
    )
    .unwrap();
    (seen, rejected, progress.view().fraction)
}

#[tokio::test(flavor = "multi_thread")]
async fn replays_read_a_fixed_range_by_offset_and_time() {
    let env = TestEnv::new("replay_range").await;
    let kafka = &env.settings.kafka;
    produce(&env, 0, 40, "d0").await;
    produce(&env, 1, 30, "d1").await;
    produce(&env, 2, 20, "d2").await;
    // A poison record and a claim-checked envelope whose payload does not exist:
    // a replay counts both and fetches nothing.
    let producer = shared::kafka::producer(kafka).unwrap();
    let claimed = ClaimedEvent {
        event_type: EventType::ProductUploaded,
        id: None,
        ts: None,
        key: "p1".into(),
        claim_check: ClaimRef {
            token: uuid::Uuid::nil(),
            sha256: "00".repeat(32),
            size: 1 << 20,
            content_type: "application/json".into(),
        },
    };
    for payload in [b"not json".to_vec(), claimed.to_json()] {
        let record = FutureRecord::to(&kafka.events_topic)
            .key("p1")
            .payload(&payload)
            .timestamp(NOV_1 + 2 * DAY_MS + 999);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    let everything = tokio::task::block_in_place(|| {
        replay::plan(kafka, &kafka.events_topic, From::Earliest, None)
    })
    .unwrap();
    assert_eq!(everything.total(), 92);
    // Records arriving after the snapshot are not part of the replay.
    produce(&env, 3, 10, "late").await;
    let (seen, rejected, fraction) = tokio::task::block_in_place(|| read(&env, &everything));
    assert_eq!((seen.len(), rejected, fraction), (91, 1, 1.0));
    assert!(seen.iter().all(|(_, _, key)| !key.starts_with("late")));
    assert_eq!(
        seen.iter().filter(|(_, _, key)| key == "p1").count(),
        1,
        "the claim-checked envelope is counted"
    );
    // Same range, same records in the same per-partition order.
    let (again, _, _) = tokio::task::block_in_place(|| read(&env, &everything));
    let by_partition = |mut v: Vec<(i32, i64, String)>| {
        v.sort();
        v
    };
    assert_eq!(by_partition(again), by_partition(seen));

    // From a time: only days 1 and later (up to the snapshot taken now).
    let day1: chrono::DateTime<chrono::Utc> =
        chrono::DateTime::from_timestamp_millis(NOV_1 + DAY_MS).unwrap();
    let from_day1 = tokio::task::block_in_place(|| {
        replay::plan(kafka, &kafka.events_topic, From::Time(day1), None)
    })
    .unwrap();
    assert_eq!(from_day1.total(), 30 + 20 + 2 + 10);
    // Between two times: day 1 only.
    let day2 = chrono::DateTime::from_timestamp_millis(NOV_1 + 2 * DAY_MS).unwrap();
    let day1_only = tokio::task::block_in_place(|| {
        replay::plan(kafka, &kafka.events_topic, From::Time(day1), Some(day2))
    })
    .unwrap();
    let (seen, _, _) = tokio::task::block_in_place(|| read(&env, &day1_only));
    assert_eq!(seen.len(), 30);
    assert!(seen
        .iter()
        .all(|(_, _, product)| product.starts_with("d1-")));
}
