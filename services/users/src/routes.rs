//! `POST /users`, `PUT /users/{id}`, `GET /users/{id}`, `GET /users?limit=&after=`;
//! every one needs the token (personal data). Answers carry the user's
//! version as `ETag`; `PUT` with `If-Match` is refused (412) when the
//! version moved on.

use axum::extract::State;
use axum::http::header::{ETAG, IF_MATCH, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use shared::http::{Admin, ApiError, Json, Limit, Path, Query};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;
use crate::store::{self, User, WriteError};

pub fn router(state: AppState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(fetch, update))
        .with_state(state)
}

/// A new user.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewUser {
    /// The user's id (1 to 256 bytes, no control characters, bidirectional
    /// controls or `/`); absent: a new UUIDv7.
    #[schema(schema_with = new_id)]
    id: Option<String>,
    /// A bare address, `local@domain` (no display name, no IP literal).
    #[schema(schema_with = shared::event::openapi::email)]
    email: String,
    /// At most 1024 bytes.
    #[schema(schema_with = name)]
    name: Option<String>,
}

/// A user's new email and name (both replaced).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Change {
    /// A bare address, `local@domain` (no display name, no IP literal).
    #[schema(schema_with = shared::event::openapi::email)]
    email: String,
    /// At most 1024 bytes; absent: no name.
    #[schema(schema_with = name)]
    name: Option<String>,
}

/// The schema of a user's id ([`check_id`]): an id as events hold them,
/// without `/` (it is a path segment).
fn user_id() -> utoipa::openapi::schema::Object {
    shared::event::openapi::id_without("/")
}

/// [`user_id`] or null (a new UUIDv7).
fn new_id() -> utoipa::openapi::schema::Object {
    shared::event::openapi::id_without_or_null("/")
}

/// A user's name ([`check`]): no NUL, at most 1024 bytes (`maxLength`
/// counts characters: the bytes are in the description), or null.
fn name() -> utoipa::openapi::schema::Object {
    let mut name = shared::event::openapi::text_or_null();
    name.max_length = Some(1024);
    name
}

/// The user a path names.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct UserPath {
    /// The user's id
    #[param(schema_with = user_id)]
    #[allow(dead_code)] // A schema only: the handlers take `Path<String>`.
    id: String,
}

/// `GET /users`'s page size.
const PAGE: Limit = Limit::new(50, 1000);

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct Page {
    /// Users per page, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The last id of the previous page (its `next`).
    #[param(schema_with = shared::event::openapi::text)]
    after: Option<String>,
}

/// A page of users, by id.
#[derive(Serialize, ToSchema)]
struct Users {
    users: Vec<User>,
    /// The `after` of the next page; null on the last one.
    next: Option<String>,
}

/// 400 `invalid_field` naming the field.
fn invalid(field: &str, problem: &str) -> ApiError {
    ApiError::bad_request("invalid_field", format!("`{field}` {problem}")).with("field", field)
}

/// An id as the stream holds ids. A bidirectional control would make the id
/// read as another one wherever it is shown (and the event carrying it is
/// refused downstream), so it is refused here as well.
fn check_id(id: &str) -> Result<(), ApiError> {
    let bad = |c: char| c.is_control() || c == '/' || shared::text::is_bidi_control(c);
    if id.trim().is_empty() || id.len() > 256 || id.chars().any(bad) {
        return Err(invalid(
            "id",
            "must be 1 to 256 bytes without control characters, bidirectional controls or `/`",
        ));
    }
    Ok(())
}

/// The fields every write checks: the id, the email, the name.
fn check(id: &str, email: &str, name: Option<&str>) -> Result<(), ApiError> {
    check_id(id)?;
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

/// Creates a user.
///
/// The write and its `user_updated` event are one transaction (the outbox);
/// the answer carries the user's version (1) as `ETag` and its URL as
/// `Location`. An id that exists already is 409.
#[utoipa::path(post, path = "/users", tag = "users", operation_id = "create_user",
    security(("bearer" = [])),
    request_body = NewUser,
    responses(
        (status = 201, description = "The user is created", body = User, headers(
            ("Location" = String, description = "The user's URL, `/users/{id}`"),
            ("ETag" = String, description = "The user's version, quoted, e.g. `\"1\"`"))),
        (status = 409, description = "A user with this id exists already (`exists`)", body = shared::http::openapi::ErrorBody)))]
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
    let location = HeaderValue::from_str(&format!("/users/{}", path_segment(&id)))
        .expect("a percent-encoded path is visible ASCII");
    response.headers_mut().insert(LOCATION, location);
    Ok(response)
}

/// `text` as one URL path segment: every byte but the unreserved ones
/// (RFC 3986) percent-encoded. A header holds bytes, and clients read any
/// beyond ASCII as Latin-1: an id's UTF-8 sent raw in `Location` came back
/// as another id.
fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Replaces a user's email and name.
///
/// The version grows by one and the change is published as `user_updated`.
/// With `If-Match: "<version>"` (the `ETag` of a read), only if the stored
/// version is that one: otherwise 412, with the current `version`.
#[utoipa::path(put, path = "/users/{id}", tag = "users", operation_id = "update_user",
    security(("bearer" = [])),
    params(
        UserPath,
        ("If-Match" = Option<String>, Header, description = "The version the change is based on, as `ETag` gave it (`\"3\"`)",
            pattern = r#"^"*[+-]?[0-9]{1,18}"*$"#)),
    request_body = Change,
    responses(
        (status = 200, description = "The user as changed", body = User, headers(
            ("ETag" = String, description = "The user's new version, quoted"))),
        (status = 412, description = "`If-Match` names another version than the stored one (`version_mismatch`; `version` is the current one)", body = shared::http::openapi::ErrorBody)))]
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

/// A user.
///
/// The answer carries the user's version as `ETag` (for `If-Match`).
#[utoipa::path(get, path = "/users/{id}", tag = "users", operation_id = "get_user",
    security(("bearer" = [])),
    params(UserPath),
    responses((status = 200, description = "The user", body = User, headers(
        ("ETag" = String, description = "The user's version, quoted")))))]
async fn fetch(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_id(&id)?;
    let stored = store::get(&s.pool, &id).await?;
    let user = stored.ok_or_else(|| ApiError::not_found(format!("no user {id}")))?;
    Ok(answer(StatusCode::OK, user))
}

/// Users by id, a page at a time.
///
/// Keyset pages: pass the answer's `next` as `after` for the next page;
/// `next` is null on the last one.
#[utoipa::path(get, path = "/users", tag = "users", operation_id = "list_users",
    security(("bearer" = [])),
    params(Page),
    responses((status = 200, description = "A page of users", body = Users)))]
async fn list(
    _: Admin,
    State(s): State<AppState>,
    Query(page): Query<Page>,
) -> Result<axum::Json<Users>, ApiError> {
    let limit = PAGE.check(page.limit)? as i64;
    if page.after.as_deref().is_some_and(|a| a.contains('\0')) {
        return Err(ApiError::bad_request(
            "invalid_after",
            "after must be an id, as `next` gives it",
        )
        .with("field", "after"));
    }
    let users = store::list(&s.pool, limit, page.after.as_deref()).await?;
    let next = (users.len() as i64 == limit)
        .then(|| users.last().map(|u| u.id.clone()))
        .flatten();
    Ok(axum::Json(Users { users, next }))
}
