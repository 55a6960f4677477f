//! Secrets stay out of the logs: the admin token and the database password
//! never appear in what the process writes, at debug level, whether it runs
//! normally (requests with and without the token) or fails to start.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shared::testkit::{free_port, replace_database, TestEnv};

/// The gateway binary with `vars`, at debug level; stderr goes to a file.
struct Gateway {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Gateway {
    fn start(vars: &[(&str, String)]) -> Gateway {
        let log =
            std::env::temp_dir().join(format!("gateway-secrets-{}.log", uuid::Uuid::new_v4()));
        let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .env("KAPPA__LOG__LEVEL", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Gateway { child, log }
    }

    /// Waits (bounded) for the process to exit by itself.
    async fn exited(&mut self) -> std::process::ExitStatus {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < until, "the gateway did not exit");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM if still running; everything it wrote.
    fn finish(mut self) -> String {
        if self.child.try_wait().unwrap().is_none() {
            Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status()
                .unwrap();
        }
        shared::testkit::wait_child(
            &mut self.child,
            shared::testkit::STOP_LIMIT,
            "the gateway after SIGTERM",
        );
        let text = std::fs::read_to_string(&self.log).unwrap();
        let _ = std::fs::remove_file(&self.log);
        text
    }
}

impl Drop for Gateway {
    // A failed test leaves nothing running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_and_the_database_password_never_reach_the_log() {
    let env = TestEnv::new("secrets").await;
    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let kafka = &env.settings.kafka;
    let vars = vec![
        ("KAPPA__KAFKA__BROKERS", kafka.brokers.clone()),
        ("KAPPA__KAFKA__EVENTS_TOPIC", kafka.events_topic.clone()),
        (
            "KAPPA__DATABASE__URL",
            env.settings.database.url.expose().to_owned(),
        ),
        ("KAPPA__AUTH__ADMIN_TOKEN", token.clone()),
        ("KAPPA__GATEWAY__ADDR", format!("127.0.0.1:{port}")),
    ];
    let client = reqwest::Client::new();
    let gateway = Gateway::start(&vars);
    let until = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/readyz")).send().await.is_err() {
        assert!(Instant::now() < until, "the gateway did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let event = r#"{"type":"page_access","page":"/secret-test"}"#;
    let ok = client
        .post(format!("{base}/events"))
        .bearer_auth(&token)
        .body(event)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 202);
    for auth in [None, Some("not-the-token")] {
        let mut request = client.post(format!("{base}/events")).body(event);
        if let Some(wrong) = auth {
            request = request.bearer_auth(wrong);
        }
        assert_eq!(request.send().await.unwrap().status(), 401);
    }
    let written = gateway.finish();
    assert!(written.contains("gateway listening"), "it ran: {written}");
    assert!(
        !written.contains(&token),
        "the token is in the log:\n{written}"
    );

    // A wrong database password: the process fails to start, and says why
    // without the password.
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let url = replace_database(
        &format!("postgres://kappa:{password}@127.0.0.1:5432/kappa"),
        &env.database,
    );
    let mut vars = vars;
    vars[2] = ("KAPPA__DATABASE__URL", url);
    vars[4] = ("KAPPA__GATEWAY__ADDR", format!("127.0.0.1:{}", free_port()));
    let mut gateway = Gateway::start(&vars);
    assert!(!gateway.exited().await.success(), "it cannot start");
    let written = gateway.finish();
    assert!(
        written.contains("PostgreSQL") || written.contains("password"),
        "the failure is explained: {written}"
    );
    assert!(
        !written.contains(&password),
        "the password is in the log:\n{written}"
    );
    assert!(
        !written.contains(&token),
        "the token is in the log:\n{written}"
    );
}
