//! A product test's world: its own topics and database, a gateway
//! in-process (uploads), and the DAG's roles as child processes (to kill
//! them with SIGKILL).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Cursor;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::message::Message;
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use shared::claim_check::ClaimStore;
use shared::config::{HttpConfig, Settings};
use shared::event::{Envelope, Event, EventBody};
use shared::shutdown::{CancellationToken, DropGuard};
use shared::testkit::{free_port, KillOnDrop, TestEnv};

pub const MP4: &[u8] = include_bytes!("../fixtures/clip.mp4");

pub struct World {
    pub env: TestEnv,
    pub gateway: String,
    pub client: reqwest::Client,
    _gateway: DropGuard,
    /// Settings every child gets (e.g. a short deadline).
    pub extra: Vec<(String, String)>,
}

/// A role running as a child process.
pub struct Child {
    pub port: u16,
    pub process: KillOnDrop,
}

impl Child {
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.process.0.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// SIGKILL, as a crash.
    pub fn kill(mut self) {
        let _ = self.process.0.kill();
        let _ = self.process.0.wait();
    }

    pub async fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let text = shared::testkit::metrics_text(&format!("127.0.0.1:{}", self.port)).await;
        shared::testkit::metric(&text, name, labels)
    }
}

impl World {
    pub async fn new(name: &str, extra: &[(&str, &str)]) -> World {
        Self::configured(name, extra, |_| {}).await
    }

    /// A world whose settings (the gateway's, and the database every role
    /// is given) `adjust` changes first: e.g. a private PostgreSQL the test
    /// crashes, or a lower claim-check threshold.
    pub async fn configured(
        name: &str,
        extra: &[(&str, &str)],
        adjust: impl FnOnce(&mut Settings),
    ) -> World {
        let mut env = TestEnv::new(name).await;
        adjust(&mut env.settings);
        let shutdown = CancellationToken::new();
        let http = HttpConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            body_limit_bytes: 64 << 20,
            max_upload_file_bytes: 16 << 20,
            max_events_per_request: 100_000,
        };
        let app = gateway::Application::build(env.settings.clone(), http, shutdown.clone())
            .await
            .unwrap();
        let gateway = format!("http://{}", app.addr());
        tokio::spawn(app.run());
        World {
            env,
            gateway,
            client: reqwest::Client::new(),
            _gateway: shutdown.drop_guard(),
            extra: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    pub fn token(&self) -> String {
        self.env.settings.auth.admin_token.expose().to_owned()
    }

    /// Starts `role` (instance `instance`) and waits until it is ready.
    pub async fn spawn(&self, role: &str, instance: &str) -> Child {
        let port = free_port();
        let log_path = shared::testkit::repo_root().join(".run").join(format!(
            "test-products-{}-{role}-{instance}.log",
            self.env.suffix
        ));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_products"));
        command
            .envs(self.env.child_env())
            .env("KAPPA__PRODUCTS__ADDR", format!("127.0.0.1:{port}"))
            .env("KAPPA__PRODUCTS__ROLE", role)
            // Groups and transactional ids of this test alone (tests share the broker).
            .env(
                "KAPPA__PRODUCTS__GROUP",
                self.env.unique(&format!("products-{role}")),
            )
            .env("KAPPA__PRODUCTS__INSTANCE", instance)
            .env("KAPPA__PRODUCTS__SWEEP_INTERVAL_MS", "200")
            .stdout(Stdio::null())
            .stderr(log);
        for (key, value) in &self.extra {
            command.env(key, value);
        }
        let child = Child {
            port,
            process: KillOnDrop(command.spawn().expect("products binary starts")),
        };
        let what = format!("{role} (log {})", log_path.display());
        shared::testkit::wait_ready(&format!("127.0.0.1:{}", child.port), &what).await;
        child
    }

    /// Every role once, the API last.
    pub async fn spawn_all(&self) -> HashMap<&'static str, Child> {
        let mut children = HashMap::new();
        for role in ["image", "video", "metadata", "creator", "api"] {
            children.insert(role, self.spawn(role, "1").await);
        }
        children
    }

