//! The shared consumer side: an event typed into kcat is parsed into the right
//! typed event; a bad message goes to the DLQ with its reason and origin, and
//! the consumer goes on.

use std::io::Write;
use std::process::{Command, Stdio};

use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use shared::consume::EventConsumer;
use shared::dlq::{header, header_str, DeadLetters};
use shared::event::{Action, Envelope, EventBody, Interaction};
use shared::testkit::TestEnv;

fn kcat_produce(brokers: &str, topic: &str, key: &str, lines: &str) {
    let mut child = Command::new("kcat")
        .args(["-P", "-b", brokers, "-t", topic, "-k", key, "-p", "0"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat is installed (scripts/up.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn kcat_typed_events_are_parsed_and_poison_goes_to_the_dlq() {
    let env = TestEnv::new("stream_kcat").await;
    let kafka = &env.settings.kafka;
    let typed = r#"{"type":"interaction","user_id":"u1","product_id":"p7","action":"view","ts":"2026-11-20T10:00:00Z"}"#;
    let poison = r#"{"type":"interaction","user_id":"u1","action":"view"}"#;
    let after = r#"{"type":"interaction","user_id":"u1","product_id":"p8","action":"purchase","price_cents":1250}"#;
    kcat_produce(
        &kafka.brokers,
        &kafka.events_topic,
        "u1",
        &format!("{typed}\n{poison}\n{after}\n"),
    );

    let consumer = shared::kafka::consumer(kafka, &env.unique("stream-kcat-test")).unwrap();
    consumer.subscribe(&[&kafka.events_topic]).unwrap();
    let producer = shared::kafka::producer(kafka).unwrap();
    let events = EventConsumer::new(consumer, DeadLetters::new(producer, &kafka.dlq_topic));

    let first = events.next().await.unwrap();
    assert_eq!((first.partition, first.offset), (0, 0));
    let Envelope::Inline(event) = &first.envelope else {
        panic!("inline event")
    };
    assert_eq!(
        event.body,
        EventBody::Interaction(Interaction {
            user_id: "u1".into(),
            product_id: "p7".into(),
            action: Action::View,
            price_cents: None,
        })
    );
    assert_eq!(
        first.ts().unwrap().to_rfc3339(),
        "2026-11-20T10:00:00+00:00"
    );
    // No id on the wire: the derived one is stable for the origin.
    assert_eq!(
        first.id(),
        shared::event::derived_id(&kafka.events_topic, 0, 0)
    );
    events.done(&first).unwrap();

    // The poison message is skipped over (dead-lettered), the next one arrives.
    let second = events.next().await.unwrap();
    assert_eq!(second.offset, 2);
    let Envelope::Inline(event) = &second.envelope else {
        panic!("inline event")
    };
    assert!(
        matches!(&event.body, EventBody::Interaction(i) if i.action == Action::Purchase && i.price_cents == Some(1250))
    );
    events.done(&second).unwrap();
    events.commit().unwrap();

    let dead = env
        .read_exactly(&kafka.dlq_topic, 1, std::time::Duration::from_secs(30))
        .await
        .remove(0);
    assert_eq!(
        dead.payload(),
        Some(poison.as_bytes()),
        "copied byte for byte"
    );
    assert_eq!(dead.key(), Some(&b"u1"[..]));
    let headers = dead.headers().expect("origin headers");
    assert_eq!(header_str(headers, header::CODE), Some("missing_field"));
    assert_eq!(
        header_str(headers, header::REASON),
        Some("missing field `product_id`")
    );
    assert_eq!(
        header_str(headers, header::TOPIC),
        Some(kafka.events_topic.as_str())
    );
    assert_eq!(header_str(headers, header::PARTITION), Some("0"));
    assert_eq!(header_str(headers, header::OFFSET), Some("1"));
    // The origin's timestamp, as the original message carries it.
    let original = env
        .read_exactly(&kafka.events_topic, 3, std::time::Duration::from_secs(30))
        .await
        .into_iter()
        .find(|m| m.offset() == 1)
        .unwrap();
    let millis = original.timestamp().to_millis().unwrap();
    assert!(millis > 0);
    assert_eq!(
        header_str(headers, header::TIMESTAMP),
        Some(millis.to_string().as_str())
    );
}
