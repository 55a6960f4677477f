//! A mail test's world: its own topics and database, a users service
//! (in-process, relaying its outbox), a private Mailpit, and mail workers
//! in-process or as child processes (to kill them).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mailer::{Application, MailerConfig, Mode};
use rdkafka::producer::FutureRecord;
use serde_json::{json, Value};
use shared::shutdown::{CancellationToken, DropGuard};
use shared::testkit::{free_port, KillOnDrop, PrivateMailpit, TestEnv};

pub struct World {
    pub env: TestEnv,
    pub mailpit: PrivateMailpit,
    pub users: Option<Running>,
    pub users_port: u16,
    pub client: reqwest::Client,
    pub dir: PathBuf,
}

/// A service in-process until dropped (or stopped).
pub struct Running {
    pub base: String,
    pub shutdown: CancellationToken,
    _guard: DropGuard,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops the worker; it must end without an error.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let stopped = shared::testkit::within(
            shared::testkit::STOP_LIMIT,
            "the in-process mailer stopping",
            self.task,
        );
        stopped
            .await
            .expect("the mailer's task")
            .expect("the mailer stops without an error");
    }
}

impl World {
    pub async fn new(name: &str, mailpit_args: &str) -> World {
        let env = TestEnv::new(name).await;
        let mailpit = PrivateMailpit::start(mailpit_args);
        let dir = shared::testkit::repo_root()
            .join(".run")
            .join(format!("test-mailer-{}", env.suffix));
        let mut world = World {
            env,
            mailpit,
            users: None,
            users_port: free_port(),
            client: reqwest::Client::new(),
            dir,
        };
        world.start_users().await;
        world
    }

    /// (Re)starts the users service on its port.
    pub async fn start_users(&mut self) {
        let shutdown = CancellationToken::new();
        let config = users::UsersConfig {
            addr: format!("127.0.0.1:{}", self.users_port).parse().unwrap(),
            relay: true,
            relay_interval_ms: 50,
        };
        let app = users::Application::build(self.env.settings.clone(), config, shutdown.clone())
            .await
            .unwrap();
        self.users = Some(Running {
            base: format!("http://{}", app.addr()),
            _guard: shutdown.clone().drop_guard(),
            shutdown,
            task: tokio::spawn(app.run()),
        });
    }

    pub async fn stop_users(&mut self) {
        if let Some(users) = self.users.take() {
            users.stop().await;
        }
    }

    pub fn token(&self) -> String {
        self.env.settings.auth.admin_token.expose().to_owned()
    }

    /// Creates or changes a user through the users service.
    pub async fn user(&self, id: &str, email: &str) {
        let base = &self.users.as_ref().expect("users running").base;
        let put = self
            .client
            .put(format!("{base}/users/{id}"))
            .bearer_auth(self.token())
            .json(&json!({"email": email}))
            .send()
            .await
            .unwrap();
        if put.status() == 404 {
            let post = self
                .client
                .post(format!("{base}/users"))
                .bearer_auth(self.token())
                .json(&json!({"id": id, "email": email}))
                .send()
                .await
                .unwrap();
            assert_eq!(post.status(), 201);
        } else {
            assert_eq!(put.status(), 200);
        }
    }

