//! Incremental runs: automatic runs over a topic filled in steps (late
//! events for old days, repeated event ids near and far apart, records
//! without ids sent twice, records that do not parse) read only the new
//! records (repeat detection going on from where the run before ended, or
//! read again from the topic when that is not stored), and the chain of
//! them stores exactly what one full replay of the whole topic stores: every day's numbers, top products and mergeable
//! state. A state made by another aggregation version is never merged into
//! (the next run is full); a state that does not decode fails the run and
//! changes nothing served.

mod common;

use std::time::Duration;

use chrono::NaiveDate;
use common::Service;
use futures::future::join_all;
use rdkafka::producer::FutureRecord;
use serde_json::{json, Value};
use shared::testkit::TestEnv;
use sqlx::PgPool;

use dashboard::store::{self, Trigger};

/// A record: key, payload, timestamp (ms).
type Record = (String, String, i64);

/// A small deterministic generator (xorshift64*): the same steps every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// `count` interactions dated on `days` (a quarter of them without an id),
/// from 40 users over 12 products, so the top lists have ties.
fn interactions(rng: &mut Rng, count: usize, days: &[&str]) -> Vec<Record> {
    (0..count)
        .map(|_| {
            let user = format!("u{}", rng.below(40));
            let product = format!("p{}", rng.below(12));
            let day: NaiveDate = days[rng.below(days.len() as u64) as usize].parse().unwrap();
            let at = day.and_hms_opt(rng.below(24) as u32, rng.below(60) as u32, 0).unwrap();
            let ts = at.and_utc();
            let (action, price) = match rng.below(4) {
                0 => ("view", String::new()),
                1 => ("click", String::new()),
                2 => ("add_to_cart", String::new()),
                _ => ("purchase", format!(r#","price_cents":{}"#, 100 + rng.below(900))),
            };
            let id = match rng.below(4) {
                0 => String::new(),
                _ => format!(
                    r#""id":"0193a5c2-7f1e-7000-8000-{:012x}","#,
                    rng.below(1 << 40)
                ),
            };
            let payload = format!(
                r#"{{"type":"interaction",{id}"user_id":"{user}","product_id":"{product}","action":"{action}"{price},"ts":"{}"}}"#,
                ts.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            (user, payload, ts.timestamp_millis())
        })
        .collect()
}

/// `count` of `earlier`'s records sent again (the same bytes, the same key).
fn repeats(rng: &mut Rng, earlier: &[Record], count: usize) -> Vec<Record> {
    (0..count)
        .map(|_| earlier[rng.below(earlier.len() as u64) as usize].clone())
        .collect()
}

async fn produce(env: &TestEnv, records: &[Record]) {
    let producer = shared::kafka::producer(&env.settings.kafka).unwrap();
    let topic = &env.settings.kafka.events_topic;
    let sends = records.iter().map(|(key, payload, ts)| {
        producer.send(
            FutureRecord::to(topic)
                .key(key)
                .payload(payload)
                .timestamp(*ts),
            Duration::from_secs(30),
        )
    });
    for sent in join_all(sends).await {
        sent.map_err(|(e, _)| e).unwrap();
    }
}

/// Queues an automatic run as a trigger would and waits for it to end.
async fn automatic(service: &Service, pool: &PgPool) -> Value {
    let id = store::enqueue_automatic(pool, Trigger::Threshold)
        .await
        .unwrap()
        .expect("no automatic run was waiting");
    let runs = service
        .wait_runs("the automatic run to end", |runs| {
            runs.iter()
                .any(|r| r["id"] == id && (r["state"] == "succeeded" || r["state"] == "failed"))
        })
        .await;
    runs.into_iter().find(|r| r["id"] == id).unwrap()
}

/// Everything a run stored: its days and its top lists, run id left out.
async fn stored(pool: &PgPool, run: &Value) -> (Vec<Value>, Vec<Value>) {
    let id = run["id"].as_i64().unwrap();
    let rows = |sql: &'static str| async move {
        sqlx::query_scalar::<_, Value>(sql)
            .bind(id)
            .fetch_all(pool)
            .await
            .unwrap()
    };
    let days =
        rows("SELECT to_jsonb(d) - 'run_id' FROM dashboard_daily d WHERE run_id = $1 ORDER BY day")
            .await;
    let top = rows(
        "SELECT to_jsonb(t) - 'run_id' FROM dashboard_top_products t WHERE run_id = $1
         ORDER BY day, by, rank",
    )
    .await;
    (days, top)
}

async fn states(pool: &PgPool) -> Vec<(NaiveDate, Vec<u8>)> {
    sqlx::query_as("SELECT day, state FROM dashboard_day_state ORDER BY day")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chain_of_incremental_runs_equals_a_full_replay() {
    let env = TestEnv::new("dash_incremental").await;
    // A short dedupe window: some repeats come within it (skipped), some
    // after it (counted), and some windows reach back across a run's start.
    let mut settings = env.settings.clone();
    settings.kafka.dedupe_window = 40;
    let service = Service::start_with(settings, common::config()).await;
    let pool = env.pool().await;
    let mut rng = Rng(0x6b61_7070_6121);

    // Step 1, then the first automatic run: no state yet, so it is full.
    let first = interactions(&mut rng, 600, &["2026-10-01", "2026-10-02", "2026-10-03"]);
    produce(&env, &first).await;
    let a = automatic(&service, &pool).await;
    assert_eq!(
        (&a["state"], &a["kind"], &a["records"]),
        (&json!("succeeded"), &json!("full"), &json!(600)),
        "{a}"
    );

    // Step 2: new days, late events for the first day, repeats of step 1,
    // and records that are not events.
    // First repeats of step 1's last records, most of them within the
    // window of their first copy, across the run's start.
    let mut second = repeats(&mut rng, &first[500..], 40);
    second.extend(interactions(
        &mut rng,
        400,
        &["2026-10-03", "2026-10-04", "2026-10-05"],
    ));
    second.extend(interactions(&mut rng, 60, &["2026-10-01"]));
    second.extend(repeats(&mut rng, &first, 80));
    second.push(("u1".into(), "{not json".into(), 0));
    second.push(("u2".into(), r#"{"type":"mystery"}"#.into(), 0));
    produce(&env, &second).await;
    let b = automatic(&service, &pool).await;
    assert_eq!(
        (&b["state"], &b["kind"], &b["base_run_id"], &b["records"]),
        (
            &json!("succeeded"),
            &json!("incremental"),
            &a["id"],
            &json!(second.len())
        ),
        "the run reads only the records after its base: {b}"
    );
    assert_eq!(b["rejected"], 2, "{b}");

    // Step 3: later days, late events for the second day, repeats of both steps.
    let tail = &second[second.len() - 120..second.len() - 2];
    let mut third = repeats(&mut rng, tail, 40);
    third.extend(interactions(&mut rng, 300, &["2026-10-05", "2026-10-06"]));
    third.extend(interactions(&mut rng, 40, &["2026-10-02"]));
    third.extend(repeats(&mut rng, &second[40..500], 50));
    third.extend(repeats(&mut rng, &first, 20));
    produce(&env, &third).await;
    // This run finds no stored repeat detection (a base made before it was
    // stored): it reads the window's records before its start instead.
    sqlx::query("UPDATE dashboard_current SET windows = NULL")
        .execute(&pool)
        .await
        .unwrap();
    let c = automatic(&service, &pool).await;
    assert_eq!(
        (&c["kind"], &c["base_run_id"], &c["records"]),
        (&json!("incremental"), &b["id"], &json!(third.len())),
        "{c}"
    );
    let chained = (stored(&pool, &c).await, states(&pool).await);
    // The page says which runs were incremental, and after which run.
    let page = service.page().await;
    for (run, read) in [
        (&a, "full".to_owned()),
        (&c, format!("incremental after #{}", b["id"])),
    ] {
        let row = format!(r#"<tr data-run="{}">"#, run["id"]);
        let cells = page
            .split(&row)
            .nth(1)
            .unwrap_or_else(|| panic!("no {row}"));
        let cell = cells.split(r#"<td class="range">"#).nth(1).unwrap();
        assert!(cell.starts_with(&format!("{read}</td>")), "{row}: {cell}");
    }

    // One full replay of the whole topic stores exactly the same.
    let (d, _) = service.replay(json!({"from": "earliest"})).await;
    assert_eq!(
        (&d["state"], &d["kind"]),
        (&json!("succeeded"), &json!("full")),
        "{d}"
    );
    let whole = (stored(&pool, &d).await, states(&pool).await);
    assert_eq!(chained.0 .0.len(), 6, "six days: {:?}", chained.0 .0);
    assert_eq!(
        chained.0, whole.0,
        "the chain's results differ from a full replay's"
    );
    assert_eq!(
        chained.1, whole.1,
        "the chain's day states differ from a full replay's"
    );
    let chain_events: i64 = [&a, &b, &c]
        .iter()
        .map(|r| r["events"].as_i64().unwrap())
        .sum();
    assert_eq!(
        d["events"].as_i64(),
        Some(chain_events),
        "each run counted its own: {d}"
    );
    let repeats_skipped = (first.len() + second.len() + third.len()) as i64
        - d["events"].as_i64().unwrap()
        - d["rejected"].as_i64().unwrap();
    assert!(
        repeats_skipped > 0,
        "some repeats were within the window: {d}"
    );

    // A state made by another version is never merged into: the next
    // automatic run reads everything again, and agrees.
    sqlx::query("UPDATE dashboard_current SET state_version = state_version - 1")
        .execute(&pool)
        .await
        .unwrap();
    let e = automatic(&service, &pool).await;
    assert_eq!(
        (&e["state"], &e["kind"], &e["base_run_id"]),
        (&json!("succeeded"), &json!("full"), &Value::Null),
        "{e}"
    );
    assert_eq!(stored(&pool, &e).await, whole.0);

    // A day whose stored state does not decode: the run that would merge
    // into it fails, naming the day, and the current run stays.
    sqlx::query("UPDATE dashboard_day_state SET state = '\\x00' WHERE day = '2026-10-06'")
        .execute(&pool)
        .await
        .unwrap();
    produce(&env, &interactions(&mut rng, 5, &["2026-10-06"])).await;
    let f = automatic(&service, &pool).await;
    assert_eq!(f["state"], "failed", "{f}");
    let error = f["error"].as_str().unwrap();
    assert!(
        error.contains("2026-10-06") && error.contains("full replay"),
        "{error}"
    );
    let current: i64 = sqlx::query_scalar("SELECT run_id FROM dashboard_current")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(Value::from(current), e["id"]);
    service.stop().await;
}
