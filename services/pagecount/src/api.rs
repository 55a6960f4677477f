//! The coordinator's API (token on every route): `POST /jobs` snapshots the
//! input's offsets, splits each partition's range into chunks and publishes
//! one map task per chunk; `GET /jobs`, `GET /jobs/{id}` (state, progress,
//! lines counted and rejected, shuffle records and bytes, map and reduce
//! times, ETA), `GET /jobs/{id}/pages?limit=&after=` (top pages of a
//! succeeded job, keyset pages by count then page), `DELETE /jobs/{id}`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use shared::config::KafkaConfig;
use shared::event::{Event, EventBody, MapTask};
use shared::http::{Admin, ApiError, Json, Path, Query};
use shared::kafka_batch::{BatchProducer, Outgoing};
use shared::replay::{From, Span};
use sqlx::PgPool;

#[derive(Clone)]
pub struct ApiState {
    pub pool: PgPool,
    pub kafka: KafkaConfig,
    pub producer: std::sync::Arc<BatchProducer>,
    pub input_topic: String,
    pub tasks_topic: String,
    pub shuffle_topic: String,
    pub shuffle_partitions: i32,
    pub chunk_lines: u32,
    pub keep_jobs: i64,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/jobs", get(list).post(create))
        .route("/jobs/{id}", get(fetch).delete(cancel))
        .route("/jobs/{id}/pages", get(pages))
        .with_state(state)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewJob {
    /// "earliest" (default) or an RFC 3339 time.
    from: Option<String>,
    to: Option<DateTime<Utc>>,
    /// Explicit offsets instead: `{partition: [start, end]}`.
    offsets: Option<BTreeMap<i32, (i64, i64)>>,
    chunk_lines: Option<u32>,
    combiner: Option<bool>,
}

async fn create(
    _: Admin,
    State(s): State<ApiState>,
    Json(request): Json<NewJob>,
) -> Result<Response, ApiError> {
    let chunk_lines = request.chunk_lines.unwrap_or(s.chunk_lines);
    if !(10..=10_000_000).contains(&chunk_lines) {
        return Err(
            ApiError::bad_request("invalid_field", "chunk_lines must be 10 to 10,000,000")
                .with("field", "chunk_lines"),
        );
    }
    let from = match request.from.as_deref() {
        None | Some("earliest") => From::Earliest,
        Some(time) => From::Time(
            DateTime::parse_from_rfc3339(time)
                .map_err(|e| {
                    ApiError::bad_request(
                        "invalid_field",
                        format!("from must be \"earliest\" or RFC 3339: {e}"),
                    )
                    .with("field", "from")
                })?
                .with_timezone(&Utc),
        ),
    };
    let (kafka, topic) = (s.kafka.clone(), s.input_topic.clone());
    let plan =
        tokio::task::spawn_blocking(move || shared::replay::plan(&kafka, &topic, from, request.to))
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
    let mut chunks = Vec::new();
    for (partition, span) in &spans {
        let mut start = span.start;
        while start < span.end {
            let end = (start + i64::from(chunk_lines)).min(span.end);
            chunks.push((*partition, start, end));
            start = end;
        }
    }
    let lines: i64 = spans.values().map(|s| s.end - s.start).sum();
    let ranges: Vec<Value> = spans
        .iter()
        .map(|(p, s)| json!({"partition": p, "start": s.start, "end": s.end}))
        .collect();
    let combiner = request.combiner.unwrap_or(true);
    let mut tx = s.pool.begin().await?;
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO pagecount_jobs (state, input_topic, ranges, lines_total, chunk_lines, chunks_total, shuffle_partitions, combiner)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(if chunks.is_empty() { "succeeded" } else { "running" })
    .bind(&s.input_topic)
    .bind(Value::Array(ranges))
    .bind(lines)
    .bind(chunk_lines as i32)
    .bind(chunks.len() as i32)
    .bind(s.shuffle_partitions)
    .bind(combiner)
    .fetch_one(&mut *tx)
    .await?;
    // Results of the last `keep_jobs` jobs are kept.
    sqlx::query("DELETE FROM pagecount_jobs WHERE state <> 'running' AND id <= $1 - $2")
        .bind(id)
        .bind(s.keep_jobs)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let tasks: Vec<(String, Vec<u8>)> = chunks
        .iter()
        .enumerate()
        .map(|(chunk, (partition, start, end))| {
            let task = MapTask {
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
            };
            let event = Event::new(EventBody::MapTask(task));
            (event.key().to_owned(), event.to_json())
        })
        .collect();
    let outgoing: Vec<Outgoing<'_>> = tasks
        .iter()
        .map(|(key, payload)| Outgoing {
            key: key.as_bytes(),
            payload,
            timestamp: None,
        })
        .collect();
    let failed = s
        .producer
        .send_all(&s.tasks_topic, &outgoing)
        .await
        .into_iter()
        .filter(Result::is_err)
        .count();
    if failed > 0 {
        sqlx::query(
            "UPDATE pagecount_jobs SET state = 'cancelled', finished_at = now() WHERE id = $1",
        )
        .bind(id)
        .execute(&s.pool)
        .await?;
        return Err(ApiError::unavailable(
            "broker_unavailable",
            format!("{failed} map task(s) were not published; the job is cancelled, retry it"),
        ));
    }
    metrics::counter!("kappa_pagecount_jobs_started_total").increment(1);
    let job = view(&s.pool, id).await?.expect("just created");
    Ok((StatusCode::ACCEPTED, axum::Json(job)).into_response())
}

/// A job with its progress.
async fn view(pool: &PgPool, id: i64) -> Result<Option<Value>, sqlx::Error> {
    type Row = (
        i64,
        String,
        String,
        Value,
        i64,
        i32,
        i32,
        i32,
        bool,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, state, input_topic, ranges, lines_total, chunk_lines, chunks_total, shuffle_partitions, combiner,
                created_at, mapped_at, finished_at FROM pagecount_jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some((
        id,
        state,
        topic,
        ranges,
        lines_total,
        chunk_lines,
        chunks_total,
        partitions,
        combiner,
        created,
        mapped,
        finished,
    )) = row
    else {
        return Ok(None);
    };
    // Each chunk's marker reaches every shuffle partition: partition 0's copy counts it once.
    let (chunks_done, lines, rejected, records, bytes): (i64, Option<i64>, Option<i64>, Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT count(*), sum(lines)::bigint, sum(rejected)::bigint, sum(records)::bigint, sum(bytes)::bigint
         FROM pagecount_chunks WHERE job_id = $1 AND shuffle_partition = 0",
    )
    .bind(id)
    .fetch_one(pool)
    .await?;
    let (final_partitions,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM pagecount_partitions WHERE job_id = $1")
            .bind(id)
            .fetch_one(pool)
            .await?;
    let (lines, rejected) = (lines.unwrap_or(0), rejected.unwrap_or(0));
    let progress = if chunks_total == 0 {
        1.0
    } else {
        0.5 * chunks_done as f64 / f64::from(chunks_total)
            + 0.5 * final_partitions as f64 / f64::from(partitions)
    };
    let elapsed = (finished.unwrap_or_else(Utc::now) - created).as_seconds_f64();
    let eta = (state == "running" && progress > 0.0).then(|| elapsed * (1.0 - progress) / progress);
    let seconds = |a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>| {
        a.zip(b).map(|(a, b)| (b - a).as_seconds_f64())
    };
    Ok(Some(json!({
        "id": id, "state": state, "input_topic": topic, "ranges": ranges, "lines_total": lines_total,
        "chunk_lines": chunk_lines, "combiner": combiner,
        "chunks": {"done": chunks_done, "total": chunks_total},
        "shuffle_partitions": {"final": final_partitions, "total": partitions},
        "lines": {"read": lines, "counted": lines - rejected, "rejected": rejected},
        "shuffle": {"records": records.unwrap_or(0), "bytes": bytes.unwrap_or(0)},
        "seconds": {"map": seconds(Some(created), mapped), "reduce": seconds(mapped, finished), "total": elapsed},
        "progress": progress, "eta_seconds": eta,
        "created_at": created, "finished_at": finished,
    })))
}

async fn fetch(
    _: Admin,
    State(s): State<ApiState>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let job = view(&s.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    Ok(axum::Json(job).into_response())
}

async fn list(_: Admin, State(s): State<ApiState>) -> Result<Response, ApiError> {
    let ids: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM pagecount_jobs ORDER BY id DESC LIMIT 50")
            .fetch_all(&s.pool)
            .await?;
    let mut jobs = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(job) = view(&s.pool, id).await? {
            jobs.push(job);
        }
    }
    Ok(axum::Json(json!({"jobs": jobs})).into_response())
}

async fn cancel(
    _: Admin,
    State(s): State<ApiState>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let state: Option<String> = sqlx::query_scalar(
        "UPDATE pagecount_jobs SET state = CASE WHEN state = 'running' THEN 'cancelled' ELSE state END,
                finished_at = CASE WHEN state = 'running' THEN now() ELSE finished_at END
         WHERE id = $1 RETURNING state",
    )
    .bind(id)
    .fetch_optional(&s.pool)
    .await?;
    match state.as_deref() {
        None => Err(ApiError::not_found(format!("no job {id}"))),
        Some("cancelled") => {
            // Nothing half-written is served: the partial sums go.
            sqlx::query("DELETE FROM pagecount_pages WHERE job_id = $1")
                .bind(id)
                .execute(&s.pool)
                .await?;
            Ok(axum::Json(view(&s.pool, id).await?).into_response())
        }
        Some(other) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "job_finished",
            format!("job {id} is {other}"),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    limit: Option<i64>,
    /// The last row of the previous page, as `count:page` (`next_after`).
    after: Option<String>,
}

async fn pages(
    _: Admin,
    State(s): State<ApiState>,
    Path(id): Path<i64>,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(20);
    if !(1..=1000).contains(&limit) {
        return Err(
            ApiError::bad_request("invalid_query", "limit must be 1 to 1000")
                .with("field", "limit"),
        );
    }
    let after = match q.after.as_deref() {
        None => None,
        Some(cursor) => Some(
            cursor
                .split_once(':')
                .and_then(|(c, p)| c.parse::<i64>().ok().map(|c| (c, p.to_owned())))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_query",
                        "after must be count:page, as next_after gives it",
                    )
                })?,
        ),
    };
    let state: Option<String> =
        sqlx::query_scalar("SELECT state FROM pagecount_jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&s.pool)
            .await?;
    match state.as_deref() {
        None => return Err(ApiError::not_found(format!("no job {id}"))),
        Some("succeeded") => {}
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "job_not_finished",
                format!("job {id} is {other}; pages are served once it succeeded"),
            )
            .with("state", other))
        }
    }
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT page, count FROM pagecount_pages WHERE job_id = $1
           AND ($2::bigint IS NULL OR (count, page) < ($2, $3))
         ORDER BY count DESC, page DESC LIMIT $4",
    )
    .bind(id)
    .bind(after.as_ref().map(|a| a.0))
    .bind(after.as_ref().map(|a| a.1.clone()))
    .bind(limit)
    .fetch_all(&s.pool)
    .await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|(p, c)| format!("{c}:{p}")))
        .flatten();
    let pages: Vec<Value> = rows
        .into_iter()
        .map(|(page, count)| json!({"page": page, "count": count}))
        .collect();
    Ok(axum::Json(json!({"job_id": id, "pages": pages, "next_after": next})).into_response())
}
