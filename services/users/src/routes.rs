//! `POST /users`, `PUT /users/{id}`, `GET /users/{id}`, `GET /users?limit=&after=`;
//! every one needs the token (personal data). Answers carry the user's
//! version as `ETag`; `PUT` with `If-Match` is refused (412) when the
//! version moved on.

use axum::extract::State;
use axum::http::header::{ETAG, IF_MATCH, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::json;
use shared::http::{Admin, ApiError, Json, Path, Query};

use crate::store::{self, User, WriteError};
use crate::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/users", get(list).post(create))
        .route("/users/{id}", get(fetch).put(update))
        .with_state(state)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    id: Option<String>,
    email: String,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    email: String,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    limit: Option<i64>,
    after: Option<String>,
}

/// The fields every write checks: the id as the stream holds ids, the email.
fn check(id: &str, email: &str, name: Option<&str>) -> Result<(), ApiError> {
    let invalid = |field: &str, problem: &str| {
        ApiError::bad_request("invalid_field", format!("`{field}` {problem}")).with("field", field)
    };
    if id.trim().is_empty() || id.len() > 256 || id.chars().any(|c| c.is_control() || c == '/') {
        return Err(invalid(
            "id",
            "must be 1 to 256 bytes without control characters or `/`",
        ));
    }
    if let Some(problem) = shared::event::email_problem(email) {
        return Err(invalid("email", problem));
    }
    if name.is_some_and(|n| n.contains('\0') || n.len() > 1024) {
        return Err(invalid("name", "must be at most 1024 bytes without NUL"));
    }
    Ok(())
}

/// A user with its version as the entity tag.
fn answer(status: StatusCode, user: User) -> Response {
    let etag = HeaderValue::from_str(&format!("\"{}\"", user.version)).expect("digits");
    (status, [(ETAG, etag)], axum::Json(user)).into_response()
}

fn write_error(id: &str, error: WriteError) -> ApiError {
    match error {
        WriteError::NotFound => ApiError::not_found(format!("no user {id}")),
        WriteError::Exists => ApiError::new(
            StatusCode::CONFLICT,
            "exists",
            format!("user {id} exists already"),
        ),
        WriteError::Stale { current } => ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "version_mismatch",
            format!("user {id} is at version {current}; read it again and retry"),
        )
        .with("version", current),
        WriteError::Database(error) => error.into(),
    }
}

async fn create(
    _: Admin,
    State(s): State<AppState>,
    Json(new): Json<NewUser>,
) -> Result<Response, ApiError> {
    let id = new.id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    check(&id, &new.email, new.name.as_deref())?;
    let user = store::create(&s.pool, &id, &new.email, new.name.as_deref())
        .await
        .map_err(|e| write_error(&id, e))?;
    s.wake.notify_one();
    let mut response = answer(StatusCode::CREATED, user);
    if let Ok(location) = HeaderValue::from_str(&format!("/users/{id}")) {
        response.headers_mut().insert(LOCATION, location);
    }
    Ok(response)
}

async fn update(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(change): Json<Change>,
) -> Result<Response, ApiError> {
    check(&id, &change.email, change.name.as_deref())?;
    let expected = match headers.get(IF_MATCH) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .map(|v| v.trim().trim_matches('"'))
                .and_then(|v| v.parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_if_match",
                        "If-Match must be a version, e.g. \"3\"",
                    )
                })?,
        ),
    };
    let user = store::update(
        &s.pool,
        &id,
        &change.email,
        change.name.as_deref(),
        expected,
    )
    .await
    .map_err(|e| write_error(&id, e))?;
    s.wake.notify_one();
    Ok(answer(StatusCode::OK, user))
}

async fn fetch(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let user = store::get(&s.pool, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no user {id}")))?;
    Ok(answer(StatusCode::OK, user))
}

async fn list(
    _: Admin,
    State(s): State<AppState>,
    Query(page): Query<Page>,
) -> Result<Response, ApiError> {
    let limit = page.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            "limit must be between 1 and 1000",
        ));
    }
    let users = store::list(&s.pool, limit, page.after.as_deref()).await?;
    let next = (users.len() as i64 == limit)
        .then(|| users.last().map(|u| u.id.clone()))
        .flatten();
    Ok(axum::Json(json!({"users": users, "next": next})).into_response())
}
