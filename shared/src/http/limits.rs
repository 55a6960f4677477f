//! What one client may hold of a server: its request headers must arrive
//! within `header_timeout_ms` (else the connection is closed), its body
//! within `body_timeout_ms` of the request's start (else 408), and at most
//! `max_concurrent_requests` requests are served at once (beyond that 503
//! with `Retry-After`, at once, rather than a queue that grows until memory
//! runs out). A client sending 1 byte per second no longer holds a
//! connection and a buffer for as long as it likes.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use tokio::sync::Semaphore;

use super::ApiError;
pub use crate::config::HttpLimits;

static LIMITS: OnceLock<HttpLimits> = OnceLock::new();

impl HttpLimits {
    /// The process's limits: set once at start-up from configuration
    /// (`shared::service::main`), the defaults until then.
    pub fn get() -> &'static HttpLimits {
        LIMITS.get_or_init(HttpLimits::default)
    }

    /// Sets the process's limits; the first call wins.
    pub fn install(limits: HttpLimits) {
        let _ = LIMITS.set(limits);
    }

    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms.max(1))
    }
}

/// The permits of the process's requests.
fn permits() -> &'static Arc<Semaphore> {
    static PERMITS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    PERMITS.get_or_init(|| {
        Arc::new(Semaphore::new(
            HttpLimits::get().max_concurrent_requests.max(1),
        ))
    })
}

/// Middleware: the concurrency limit and the body deadline. Probes and
/// scrapes (`/healthz`, `/readyz`, `/metrics`) are never refused: a
/// saturated service must still say so.
pub async fn guard(request: Request, next: Next) -> Response {
    let limits = HttpLimits::get();
    let probe = matches!(request.uri().path(), "/healthz" | "/readyz" | "/metrics");
    let _permit = if probe {
        None
    } else {
        match permits().clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                let mut response = ApiError::unavailable(
                    "overloaded",
                    format!(
                        "{} requests are being served, the most this instance takes at once; retry shortly",
                        limits.max_concurrent_requests
                    ),
                )
                .into_response();
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(limits.retry_after_secs),
                );
                return response;
            }
        }
    };
    let timed_out = Arc::new(AtomicBool::new(false));
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(limits.body_timeout_ms.max(1));
    let request = request.map(|body| {
        Body::new(DeadlineBody {
            inner: body,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            timed_out: timed_out.clone(),
        })
    });
    let response = next.run(request).await;
    if timed_out.load(Ordering::Relaxed) {
        // Whatever the handler made of the cut-off body, the answer is 408;
        // the rest of the body is unread, so the connection closes.
        let mut response = ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request body did not arrive within {} ms",
                limits.body_timeout_ms
            ),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    response
}

/// The body has not arrived by its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimeout;

/// A request body that fails once its deadline passes.
struct DeadlineBody {
    inner: Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
    timed_out: Arc<AtomicBool>,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.timed_out.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimeout))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
