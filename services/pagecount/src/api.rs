//! The coordinator's API (token on every route): `POST /jobs` snapshots the
//! input's offsets, splits each partition's range into chunks and writes
//! the job with one map task per chunk to the outbox, in one transaction
//! (the relay publishes them); `GET /jobs`, `GET /jobs/{id}` (state, progress,
//! lines counted and rejected, shuffle records and bytes, map and reduce
//! times, ETA), `GET /jobs/{id}/pages?limit=&after=` (top pages of a
//! succeeded job, keyset pages by count then page), `POST /jobs/{id}/cancel`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use shared::config::KafkaConfig;
use shared::event::{Event, EventBody, MapTask};
use shared::http::extract::TimeRange;
use shared::http::{Admin, ApiError, Json, Limit, Path, Query};
use shared::replay::{From, Span};
use sqlx::PgPool;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::store::{self, Job, JobState, Range};

#[derive(Clone)]
pub struct ApiState {
    pub pool: PgPool,
    pub kafka: KafkaConfig,
    /// Wakes the outbox relay that publishes the map tasks.
    pub wake: std::sync::Arc<tokio::sync::Notify>,
    pub input_topic: String,
    pub shuffle_topic: String,
    pub shuffle_partitions: i32,
    pub chunk_lines: u32,
    pub keep_jobs: i64,
}

pub fn router(state: ApiState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(fetch))
        .routes(routes!(cancel))
        .routes(routes!(pages))
        .with_state(state)
}

/// A job to start: the input topic's range to count.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewJob {
    /// `earliest` (default) or an RFC 3339 time, not before 1970: the first
    /// record at or after it, per partition.
    #[schema(schema_with = shared::event::openapi::earliest_or_time_or_null)]
    from: Option<String>,
    /// Up to the first record at or after this RFC 3339 time, after `from`
    /// (default: the end as it is now).
    #[schema(schema_with = shared::event::openapi::time_or_null)]
    to: Option<String>,
    /// Explicit offsets instead: `{"<partition>": [start, end]}`, end
    /// exclusive, within what the partition holds.
    #[schema(schema_with = offsets_schema)]
    offsets: Option<BTreeMap<i32, (i64, i64)>>,
    /// Lines per map task, 10 to 10,000,000 (default: configured).
    #[schema(minimum = 10, maximum = 10_000_000)]
    chunk_lines: Option<u32>,
    /// Sum per page in the mappers before the shuffle (default true).
    combiner: Option<bool>,
}

/// `offsets`: an object from partition numbers to `[start, end]`.
fn offsets_schema() -> impl Into<RefOr<Schema>> {
    let offset = ObjectBuilder::new().schema_type(Type::Integer).format(Some(
        utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Int64),
    ));
    let range = ArrayBuilder::new()
        .items(offset)
        .min_items(Some(2))
        .max_items(Some(2));
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([Type::Object, Type::Null]))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[0-9]{1,9}$")),
        ))
        .additional_properties(Some(range))
        .description(Some(
            "Explicit offsets instead: `{\"<partition>\": [start, end]}`, end exclusive, within what the partition holds.",
        ))
}

/// The latest jobs, newest first.
#[derive(Serialize, ToSchema)]
struct Jobs {
    jobs: Vec<Job>,
}

/// A job's page counts.
#[derive(Serialize, ToSchema)]
struct Pages {
    job_id: i64,
    /// By count, highest first (ties by page, descending).
    pages: Vec<PageCount>,
    /// The `after` of the next page; null on the last one.
    next_after: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct PageCount {
    page: String,
    count: i64,
}

/// Starts a job.
///
/// Snapshots the input's offsets (from `from` to `to`, or `offsets`), splits
/// each partition's range into chunks of `chunk_lines` and stores one map
/// task per chunk with the job, in one transaction; the coordinator's outbox
/// relay publishes them. An empty range is a job that succeeded at once. A time
/// before 1970, or a `to` not after `from`, is 400 `invalid_range` naming
/// the field (the dashboard's replays answer the same).
#[utoipa::path(post, path = "/jobs", tag = "pagecount", operation_id = "start_job",
    security(("bearer" = [])),
    request_body = NewJob,
    responses((status = 202, description = "The job runs (or, with nothing to count, succeeded)", body = Job)))]
