//! Axum's extractors with this crate's JSON errors as rejections, so a bad
//! path segment, query or body gets the same error shape (and status) as
//! everything else: `Path`, `Query` and `Json` here, used as in axum. And
//! [`TimeRange`]: the range of the stream a body asks to read, parsed with
//! the same rules and errors by every service that takes one; and [`Limit`],
//! the page size every listing checks the same way.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

use super::ApiError;

/// A path parameter; a segment that does not decode or parse is 400.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(value) =
            axum::extract::Path::from_request_parts(parts, state).await?;
        Ok(Path(value))
    }
}

/// Query parameters; ones that do not parse, or are unknown, are 400.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(value) =
            axum::extract::Query::from_request_parts(parts, state).await?;
        Ok(Query(value))
    }
}

/// A JSON body; bad JSON, a wrong type or an unknown field is 400.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(value) = axum::Json::from_request(request, state).await?;
        Ok(Json(value))
    }
}

/// The range of the input topic a request asks to read (a replay, a
/// pagecount job): `from` is `"earliest"` or an RFC 3339 time, `to` an RFC
/// 3339 time or absent (the end as it is now).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    /// None: the earliest offsets.
    pub from: Option<DateTime<Utc>>,
    /// None: the end offsets at the start.
    pub to: Option<DateTime<Utc>>,
}

impl TimeRange {
    /// Parses a request's `from` and `to`. Kafka timestamps start at the Unix
    /// epoch, and the broker's offsets-for-times lookup reads negative ones
    /// as sentinels (-1 latest, -2 earliest), so a time before 1970 is
    /// refused rather than read as something else (or silently as the whole
    /// topic); a `to` not after `from` is an empty range, refused rather
    /// than run as a job that counts nothing. Each is 400 `invalid_range`
    /// naming the field.
    pub fn parse(from: &str, to: Option<&str>) -> Result<TimeRange, ApiError> {
        let from = match from {
            "earliest" => None,
            time => Some(range_time("from", time)?),
        };
        let to = to.map(|t| range_time("to", t)).transpose()?;
        if let (Some(from), Some(to)) = (from, to) {
            if to <= from {
                return Err(ApiError::bad_request(
                    "invalid_range",
                    format!("`to` ({to}) must be after `from` ({from})"),
                )
                .with("field", "to"));
            }
        }
        Ok(TimeRange { from, to })
    }
}

/// One bound of a [`TimeRange`]: RFC 3339, not before 1970.
fn range_time(field: &'static str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    let invalid = |problem: String| {
        ApiError::bad_request("invalid_range", format!("`{field}` {problem}")).with("field", field)
    };
    let time = DateTime::parse_from_rfc3339(text)
        .map_err(|e| {
            let earliest = if field == "from" {
                "\"earliest\" or "
            } else {
                ""
            };
            invalid(format!("must be {earliest}an RFC 3339 time: {e}"))
        })?
        .with_timezone(&Utc);
    if time < DateTime::UNIX_EPOCH {
        return Err(invalid(format!(
            "({time}) is before 1970-01-01T00:00:00Z, where event times on the stream begin"
        )));
    }
    Ok(time)
}

/// The page size a listing accepts (`limit`): from 1 to `max`, `default`
/// when none is given. Every listing checks its `limit` with one of these,
/// so a limit out of range is the same 400 everywhere (`invalid_limit`,
/// naming the field and the maximum), never clamped in silence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub default: usize,
    pub max: usize,
}

/// A `limit` outside its range, or not a number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limit must be a whole number from 1 to {max}, got `{given}`")]
pub struct LimitError {
    pub given: String,
    pub max: usize,
}

impl Limit {
    pub const fn new(default: usize, max: usize) -> Self {
        Limit { default, max }
    }

    /// The page size `given` asks for.
    pub fn check(self, given: Option<i64>) -> Result<usize, LimitError> {
        match given {
            None => Ok(self.default),
            Some(n) => usize::try_from(n)
                .ok()
                .filter(|n| (1..=self.max).contains(n))
                .ok_or(LimitError {
                    given: n.to_string(),
                    max: self.max,
                }),
        }
    }

    /// The page size `given` asks for, as the query's text.
    pub fn parse(self, given: Option<&str>) -> Result<usize, LimitError> {
        match given {
            None => Ok(self.default),
            Some(text) => match text.trim().parse::<i64>() {
                Ok(n) => self.check(Some(n)),
                Err(_) => Err(LimitError {
                    given: text.to_owned(),
                    max: self.max,
                }),
            },
        }
    }
}

impl From<LimitError> for ApiError {
    fn from(error: LimitError) -> Self {
        ApiError::bad_request("invalid_limit", error.to_string())
            .with("field", "limit")
            .with("max", error.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_starts_in_1970_and_ends_after_it_starts() {
        let refused = [
            ("0001-01-01T00:00:00Z", None, "from"),
            ("1969-12-31T23:59:59Z", None, "from"),
            ("earliest", Some("1900-01-01T00:00:00Z"), "to"),
            ("yesterday", None, "from"),
            ("earliest", Some("2026-11-26"), "to"),
            ("2026-11-27T00:00:00Z", Some("2026-11-26T00:00:00Z"), "to"),
            ("2026-11-26T00:00:00Z", Some("2026-11-26T00:00:00Z"), "to"),
        ];
        for (from, to, field) in refused {
            let error = TimeRange::parse(from, to).unwrap_err();
            assert_eq!(error.status(), 400, "{from} {to:?}");
            assert_eq!(error.code(), "invalid_range", "{from} {to:?}");
            assert_eq!(
                error.detail("field"),
                Some(&serde_json::json!(field)),
                "{from} {to:?}"
            );
        }
        let whole = TimeRange::parse("earliest", None).unwrap();
        assert_eq!((whole.from, whole.to), (None, None));
        let day =
            TimeRange::parse("2026-11-26T00:00:00+01:00", Some("2026-11-27T00:00:00Z")).unwrap();
        assert_eq!(
            day.from.map(|t| t.to_rfc3339()).as_deref(),
            Some("2026-11-25T23:00:00+00:00")
        );
        assert!(TimeRange::parse("1970-01-01T00:00:00Z", Some("1970-01-01T00:00:01Z")).is_ok());
    }

    #[test]
    fn a_limit_is_its_default_or_within_one_to_its_maximum() {
        let page = Limit::new(50, 1000);
        assert_eq!(page.check(None), Ok(50));
        assert_eq!(page.check(Some(1)), Ok(1));
        assert_eq!(page.check(Some(1000)), Ok(1000));
        for bad in [0, -3, 1001] {
            let error = page.check(Some(bad)).unwrap_err();
            assert_eq!(error.max, 1000);
            let answer = ApiError::from(error);
            assert_eq!(answer.code(), "invalid_limit");
            assert_eq!(answer.detail("field"), Some(&serde_json::json!("limit")));
        }
        assert_eq!(page.parse(Some(" 7 ")), Ok(7));
        assert_eq!(page.parse(Some("ten")).unwrap_err().given, "ten");
    }
}
