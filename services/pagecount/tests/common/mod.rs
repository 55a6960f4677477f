//! A MapReduce test's world: its own input, tasks, shuffle and DLQ topics
//! and database; the roles as child processes (to kill them); lines
//! produced as a log shipper would; an independent count to compare with.
#![allow(dead_code)]

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use shared::testkit::{free_port, KillOnDrop, TestEnv};

pub struct World {
    pub env: TestEnv,
    pub tasks_topic: String,
    pub shuffle_topic: String,
    pub client: reqwest::Client,
    /// Every spawned process's log, shown when a job does not finish.
    logs: std::sync::Mutex<Vec<std::path::PathBuf>>,
}

pub struct Child {
    pub port: u16,
    pub process: KillOnDrop,
    /// Its stderr: the JSON log lines.
    pub log: std::path::PathBuf,
}

impl Child {
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, as a crash.
    pub fn kill(mut self) {
        let _ = self.process.0.kill();
        let _ = self.process.0.wait();
    }
}

impl World {
    pub async fn new(name: &str) -> World {
        let env = TestEnv::new(name).await;
        let tasks_topic = env.unique("pc-tasks");
        let shuffle_topic = env.unique("pc-shuffle");
        World {
            env,
            tasks_topic,
            shuffle_topic,
            client: reqwest::Client::new(),
            logs: Default::default(),
        }
    }

    pub fn token(&self) -> String {
        self.env.settings.auth.admin_token.expose().to_owned()
    }

    pub async fn spawn(&self, role: &str, instance: &str) -> Child {
        self.spawn_with(role, instance, &[]).await
    }

    /// [`World::spawn`] with more `KAPPA__…` settings.
    pub async fn spawn_with(&self, role: &str, instance: &str, settings: &[(&str, &str)]) -> Child {
        let port = free_port();
        let log_path = shared::testkit::repo_root().join(".run").join(format!(
            "test-pagecount-{}-{role}-{instance}.log",
            self.env.suffix
        ));
        let log = std::fs::File::create(&log_path).unwrap();
        self.logs.lock().unwrap().push(log_path.clone());
        let child = Child {
            port,
            log: log_path.clone(),
            process: KillOnDrop(
                Command::new(env!("CARGO_BIN_EXE_pagecount"))
                    .envs(self.env.child_env())
                    .env("KAPPA__PAGECOUNT__ADDR", format!("127.0.0.1:{port}"))
                    .env("KAPPA__PAGECOUNT__ROLE", role)
                    // Groups and transactional ids of this test alone (tests share the broker).
                    .env(
                        "KAPPA__PAGECOUNT__GROUP_PREFIX",
                        self.env.unique("pagecount"),
                    )
                    .env("KAPPA__PAGECOUNT__INSTANCE", instance)
                    .env("KAPPA__PAGECOUNT__TASKS_TOPIC", &self.tasks_topic)
                    .env("KAPPA__PAGECOUNT__SHUFFLE_TOPIC", &self.shuffle_topic)
                    .env("KAPPA__PAGECOUNT__TOPIC_PARTITIONS", "4")
                    .env("KAPPA__PAGECOUNT__MAX_BATCH_EVENTS", "500")
                    .envs(settings.iter().copied())
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .expect("pagecount starts"),
            ),
        };
        let what = format!("{role} (log {})", log_path.display());
        shared::testkit::wait_ready(&format!("127.0.0.1:{}", child.port), &what).await;
        child
    }

    /// Produces `lines` to the input topic, unkeyed, as a shipper would.
    pub async fn produce(&self, lines: &[Vec<u8>]) {
        let producer: FutureProducer = shared::kafka::producer(&self.env.settings.kafka).unwrap();
        let topic = &self.env.settings.kafka.access_logs_topic;
        let sends = lines.iter().map(|line| {
            producer.send::<(), _, _>(
                FutureRecord::to(topic).payload(line),
                Duration::from_secs(30),
            )
        });
        for result in futures::future::join_all(sends).await {
            result.map_err(|(e, _)| e).unwrap();
        }
    }