async fn create(
    _: Admin,
    State(s): State<ApiState>,
    Json(request): Json<NewJob>,
) -> Result<(StatusCode, axum::Json<Job>), ApiError> {
    let chunk_lines = request.chunk_lines.unwrap_or(s.chunk_lines);
    if !(10..=10_000_000).contains(&chunk_lines) {
        return Err(
            ApiError::bad_request("invalid_field", "chunk_lines must be 10 to 10,000,000")
                .with("field", "chunk_lines"),
        );
    }
    let range = TimeRange::parse(
        request.from.as_deref().unwrap_or("earliest"),
        request.to.as_deref(),
    )?;
    let from = range.from.map_or(From::Earliest, From::Time);
    let to = range.to;
    let (kafka, topic) = (s.kafka.clone(), s.input_topic.clone());
    let plan = tokio::task::spawn_blocking(move || shared::replay::plan(&kafka, &topic, from, to))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| {
            ApiError::unavailable(
                "broker_unavailable",
                "could not snapshot the input's offsets",
            )
            .caused_by(format!("{e:#}"))
        })?;
    let spans: BTreeMap<i32, Span> = match request.offsets {
        None => plan.spans,
        Some(offsets) => {
            let mut spans = BTreeMap::new();
            for (partition, (start, end)) in offsets {
                let Some(bounds) = plan.spans.get(&partition) else {
                    return Err(ApiError::bad_request(
                        "invalid_range",
                        format!("partition {partition} is not in {}", s.input_topic),
                    ));
                };
                if start < bounds.start || end < start || end > bounds.end {
                    return Err(ApiError::bad_request(
                        "invalid_range",
                        format!(
                            "partition {partition}: {start}..{end} is not within {}..{}",
                            bounds.start, bounds.end
                        ),
                    ));
                }
                spans.insert(partition, Span { start, end });
            }
            spans
        }
    };
    let chunks = split(&spans, chunk_lines)?;
    let lines: i64 = spans.values().map(|s| s.end - s.start).sum();
    let ranges: Vec<Range> = spans
        .iter()
        .map(|(p, s)| Range {
            partition: *p,
            start: s.start,
            end: s.end,
        })
        .collect();
    let combiner = request.combiner.unwrap_or(true);
    let job = store::NewJob {
        input_topic: &s.input_topic,
        ranges: &ranges,
        lines_total: lines,
        chunk_lines: chunk_lines as i32,
        chunks_total: chunks.len() as i32,
        shuffle_partitions: s.shuffle_partitions,
        combiner,
    };
    // The job and its tasks are one transaction (the outbox): a coordinator
    // killed after the commit leaves the tasks to the next relay.
    let id = store::create(&s.pool, job, s.keep_jobs, |id| {
        chunks
            .iter()
            .enumerate()
            .map(|(chunk, (partition, start, end))| {
                let event = Event::new(EventBody::MapTask(MapTask {
                    task: format!("{id}-{chunk}"),
                    job_id: id,
                    chunk: chunk as u32,
                    topic: s.input_topic.clone(),
                    partition: *partition,
                    start: *start,
                    end: *end,
                    shuffle_topic: s.shuffle_topic.clone(),
                    shuffle_partitions: s.shuffle_partitions,
                    combiner,
                }));
                let payload = String::from_utf8(event.to_json()).expect("JSON is UTF-8");
                (event.key().to_owned(), payload)
            })
            .collect()
    })
    .await?;
    s.wake.notify_one();
    metrics::counter!("kappa_pagecount_jobs_started_total").increment(1);
    let job = store::job(&s.pool, id)
        .await?
        .ok_or_else(|| ApiError::internal(format!("job {id} is gone just after it was created")))?;
    Ok((StatusCode::ACCEPTED, axum::Json(job)))
}

/// A job with its progress.
///
/// State, progress (0 to 1), lines counted and rejected, shuffle records
/// and bytes, map and reduce times, and an ETA while it runs.
#[utoipa::path(get, path = "/jobs/{id}", tag = "pagecount", operation_id = "get_job",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The job's id")),
    responses((status = 200, description = "The job", body = Job)))]
async fn fetch(
    _: Admin,
    State(s): State<ApiState>,
    Path(id): Path<i64>,
) -> Result<axum::Json<Job>, ApiError> {
    let job = store::job(&s.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    Ok(axum::Json(job))
}

/// The latest jobs.
///
/// The 50 newest jobs, newest first, each with its progress.
#[utoipa::path(get, path = "/jobs", tag = "pagecount", operation_id = "list_jobs",
    security(("bearer" = [])),
    responses((status = 200, description = "The latest jobs", body = Jobs)))]
async fn list(_: Admin, State(s): State<ApiState>) -> Result<axum::Json<Jobs>, ApiError> {
    let ids = store::latest(&s.pool, 50).await?;
    let mut jobs = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(job) = store::job(&s.pool, id).await? {
            jobs.push(job);
        }
    }
    Ok(axum::Json(Jobs { jobs }))
}

/// Cancels a running job.
///
/// Its tasks are skipped from then on and its partial counts removed:
/// nothing half-written is served. Cancelling a cancelled job answers it
/// again; a job that succeeded is 409. The job stays readable: cancelling
/// is an action on it (`POST`), not its deletion.
#[utoipa::path(post, path = "/jobs/{id}/cancel", tag = "pagecount", operation_id = "cancel_job",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job, cancelled", body = Job),
        (status = 409, description = "The job succeeded already (`job_finished`)", body = shared::http::openapi::ErrorBody)))]
