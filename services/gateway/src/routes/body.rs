//! Turning a request body into events: one JSON object (`Content-Type:
//! application/json`) or NDJSON (anything else), every line checked by the
//! shared parser. Either all lines are valid, or the answer lists each
//! invalid line and nothing is produced.

use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderMap;
use chrono::{TimeDelta, Utc};
use serde::Serialize;
use shared::event::Event;
use shared::http::ApiError;
use uuid::Uuid;

/// How far in the future an event time may be: Kafka's default
/// `message.timestamp.after.max.ms` (1 hour). The event time becomes the
/// message timestamp, and the broker would reject anything later.
const MAX_FUTURE_SKEW: TimeDelta = TimeDelta::hours(1);

/// At most this many line errors are listed in one answer.
const MAX_LISTED_ERRORS: usize = 100;

/// One invalid line of a request body.
#[derive(Debug, Serialize)]
pub struct LineError {
    /// 1-based line number in the body.
    pub line: usize,
    pub code: &'static str,
    pub error: String,
}

/// Whether the body is a single JSON document.
pub fn is_single_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// Parses the body into events, each given a fresh id unless it carried one.
pub fn parse_events(body: &[u8], single: bool) -> Result<Vec<Event>, ApiError> {
    let lines: Vec<(usize, &[u8])> = if single {
        vec![(1, body)]
    } else {
        body.split(|&b| b == b'\n')
            .enumerate()
            .map(|(i, line)| (i + 1, line.strip_suffix(b"\r").unwrap_or(line)))
            .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
            .collect()
    };
    if lines.is_empty() || body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "empty_body",
            "the body holds no event",
        ));
    }
    let total = lines.len();
    let mut events = Vec::with_capacity(total);
    let mut errors = Vec::new();
    let mut invalid = 0usize;
    let latest = Utc::now() + MAX_FUTURE_SKEW;
    for (line, bytes) in lines {
        let parsed = Event::parse(bytes)
            .map_err(|e| (e.code(), e.to_string()))
            .and_then(|event| match event.ts {
                Some(ts) if ts > latest => Err((
                    "ts_in_future",
                    format!("field `ts`: {ts} is more than 1 hour in the future"),
                )),
                _ => Ok(event),
            });
        match parsed {
            Ok(mut event) => {
                event.id.get_or_insert_with(Uuid::now_v7);
                events.push(event);
            }
            Err((code, error)) => {
                invalid += 1;
                if errors.len() < MAX_LISTED_ERRORS {
                    errors.push(LineError { line, code, error });
                }
            }
        }
    }
    if invalid > 0 {
        return Err(ApiError::bad_request(
            "invalid_events",
            format!("{invalid} of {total} event(s) are invalid; nothing was produced"),
        )
        .with("invalid", invalid)
        .with("errors", errors));
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_lines_are_numbered_and_blank_lines_skipped() {
        let body = b"{\"type\":\"page_access\",\"page\":\"/a\"}\r\n\n{\"type\":\"nope\"}\n";
        let err = parse_events(body, false).unwrap_err();
        assert_eq!(err.code(), "invalid_events");
        let ok = parse_events(b"{\"type\":\"page_access\",\"page\":\"/a\"}\n\n", false).unwrap();
        assert_eq!(ok.len(), 1);
        assert!(ok[0].id.is_some());
    }

    #[test]
    fn single_json_may_span_lines() {
        let body = b"{\n  \"type\": \"page_access\",\n  \"page\": \"/a\"\n}";
        assert_eq!(parse_events(body, true).unwrap().len(), 1);
        assert!(parse_events(body, false).is_err());
        assert_eq!(
            parse_events(b"  \n", false).unwrap_err().code(),
            "empty_body"
        );
    }

    #[test]
    fn far_future_times_are_rejected() {
        let body = b"{\"type\":\"page_access\",\"page\":\"/a\",\"ts\":\"2999-01-01T00:00:00Z\"}";
        assert_eq!(
            parse_events(body, true).unwrap_err().code(),
            "invalid_events"
        );
    }
}