    /// The configuration of a mail worker in `mode`.
    pub fn config(&self, mode: Mode) -> MailerConfig {
        MailerConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            mode,
            group: self.env.unique(&format!("mailer-{}", mode.as_str())),
            smtp_host: "127.0.0.1".into(),
            smtp_port: self.mailpit.smtp_port,
            from: "kappa-jobs <mail@kappa-jobs.local>".into(),
            users_url: format!("http://127.0.0.1:{}", self.users_port),
            users_timeout_ms: 1000,
            users_retries: 1,
            breaker_failures: 3,
            breaker_open_ms: 1000,
            data_dir: self.dir.join(mode.as_str()),
            wait_for_user_ms: 3000,
            concurrency: 8,
            worker: shared::config::WorkerConfig {
                max_batch_events: 100,
                max_batch_ms: 20,
                stuck_after_ms: 60_000,
            },
        }
    }

    /// A mail worker in-process.
    pub async fn mailer(&self, config: MailerConfig) -> Running {
        let shutdown = CancellationToken::new();
        let app = Application::build(self.env.settings.clone(), config, shutdown.clone())
            .await
            .unwrap();
        Running {
            base: format!("http://{}", app.addr()),
            _guard: shutdown.clone().drop_guard(),
            shutdown,
            task: tokio::spawn(app.run()),
        }
    }

    /// A mail worker as a child process (SIGKILL-able); returns it and its port.
    pub fn mailer_process(&self, mode: Mode, log: &str) -> (KillOnDrop, u16) {
        let config = self.config(mode);
        let port = free_port();
        let log = std::fs::File::create(
            shared::testkit::repo_root()
                .join(".run")
                .join(format!("{log}.log")),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_mailer"))
            .envs(self.env.child_env())
            .env("KAPPA__MAILER__ADDR", format!("127.0.0.1:{port}"))
            .env("KAPPA__MAILER__MODE", mode.as_str())
            .env("KAPPA__MAILER__GROUP", &config.group)
            .env(
                "KAPPA__MAILER__SMTP_PORT",
                self.mailpit.smtp_port.to_string(),
            )
            .env("KAPPA__MAILER__USERS_URL", &config.users_url)
            .env("KAPPA__MAILER__DATA_DIR", &config.data_dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        (KillOnDrop(child), port)
    }

    /// Produces `mail_requested` events, keyed by user: (id, user, subject).
    pub async fn request(&self, mails: &[(String, String, String)]) {
        let records: Vec<(String, String)> = mails
            .iter()
            .map(|(id, user, subject)| {
                let payload = json!({"type": "mail_requested", "id": id, "user_id": user, "subject": subject, "body": "hello"});
                (user.clone(), payload.to_string())
            })
            .collect();
        self.produce(&records).await;
    }

    /// Writes `(key, payload)` records to the events topic, each acknowledged.
    pub async fn produce(&self, records: &[(String, String)]) {
        let producer = shared::kafka::producer(&self.env.settings.kafka).unwrap();
        let topic = &self.env.settings.kafka.events_topic;
        let sends = records.iter().map(|(key, payload)| {
            producer.send(
                FutureRecord::to(topic).key(key).payload(payload),
                Duration::from_secs(30),
            )
        });
        for sent in futures::future::join_all(sends).await {
            sent.map_err(|(e, _)| e).unwrap();
        }
    }

    /// Every message in Mailpit by Message-ID, with how many copies arrived.
    pub async fn delivered(&self) -> BTreeMap<String, Delivered> {
        let list: Value = self
            .client
            .get(format!("{}/messages?limit=100000", self.mailpit.api()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut out: BTreeMap<String, Delivered> = BTreeMap::new();
        for m in list["messages"].as_array().unwrap() {
            let message_id = m["MessageID"].as_str().unwrap().to_owned();
            out.entry(message_id)
                .and_modify(|d| d.copies += 1)
                .or_insert_with(|| Delivered {
                    to: m["To"][0]["Address"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    subject: m["Subject"].as_str().unwrap_or_default().to_owned(),
                    id: m["ID"].as_str().unwrap().to_owned(),
                    copies: 1,
                });
        }
        out
    }

    /// Waits until Mailpit holds `count` distinct messages, each once.
    pub async fn wait_delivered(&self, count: usize) -> BTreeMap<String, Delivered> {
        let delivered = self.wait_delivered_allowing_resends(count).await;
        for (message_id, d) in &delivered {
            assert_eq!(d.copies, 1, "{message_id} delivered {} times", d.copies);
        }
        delivered
    }

    /// Waits until Mailpit holds `count` distinct messages, some maybe
    /// twice (a worker killed between SMTP and its log: see
    /// [`World::assert_copies_within_the_resend_window`]).
    pub async fn wait_delivered_allowing_resends(
        &self,
        count: usize,
    ) -> BTreeMap<String, Delivered> {
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            let delivered = self.delivered().await;
            assert!(
                delivered.len() <= count,
                "{} delivered, {count} expected",
                delivered.len()
            );
            if delivered.len() == count {
                return delivered;
            }
            assert!(
                Instant::now() < until,
                "{} of {count} delivered",
                delivered.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A second copy of a mail arrives only in the one window the log
    /// documents: sent, then interrupted before it was marked sent; so only
    /// for requests the log attempted more than once, and never more
    /// copies than attempts. Returns how many mails came twice.
    pub async fn assert_copies_within_the_resend_window(
        &self,
        delivered: &BTreeMap<String, Delivered>,
        mode: Mode,
    ) -> usize {
        let pool = self.env.pool().await;
        let attempts: Vec<(uuid::Uuid, i32)> =
            sqlx::query_as("SELECT event_id, attempts FROM mail_log WHERE mode = $1")
                .bind(mode.as_str())
                .fetch_all(&pool)
                .await
                .unwrap();
        let mut twice = 0;
        for (event_id, attempts) in attempts {
            let Some(d) = delivered.get(&message_id(&event_id.to_string(), mode)) else {
                continue;
            };
            assert!(
                d.copies <= attempts as usize,
                "{event_id}: {} copies, {attempts} attempts",
                d.copies
            );
            twice += usize::from(d.copies > 1);
        }
        pool.close().await;
        twice
    }

    /// A header of a delivered message.
    pub async fn header(&self, id: &str, name: &str) -> Option<String> {
        let headers: Value = self
            .client
            .get(format!("{}/message/{id}/headers", self.mailpit.api()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        headers[name][0].as_str().map(str::to_owned)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One delivered mail.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub to: String,
    pub subject: String,
    /// Mailpit's id (of the first copy), for its other endpoints.
    pub id: String,
    /// How many copies of this Message-ID arrived.
    pub copies: usize,
}

/// The Message-ID a request's mail carries, from the worker in `mode`.
pub fn message_id(event_id: &str, mode: Mode) -> String {
    format!("{event_id}.{}@kappa-jobs", mode.as_str())
}