async fn cancel(
    _: Admin,
    State(s): State<ApiState>,
    Path(id): Path<i64>,
) -> Result<axum::Json<Job>, ApiError> {
    match store::cancel(&s.pool, id).await? {
        None => Err(ApiError::not_found(format!("no job {id}"))),
        Some(JobState::Cancelled) => {
            let job = store::job(&s.pool, id)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
            Ok(axum::Json(job))
        }
        Some(other) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "job_finished",
            format!("job {id} is {other}"),
        )),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    /// Pages per answer, 1 to 1000 (default 20).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The last row of the previous page, as `count:page` (`next_after`).
    #[param(pattern = r"^[+-]?[0-9]{1,18}:[^\u0000]*$")]
    after: Option<String>,
}

/// The top pages of a job that succeeded.
///
/// Pages by access count, highest first, a page at a time: pass the
/// answer's `next_after` as `after` for the next. A job that did not succeed
/// (running or cancelled) is 409 with its `state`.
#[utoipa::path(get, path = "/jobs/{id}/pages", tag = "pagecount", operation_id = "job_pages",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The job's id"), PageQuery),
    responses(
        (status = 200, description = "Pages and their counts", body = Pages),
        (status = 409, description = "The job has not succeeded (`job_not_finished`; `state` says where it is)", body = shared::http::openapi::ErrorBody)))]
async fn pages(
    _: Admin,
    State(s): State<ApiState>,
    Path(id): Path<i64>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Pages>, ApiError> {
    let limit = Limit::new(20, 1000).check(q.limit)? as i64;
    let after = match q.after.as_deref() {
        None => None,
        Some(cursor) => Some(
            cursor
                .split_once(':')
                .filter(|(_, p)| !p.contains('\0'))
                .and_then(|(c, p)| c.parse::<i64>().ok().map(|c| (c, p.to_owned())))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_query",
                        "after must be count:page, as next_after gives it",
                    )
                })?,
        ),
    };
    match store::state(&s.pool, id).await? {
        None => return Err(ApiError::not_found(format!("no job {id}"))),
        Some(JobState::Succeeded) => {}
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "job_not_finished",
                format!("job {id} is {other}; pages are served once it succeeded"),
            )
            .with("state", other.as_str()))
        }
    }
    let after = after.as_ref().map(|(count, page)| (*count, page.as_str()));
    let rows = store::pages(&s.pool, id, after, limit).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|(p, c)| format!("{c}:{p}")))
        .flatten();
    let pages = rows
        .into_iter()
        .map(|(page, count)| PageCount { page, count })
        .collect();
    Ok(axum::Json(Pages {
        job_id: id,
        pages,
        next_after: next,
    }))
}

/// The most map tasks (chunks) one job may have.
const MAX_CHUNKS: i64 = 10_000;

/// Splits each partition's span into chunks of `chunk_lines`:
/// `(partition, start, end)`. Each chunk is a map task on the shared task
/// topic, so a job of millions of tiny chunks would hold every mapper for
/// hours (and its plan the coordinator's memory): the count is bounded
/// before anything is built.
fn split(spans: &BTreeMap<i32, Span>, chunk_lines: u32) -> Result<Vec<(i32, i64, i64)>, ApiError> {
    let per_chunk = i64::from(chunk_lines);
    let count: i64 = spans
        .values()
        .map(|s| (s.end - s.start + per_chunk - 1) / per_chunk)
        .sum();
    if count > MAX_CHUNKS {
        let lines: i64 = spans.values().map(|s| s.end - s.start).sum();
        let smallest = (lines + MAX_CHUNKS - 1) / MAX_CHUNKS;
        return Err(ApiError::bad_request(
            "too_many_chunks",
            format!(
                "{count} chunks of {chunk_lines} lines; a job has at most {MAX_CHUNKS}: \
                 chunk_lines of at least {smallest}, or a smaller range"
            ),
        )
        .with("field", "chunk_lines")
        .with("limit", MAX_CHUNKS));
    }
    let mut chunks = Vec::with_capacity(count as usize);
    for (partition, span) in spans {
        let mut start = span.start;
        while start < span.end {
            let end = (start + per_chunk).min(span.end);
            chunks.push((*partition, start, end));
            start = end;
        }
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use shared::replay::Span;

    use super::{split, MAX_CHUNKS};

    #[test]
    fn spans_split_into_chunks_up_to_a_bound() {
        let spans = BTreeMap::from([
            (0, Span { start: 0, end: 25 }),
            (3, Span { start: 10, end: 20 }),
        ]);
        let chunks = split(&spans, 10).unwrap();
        assert_eq!(chunks, [(0, 0, 10), (0, 10, 20), (0, 20, 25), (3, 10, 20)]);
        // A billion lines in chunks of 10: refused before any chunk is built.
        let huge = BTreeMap::from([(
            0,
            Span {
                start: 0,
                end: 1_000_000_000,
            },
        )]);
        let refused = split(&huge, 10).unwrap_err();
        assert_eq!(refused.code(), "too_many_chunks");
        assert_eq!(
            refused.detail("limit"),
            Some(&serde_json::json!(MAX_CHUNKS))
        );
        assert!(split(&huge, 100_000).is_ok(), "exactly the bound");
    }
}