    /// Uploads a product through the gateway; its answer.
    pub async fn upload(
        &self,
        metadata: &Value,
        images: &[(Vec<u8>, &str)],
        video: Option<&[u8]>,
    ) -> Value {
        let mut form = Form::new().part(
            "metadata",
            Part::text(metadata.to_string())
                .mime_str("application/json")
                .unwrap(),
        );
        for (i, (bytes, content_type)) in images.iter().enumerate() {
            let part = Part::bytes(bytes.clone())
                .file_name(format!("image-{i}"))
                .mime_str(content_type)
                .unwrap();
            form = form.part("image", part);
        }
        if let Some(video) = video {
            form = form.part(
                "video",
                Part::bytes(video.to_vec())
                    .file_name("clip.mp4")
                    .mime_str("video/mp4")
                    .unwrap(),
            );
        }
        let response = self
            .client
            .post(format!("{}/products", self.gateway))
            .bearer_auth(self.token())
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        response.json().await.unwrap()
    }

    pub async fn get(&self, api: &Child, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", api.base()))
            .bearer_auth(self.token())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The product once it is no longer pending.
    pub async fn decided(&self, api: &Child, id: &str, deadline: Duration) -> Value {
        let until = Instant::now() + deadline;
        loop {
            let (status, product) = self.get(api, &format!("/products/{id}")).await;
            if status == 200 && product["status"] != "pending" {
                return product;
            }
            assert!(
                Instant::now() < until,
                "product {id} still undecided: {product}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every event on the events topic now (read_committed), by type name;
    /// claim-checked envelopes opened from the store.
    pub async fn events(&self, expected_at_least: usize) -> Vec<(String, Event)> {
        let topic = &self.env.settings.kafka.events_topic;
        let consumer = self.env.reader(topic);
        let mut out = Vec::new();
        let until = Instant::now() + Duration::from_secs(60);
        let mut ends: Option<(Vec<(i64, i64)>, Instant)> = None;
        // Envelopes too large for the topic are opened from the store.
        let mut claims: Option<ClaimStore> = None;
        loop {
            match tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await {
                Ok(Ok(m)) => {
                    let payload = m.payload().unwrap_or_default();
                    let event = match shared::event::parse(payload).expect("events parse") {
                        Envelope::Inline(event) => event,
                        Envelope::Claimed(claimed) => {
                            let store = match &claims {
                                Some(store) => store,
                                None => claims.insert(ClaimStore::new(self.env.pool().await)),
                            };
                            let token = claimed.claim_check.token;
                            let (bytes, _) =
                                store.fetch_typed(token).await.expect("a claimed payload");
                            ClaimStore::open(&claimed, &bytes).expect("the claimed event")
                        }
                    };
                    out.push((event.body.event_type().as_str().to_owned(), event));
                }
                Ok(Err(e)) => panic!("reading {topic}: {e}"),
                Err(_) => {}
            }
            // Once the expected are in, on to the topic's end offsets of
            // that moment: a late extra already written is read, not missed
            // in a quiet moment (an open transaction is waited for 10 s).
            if out.len() >= expected_at_least && ends.is_none() {
                let now = shared::kafka::watermarks(&self.env.settings.kafka, topic)
                    .await
                    .expect("the topic's end offsets");
                ends = Some((now, Instant::now() + Duration::from_secs(10)));
            }
            if let Some((at, settle)) = &ends {
                if shared::testkit::read_to(&consumer, topic, at) || Instant::now() >= *settle {
                    return out;
                }
            }
            assert!(
                Instant::now() < until,
                "read {} events, expected at least {expected_at_least}",
                out.len()
            );
        }
    }
}

/// A real image of `width` x `height` in `format`, with some structure.
pub fn image(width: u32, height: u32, format: image::ImageFormat) -> Vec<u8> {
    let img = image::ImageBuffer::from_fn(width, height, |x, y| {
        image::Rgb([
            (x * 255 / width) as u8,
            (y * 255 / height) as u8,
            ((x ^ y) & 0xff) as u8,
        ])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// The product id of an event about a product.
pub fn product_of(event: &Event) -> Option<&str> {
    match &event.body {
        EventBody::ProductUploaded(_)
        | EventBody::AssetProcessed(_)
        | EventBody::AssetFailed(_)
        | EventBody::ProductCreated(_)
        | EventBody::ProductFailed(_) => Some(event.key()),
        _ => None,
    }
}
