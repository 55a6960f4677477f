//! The transactional outbox: every write becomes one `user_updated` event
//! (keyed by user id, with the version and a stable event id). A service
//! killed after its writes committed and before it published them publishes
//! them when it comes back; two relays never publish a row twice.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::message::Message;
use serde_json::{json, Value};
use shared::testkit::{free_port, KillOnDrop, TestEnv};

/// The users binary on the test's topics and database.
fn spawn(env: &TestEnv, port: u16, relay: bool) -> KillOnDrop {
    let kafka = &env.settings.kafka;
    KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_users"))
            .env("KAPPA__KAFKA__BROKERS", &kafka.brokers)
            .env("KAPPA__KAFKA__EVENTS_TOPIC", &kafka.events_topic)
            .env("KAPPA__DATABASE__URL", env.settings.database.url.expose())
            .env(
                "KAPPA__AUTH__ADMIN_TOKEN",
                env.settings.auth.admin_token.expose(),
            )
            .env("KAPPA__USERS__ADDR", format!("127.0.0.1:{port}"))
            .env("KAPPA__USERS__RELAY", relay.to_string())
            .env("KAPPA__USERS__RELAY_INTERVAL_MS", "50")
            .env("KAPPA__LOG__LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

async fn write(client: &reqwest::Client, env: &TestEnv, port: u16, n: usize) {
    let base = format!("http://127.0.0.1:{port}");
    let token = env.settings.auth.admin_token.expose();
    let until = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < until, "the users service did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..n {
        let id = format!("u{i}");
        let created = client
            .post(format!("{base}/users"))
            .bearer_auth(token)
            .json(&json!({"id": id, "email": format!("{id}@example.com")}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let updated = client
            .put(format!("{base}/users/{id}"))
            .bearer_auth(token)
            .json(&json!({"email": format!("{id}@new.example.com")}))
            .send()
            .await
            .unwrap();
        assert_eq!(updated.status(), 200);
    }
}

/// Reads `count` events: (event id -> (key, user, version, email)).
async fn events(env: &TestEnv, count: usize) -> HashMap<String, (String, String, u64, String)> {
    let messages = env
        .read_exactly(
            &env.settings.kafka.events_topic,
            count,
            Duration::from_secs(60),
        )
        .await;
    let mut by_id = HashMap::new();
    for m in messages {
        let event: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        assert_eq!(event["type"], "user_updated");
        let id = event["id"].as_str().unwrap().to_owned();
        let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
        let entry = (
            key,
            event["user_id"].as_str().unwrap().to_owned(),
            event["version"].as_u64().unwrap(),
            event["email"].as_str().unwrap().to_owned(),
        );
        assert!(
            by_id.insert(id.clone(), entry).is_none(),
            "event {id} published twice"
        );
    }
    by_id
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_killed_before_they_were_published_go_out_once_after_a_restart() {
    let env = TestEnv::new("users_outbox").await;
    let client = reqwest::Client::new();
    // No relay: the writes commit, nothing is published; then the process dies.
    let port = free_port();
    let mut unpublished = spawn(&env, port, false);
    write(&client, &env, port, 20).await;
    unpublished.kill().unwrap();
    unpublished.wait().unwrap();
    assert_eq!(env.count(&env.settings.kafka.events_topic).await, 0);

    // Back with two relaying instances: every row goes out, once.
    let (a, b) = (free_port(), free_port());
    let _first = spawn(&env, a, true);
    let _second = spawn(&env, b, true);
    let published = events(&env, 40).await;
    for (key, user, version, email) in published.values() {
        assert_eq!(key, user, "keyed by the user");
        let expected = if *version == 1 {
            format!("{user}@example.com")
        } else {
            format!("{user}@new.example.com")
        };
        assert_eq!(
            email, &expected,
            "version {version} carries its own address"
        );
    }
    let pool = env.pool().await;
    let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM users_outbox WHERE sent_at IS NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(unsent, 0);
}
