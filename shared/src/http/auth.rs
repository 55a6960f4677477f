//! Bearer-token authentication for writes, admin and personal-data routes:
//! a handler that needs it takes [`Admin`] as an argument. Being an
//! extractor (not a layer), it runs only once the route and method matched,
//! so a wrong method is 405 and an unknown path 404, whatever the token.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::ApiError;
use crate::config::Secret;

/// The admin token, installed for every request by `shared::http::finish`.
#[derive(Clone)]
pub struct AdminToken(pub Secret);

/// Whether daily metrics (revenue included) are readable without the
/// token (`auth.public_metrics`), installed for every request by `finish`.
#[derive(Clone, Copy)]
pub struct MetricsAccess {
    pub public: bool,
}

/// Proof that the request may read daily metrics: anyone while
/// `auth.public_metrics` is true, otherwise only the admin token's holders
/// (401 without it). The routes taking it are listed to
/// [`super::openapi::metrics_security`], so their description says the same.
#[derive(Debug, Clone, Copy)]
pub struct Viewer;

impl<S: Send + Sync> FromRequestParts<S> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let public = parts
            .extensions
            .get::<MetricsAccess>()
            .is_some_and(|access| access.public);
        if !public {
            Admin::from_request_parts(parts, state).await?;
        }
        Ok(Viewer)
    }
}

/// Proof that the request carried the admin token.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(AdminToken(token)) = parts.extensions.get::<AdminToken>() else {
            return Err(ApiError::internal("no admin token installed on the router"));
        };
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer);
        match presented {
            Some(candidate)
                if constant_time_eq(candidate.as_bytes(), token.expose().as_bytes()) =>
            {
                Ok(Admin)
            }
            _ => Err(ApiError::unauthorized()),
        }
    }
}

/// The credentials of a `Bearer` authorization; the scheme is
/// case-insensitive (RFC 7235).
fn bearer(header: &str) -> Option<&str> {
    let (scheme, credentials) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
}

/// Compares without an early exit, so response time does not reveal how much
/// of a guessed token was right; nor its length: both sides are hashed to 32
/// bytes first, and the digests are compared whole.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    fixed_eq(&Sha256::digest(a).into(), &Sha256::digest(b).into())
}

/// Every byte of two 32-byte digests compared, whatever they hold: the
/// lengths compared are always the same, so no early exit tells a guess's
/// length (or how much of it was right).
fn fixed_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn compares_whole_tokens() {
        assert!(super::constant_time_eq(b"abc", b"abc"));
        assert!(!super::constant_time_eq(b"abc", b"abd"));
        assert!(!super::constant_time_eq(b"abc", b"ab"));
        assert!(!super::constant_time_eq(b"", b"abc"));
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        assert_eq!(super::bearer("Bearer t0k"), Some("t0k"));
        assert_eq!(super::bearer("bearer t0k"), Some("t0k"));
        assert_eq!(super::bearer("BEARER  t0k "), Some("t0k"));
        assert_eq!(super::bearer("Basic t0k"), None);
        assert_eq!(super::bearer("Bearer"), None);
    }
}
