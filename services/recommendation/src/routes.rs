//! `GET /users/{id}/recommendations` (token: it reveals a user's history),
//! `GET /products/{id}/similar`, `GET /stats`, `GET /stats/daily`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use shared::http::{Admin, ApiError, Limit, Path, Query, Viewer};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::query;
use crate::query::{AsOf, Day, Scored};
use crate::state::AppState;

const MAX_LIMIT: usize = 100;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LimitQuery {
    /// How many products, 1 to 100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
}

impl LimitQuery {
    fn get(self) -> Result<usize, ApiError> {
        Ok(Limit::new(10, MAX_LIMIT).check(self.limit)?)
    }
}

/// The user a path names (a schema only: the handler takes `Path<String>`).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct UserPath {
    /// The user's id (no NUL)
    #[param(schema_with = shared::event::openapi::text)]
    id: String,
}

/// The product a path names (a schema only: the handler takes `Path<String>`).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct ProductPath {
    /// The product's id (no NUL)
    #[param(schema_with = shared::event::openapi::text)]
    id: String,
}

/// An id as the stream can hold it: PostgreSQL text cannot carry a NUL, and
/// the event parser refuses control characters in ids.
fn checked_id(value: String) -> Result<String, ApiError> {
    match value.contains('\0') {
        false => Ok(value),
        true => Err(
            ApiError::bad_request("invalid_id", "an id cannot contain a NUL character")
                .with("field", "id"),
        ),
    }
}

/// `public_metrics`: whether `/stats/daily` (revenue) needs no token
/// (`auth.public_metrics`, as the dashboard's daily metrics).
pub fn router(state: AppState, public_metrics: bool) -> OpenApiRouter {
    let mut router = OpenApiRouter::new()
        .routes(routes!(recommendations))
        .routes(routes!(similar))
        .routes(routes!(stats))
        .routes(routes!(daily))
        .with_state(state);
    shared::http::openapi::metrics_security(&mut router, &["/stats/daily"], public_metrics);
    router
}

/// Recommendations for a user.
#[derive(Serialize, ToSchema)]
pub struct ForUser {
    user_id: String,
    /// Best first.
    items: Vec<Scored>,
    /// Popular products filled up a thin (or no) history.
    fallback: bool,
    as_of: AsOf,
}

/// Products engaged with together with one.
#[derive(Serialize, ToSchema)]
pub struct Similar {
    product_id: String,
    /// Best first.
    items: Vec<Scored>,
    as_of: AsOf,
}

/// The consumer's committed progress.
#[derive(Serialize, ToSchema)]
pub struct Stats {
    /// Events applied to the model, all partitions.
    events_applied: i64,
    /// Messages sent to the dead-letter queue, all partitions.
    dlq: i64,
    /// The next offset to consume, by partition.
    next_offsets: BTreeMap<String, i64>,
}

/// Per-day counters.
#[derive(Serialize, ToSchema)]
pub struct Daily {
    /// Oldest first.
    days: Vec<Day>,
}

/// A user's recommendations.
///
/// Products engaged with together with the user's recent ones, minus what
/// the user bought, best first; popular products fill up a thin history
/// (`fallback`). Any instance gives the same answer.
#[utoipa::path(get, path = "/users/{id}/recommendations", tag = "recommendation", operation_id = "recommendations_for_user",
    security(("bearer" = [])),
    params(UserPath, LimitQuery),
    responses((status = 200, description = "The user's recommendations (an unknown user gets popular products)", body = ForUser)))]
async fn recommendations(
    _: Admin,
    State(s): State<AppState>,
    Path(user): Path<String>,
    Query(limit): Query<LimitQuery>,
) -> Result<Json<ForUser>, ApiError> {
    let (user, limit) = (checked_id(user)?, limit.get()?);
    let (items, fallback, as_of) = query::answer_for_user(
        &s.pool,
        &s.popular,
        (&s.consumer, &s.topic),
        &user,
        limit,
        s.half_life_secs,
    )
    .await?;
    Ok(Json(ForUser {
        user_id: user,
        items,
        fallback,
        as_of,
    }))
}

/// Products similar to one.
///
/// The products most often engaged with together with it, best first; an
/// unknown product has none.
#[utoipa::path(get, path = "/products/{id}/similar", tag = "recommendation", operation_id = "similar_products",
    params(ProductPath, LimitQuery),
    responses((status = 200, description = "The similar products", body = Similar)))]
async fn similar(
    State(s): State<AppState>,
    Path(product): Path<String>,
    Query(limit): Query<LimitQuery>,
) -> Result<Json<Similar>, ApiError> {
    let (product, limit) = (checked_id(product)?, limit.get()?);
    let (items, as_of) = query::answer_similar(
        &s.pool,
        (&s.consumer, &s.topic),
        &product,
        limit,
        s.half_life_secs,
    )
    .await?;
    Ok(Json(Similar {
        product_id: product,
        items,
        as_of,
    }))
}

/// The consumer's progress.
///
/// Events applied and dead-lettered, and the next offset per partition, as
/// committed with the model (exactly once).
#[utoipa::path(get, path = "/stats", tag = "recommendation", operation_id = "progress_stats",
    responses((status = 200, description = "The committed progress", body = Stats)))]
async fn stats(State(s): State<AppState>) -> Result<Json<Stats>, ApiError> {
    let rows = shared::worker::offsets::progress(&s.pool, &s.consumer, &s.topic).await?;
    Ok(Json(Stats {
        events_applied: rows.iter().map(|r| r.2).sum(),
        dlq: rows.iter().map(|r| r.3).sum(),
        next_offsets: rows
            .iter()
            .map(|(p, next, _, _)| (p.to_string(), *next))
            .collect(),
    }))
}

/// Interactions and revenue per day.
///
/// Per UTC day of the events' time: views, clicks, add-to-carts, purchases
/// and revenue, all partitions combined. Public unless `auth.public_metrics`
/// is false.
#[utoipa::path(get, path = "/stats/daily", tag = "recommendation", operation_id = "daily_stats",
    responses((status = 200, description = "Every day with events, oldest first", body = Daily)))]
async fn daily(_: Viewer, State(s): State<AppState>) -> Result<Json<Daily>, ApiError> {
    Ok(Json(Daily {
        days: query::daily(&s.pool).await?,
    }))
}
