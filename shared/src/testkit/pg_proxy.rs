//! A TCP proxy in front of a real PostgreSQL server that can lose a
//! commit's acknowledgement: once armed, it forwards the next `COMMIT` to the
//! server, sees the server confirm it (`CommandComplete "COMMIT"`), and cuts
//! the connection instead of passing the confirmation on. The transaction is
//! durable; the client only knows that its connection broke. This is the
//! case a compare-and-set on stored offsets exists for.
//!
//! The client must connect with `sslmode=disable` (the proxy reads the
//! server's messages: one type byte, a 4-byte length, the body).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The proxy; it stops accepting when dropped.
pub struct PgProxy {
    pub port: u16,
    armed: Arc<AtomicBool>,
    lost: Arc<AtomicU64>,
    accept: tokio::task::JoinHandle<()>,
}

impl PgProxy {
    /// Listens on a free loopback port, forwarding to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> PgProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(false));
        let lost = Arc::new(AtomicU64::new(0));
        let (a, l) = (armed.clone(), lost.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (a, l) = (a.clone(), l.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await {
                        relay(client, server, a, l).await;
                    }
                });
            }
        });
        PgProxy {
            port,
            armed,
            lost,
            accept,
        }
    }

    /// `url` (a database URL on the upstream server) through the proxy.
    pub fn url(&self, url: &str) -> String {
        let (scheme_and_auth, rest) = url.split_once('@').expect("a URL with credentials");
        let path = &rest[rest.find('/').expect("a URL with a database")..];
        let sep = if path.contains('?') { '&' } else { '?' };
        format!(
            "{scheme_and_auth}@127.0.0.1:{}{path}{sep}sslmode=disable",
            self.port
        )
    }

    /// The next confirmed `COMMIT` loses its acknowledgement.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// How many acknowledgements were lost so far.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::SeqCst)
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn relay(client: TcpStream, server: TcpStream, armed: Arc<AtomicBool>, lost: Arc<AtomicU64>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    'read: loop {
        let n = match server_read.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&chunk[..n]);
        // Forward every complete message; hold back a partial one.
        let mut at = 0;
        while pending.len() - at >= 5 {
            let len = u32::from_be_bytes(pending[at + 1..at + 5].try_into().unwrap()) as usize;
            if pending.len() - at < 1 + len {
                break;
            }
            let message = &pending[at..at + 1 + len];
            let commit_confirmed = message[0] == b'C' && &message[5..] == b"COMMIT\0";
            if commit_confirmed && armed.swap(false, Ordering::SeqCst) {
                lost.fetch_add(1, Ordering::SeqCst);
                break 'read;
            }
            if client_write.write_all(message).await.is_err() {
                break 'read;
            }
            at += 1 + len;
        }
        pending.drain(..at);
    }
    upstream.abort();
}
