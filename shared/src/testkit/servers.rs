//! Private servers started by the project's own scripts, for tests that
//! crash and restart the broker or the database without touching the shared
//! ones.

use uuid::Uuid;

use super::{free_port, repo_root};

/// A private server run by one of the project's scripts (`start`, `stop`)
/// with its own ports and data under `.run/test-*`; stopped and removed on drop.
struct Scripted {
    script: &'static str,
    env: Vec<(&'static str, String)>,
    dir: std::path::PathBuf,
}

impl Scripted {
    fn start(
        script: &'static str,
        kind: &str,
        env: impl FnOnce(&std::path::Path) -> Vec<(&'static str, String)>,
    ) -> Self {
        let dir = repo_root()
            .join(".run")
            .join(format!("test-{kind}-{}", Uuid::new_v4().simple()));
        let server = Scripted {
            script,
            env: env(&dir),
            dir,
        };
        server.run("start");
        server
    }

    fn run(&self, command: &str) {
        let status = std::process::Command::new("bash")
            .arg(repo_root().join("scripts").join(self.script))
            .arg(command)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .status()
            .unwrap_or_else(|e| panic!("running scripts/{}: {e}", self.script));
        assert!(
            status.success(),
            "scripts/{} {command} failed; see {}",
            self.script,
            self.dir.display()
        );
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.run("stop");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path(dir: &std::path::Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// A second, private Kafka broker started by `scripts/kafka.sh`, for tests
/// that stop and restart the broker without disturbing the shared one.
pub struct PrivateBroker {
    pub port: u16,
    server: Scripted,
}

impl PrivateBroker {
    /// Starts a broker on free ports with its own data directory.
    pub fn start() -> PrivateBroker {
        let port = free_port();
        let server = Scripted::start("kafka.sh", "kafka", |dir| {
            vec![
                ("KAFKA_PORT", port.to_string()),
                ("KAFKA_CONTROLLER_PORT", free_port().to_string()),
                ("KAFKA_DATA_DIR", path(dir, "data")),
                ("KAFKA_PID_FILE", path(dir, "kafka.pid")),
                ("KAFKA_LOG_FILE", path(dir, "kafka.log")),
                ("KAFKA_HEAP", "256m".to_string()),
            ]
        });
        PrivateBroker { port, server }
    }

    /// `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the broker (SIGTERM, then SIGKILL after a grace period).
    pub fn stop(&self) {
        self.server.run("stop");
    }

    /// Crashes the broker: SIGKILL, nothing flushed or closed.
    pub fn kill(&self) {
        self.server.run("kill");
    }

    /// Starts it again on the same data: topics and offsets survive.
    pub fn restart(&self) {
        self.server.run("start");
    }
}

/// A private PostgreSQL cluster started by `scripts/postgres.sh` on a free
/// port, for tests that stop the database.
pub struct PrivatePostgres {
    pub port: u16,
    server: Scripted,
}

impl PrivatePostgres {
    /// Starts a cluster with role and database `kappa`.
    pub fn start() -> PrivatePostgres {
        let port = free_port();
        let server = Scripted::start("postgres.sh", "pg", |dir| {
            vec![
                ("PG_PORT", port.to_string()),
                ("PG_DATA_DIR", path(dir, "data")),
                ("PG_PID_FILE", path(dir, "postgres.pid")),
                ("PG_LOG_FILE", path(dir, "postgres.log")),
            ]
        });
        PrivatePostgres { port, server }
    }

    /// The URL of its `kappa` database.
    pub fn url(&self) -> String {
        format!("postgres://kappa:kappa@127.0.0.1:{}/kappa", self.port)
    }

    /// Stops the server (fast shutdown: open transactions roll back).
    pub fn stop(&self) {
        self.server.run("stop");
    }

    /// Crashes the server (`pg_ctl stop -m immediate`): every backend dies at
    /// once, recovery runs on the next start.
    pub fn crash(&self) {
        self.server.run("crash");
    }

    /// Starts it again on the same data.
    pub fn restart(&self) {
        self.server.run("start");
    }
}

/// A private Mailpit (a real SMTP server with an HTTP API) started by
/// `scripts/mailpit.sh` on free ports, for tests that read delivered mail.
pub struct PrivateMailpit {
    pub smtp_port: u16,
    pub http_port: u16,
    server: Scripted,
}

impl PrivateMailpit {
    /// Starts one; `args` are its flags beyond ports and database (none:
    /// every copy of a message kept, so duplicates show).
    pub fn start(args: &str) -> PrivateMailpit {
        let (smtp_port, http_port) = (free_port(), free_port());
        let args = args.to_owned();
        let server = Scripted::start("mailpit.sh", "mailpit", |dir| {
            vec![
                ("MAILPIT_SMTP_PORT", smtp_port.to_string()),
                ("MAILPIT_HTTP_PORT", http_port.to_string()),
                ("MAILPIT_PID_FILE", path(dir, "mailpit.pid")),
                ("MAILPIT_LOG_FILE", path(dir, "mailpit.log")),
                ("MAILPIT_DB_FILE", path(dir, "mailpit.db")),
                ("MAILPIT_ARGS", args),
            ]
        });
        PrivateMailpit {
            smtp_port,
            http_port,
            server,
        }
    }

    /// The base URL of its HTTP API.
    pub fn api(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1", self.http_port)
    }

    /// Stops it (its mail is kept in its database until it is dropped).
    pub fn stop(&self) {
        self.server.run("stop");
    }

    /// Crashes it: SIGKILL, mid-conversation if a mail is on its way.
    pub fn kill(&self) {
        self.server.run("kill");
    }

    /// Starts it again on the same ports and database.
    pub fn restart(&self) {
        self.server.run("start");
    }
}
