//! What a mail says and how it leaves: the text rendered from the event, and
//! SMTP with `lettre`. The event id (with the mode) is the `Message-ID`, so a
//! receiver can drop a second copy (the one window a crash can resend in,
//! see `log`); `X-Mailer-Mode` says which worker sent it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::Mailbox;
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::ClientId;
use lettre::Message;
use serde::{Deserialize, Serialize};
use shared::consume::Received;
use shared::event::{Action, Envelope, Event, EventBody};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use uuid::Uuid;

/// One mail to send, before the address is known.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mail {
    pub event_id: Uuid,
    pub user_id: String,
    pub subject: String,
    pub body: String,
    /// The request's event time.
    pub requested_at: Option<DateTime<Utc>>,
}

impl Mail {
    /// Whether an event asks for a mail (what the mail workers read).
    pub fn wanted(event: &Event) -> bool {
        match &event.body {
            EventBody::MailRequested(_) => true,
            EventBody::Interaction(i) => i.action == Action::Purchase,
            _ => false,
        }
    }

    /// The mail an event asks for: a `mail_requested` as written, an order
    /// confirmation for a purchase; nothing for anything else.
    pub fn of(received: &Received) -> Option<Mail> {
        let Envelope::Inline(event) = &received.envelope else {
            return None;
        };
        let event_id = received.id();
        let requested_at = received.ts();
        match &event.body {
            EventBody::MailRequested(m) => Some(Mail {
                event_id,
                user_id: m.user_id.clone(),
                subject: m.subject.clone(),
                body: m.body.clone(),
                requested_at,
            }),
            EventBody::Interaction(i) if i.action == Action::Purchase => {
                let cents = i.price_cents.unwrap_or(0);
                Some(Mail {
                    event_id,
                    user_id: i.user_id.clone(),
                    subject: format!("Your order of {}", i.product_id),
                    body: format!(
                        "Thank you for your order.\n\nProduct: {}\nPrice: {}.{:02}\n\nkappa-jobs\n",
                        i.product_id,
                        cents / 100,
                        cents % 100
                    ),
                    requested_at,
                })
            }
            _ => None,
        }
    }
}

/// `X-Mailer-Mode: stateless|stateful`.
#[derive(Debug, Clone)]
struct MailerMode(String);

impl Header for MailerMode {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Mailer-Mode")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// Why a mail did not leave.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The server refused it for good (an unknown recipient, say).
    #[error("the SMTP server refused the mail: {0}")]
    Refused(String),
    /// It may work later (the server unreachable, a 4xx answer).
    #[error("the SMTP server could not take the mail now: {0}")]
    Unavailable(String),
}

/// The request's id and the mode: the same in every attempt, so a receiver
/// can drop a second copy; distinct per mode, since each mode is a sender.
pub fn message_id(mail: &Mail, mode: &str) -> String {
    format!("<{}.{mode}@kappa-jobs>", mail.event_id)
}

/// The SMTP side: up to `connections` kept-open connections to one server.
pub struct Smtp {
    server: (String, u16),
    timeout: Duration,
    /// Open connections not in use, with when each was last used.
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    slots: Semaphore,
    from: Mailbox,
    mode: &'static str,
}

/// An idle connection this old is checked (`NOOP`) before it carries a mail.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(5);

impl Smtp {
    /// Plain-text SMTP to `host:port` (a local relay or catcher).
    pub fn new(
        host: &str,
        port: u16,
        from: &str,
        mode: &'static str,
        connections: usize,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            server: (host.to_owned(), port),
            timeout: Duration::from_secs(10),
            idle: Mutex::default(),
            slots: Semaphore::new(connections.max(1)),
            from: from
                .parse()
                .map_err(|e| anyhow::anyhow!("mailer.from `{from}`: {e}"))?,
            mode,
        })
    }

    /// Sends `mail` to `address`; returns once the server accepted it.
    pub async fn send(&self, mail: &Mail, address: &str) -> Result<(), SendError> {
        let to: Mailbox = address
            .parse()
            .map_err(|e| SendError::Refused(format!("address `{address}`: {e}")))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(&mail.subject)
            .message_id(Some(message_id(mail, self.mode)))
            .header(MailerMode(self.mode.to_owned()))
            .header(ContentType::TEXT_PLAIN)
            .body(mail.body.clone())
            .map_err(|e| SendError::Refused(e.to_string()))?;
        let _slot = self.slots.acquire().await.expect("never closed");
        let mut connection = self.connection().await?;
        let sent = tokio::time::timeout(
            self.timeout,
            connection.send(message.envelope(), &message.formatted()),
        )
        .await;
        match sent {
            Ok(Ok(_)) => {
                if !connection.has_broken() {
                    self.idle
                        .lock()
                        .expect("poisoned")
                        .push((connection, Instant::now()));
                }
                Ok(())
            }
            // A connection that failed is not reused.
            Ok(Err(e)) if e.is_permanent() => Err(SendError::Refused(e.to_string())),
            Ok(Err(e)) => Err(SendError::Unavailable(e.to_string())),
            Err(_) => Err(SendError::Unavailable(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// An idle connection that still answers, or a new one.
    async fn connection(&self) -> Result<AsyncSmtpConnection, SendError> {
        loop {
            let idle = self.idle.lock().expect("poisoned").pop();
            match idle {
                Some((connection, used)) if used.elapsed() < CHECK_IDLE_AFTER => {
                    return Ok(connection)
                }
                Some((mut connection, _)) => {
                    if connection.test_connected().await {
                        return Ok(connection);
                    }
                }
                None => break,
            }
        }
        let unavailable = |e: &dyn std::fmt::Display| {
            SendError::Unavailable(format!(
                "connecting to {}:{}: {e}",
                self.server.0, self.server.1
            ))
        };
        let connect = async {
            let stream = TcpStream::connect((self.server.0.as_str(), self.server.1))
                .await
                .map_err(|e| unavailable(&e))?;
            // A message's last line (`.`) is a write of its own: without
            // this, it waits for the server's delayed ACK (~40 ms a mail).
            stream.set_nodelay(true).map_err(|e| unavailable(&e))?;
            AsyncSmtpConnection::connect_with_transport(Box::new(stream), &ClientId::default())
                .await
                .map_err(|e| unavailable(&e))
        };
        tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| unavailable(&"timed out"))?
    }
}