    /// Produces one record with `headers` to the input topic (a redrive's
    /// copy carries its provenance so).
    pub async fn produce_with(&self, record: &[u8], headers: &[(&str, &str)]) {
        let producer: FutureProducer = shared::kafka::producer(&self.env.settings.kafka).unwrap();
        let mut own = rdkafka::message::OwnedHeaders::new();
        for (key, value) in headers {
            own = own.insert(rdkafka::message::Header {
                key,
                value: Some(*value),
            });
        }
        producer
            .send::<(), _, _>(
                FutureRecord::to(&self.env.settings.kafka.access_logs_topic)
                    .payload(record)
                    .headers(own),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        url: String,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.client.request(method, url).bearer_auth(self.token());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Starts a job; its id.
    pub async fn job(&self, coordinator: &Child, request: Value) -> i64 {
        let (status, job) = self
            .call(
                reqwest::Method::POST,
                format!("{}/jobs", coordinator.base()),
                Some(request),
            )
            .await;
        assert_eq!(status, 202, "{job}");
        job["id"].as_i64().unwrap()
    }

    /// The job once it is no longer running.
    pub async fn finished(&self, coordinator: &Child, id: i64, deadline: Duration) -> Value {
        let until = Instant::now() + deadline;
        loop {
            let (_, job) = self
                .call(
                    reqwest::Method::GET,
                    format!("{}/jobs/{id}", coordinator.base()),
                    None,
                )
                .await;
            if job["state"] != "running" {
                return job;
            }
            assert!(
                Instant::now() < until,
                "job {id} still running: {job}\n{}",
                self.log_tails()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The lines of the spawned processes' logs that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .flat_map(|path| {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                text.lines()
                    .filter(|line| line.contains(needle))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The last lines of every spawned process's log.
    fn log_tails(&self) -> String {
        let logs = self.logs.lock().unwrap();
        logs.iter()
            .map(|path| shared::testkit::log_tail(path, 25))
            .collect()
    }

    /// Every page of a job's result, through the paginated API.
    pub async fn pages(&self, coordinator: &Child, id: i64) -> HashMap<String, u64> {
        let mut pages = HashMap::new();
        let mut after: Option<String> = None;
        loop {
            let mut url = format!("{}/jobs/{id}/pages?limit=100", coordinator.base());
            if let Some(a) = &after {
                url.push_str(&format!("&after={}", urlencode(a)));
            }
            let (status, body) = self.call(reqwest::Method::GET, url, None).await;
            assert_eq!(status, 200, "{body}");
            for row in body["pages"].as_array().unwrap() {
                let previous = pages.insert(
                    row["page"].as_str().unwrap().to_owned(),
                    row["count"].as_u64().unwrap(),
                );
                assert!(previous.is_none(), "a page listed twice: {row}");
            }
            match body["next_after"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => return pages,
            }
        }
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `n` access-log lines from loadgen (seeded).
pub fn loadgen_lines(n: u64, seed: u64) -> Vec<Vec<u8>> {
    let options = loadgen::Options {
        seed,
        lines: n,
        users: 500,
        products: 300,
        cluster_size: 10,
        days: 2,
        start: "2026-11-01T00:00:00Z".parse().unwrap(),
        realtime: false,
    };
    options.access_log().unwrap().map(|l| l.payload).collect()
}

/// The count of loadgen's well-formed lines, done independently of the
/// service's parser: the request is the first quoted field, the page its
/// second word up to `?`.
pub fn independent_count(lines: &[Vec<u8>]) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    for line in lines {
        let text = String::from_utf8(line.clone()).unwrap();
        let request = text.split('"').nth(1).unwrap();
        let target = request.split(' ').nth(1).unwrap();
        let page = target.split('?').next().unwrap();
        *counts.entry(page.to_owned()).or_default() += 1;
    }
    counts
}
