//! Turning a request body into events: one JSON object (`Content-Type:
//! application/json`) or NDJSON (anything else), every line checked by the
//! shared parser. Either all lines are valid, or the answer lists each
//! invalid line and nothing is produced.
//!
//! What goes on the topic is what the client sent: an NDJSON line that has
//! an `id` travels byte for byte; one without gets `"id":"<uuid>",` spliced in
//! after its opening brace. Only a single (possibly pretty-printed) JSON
//! document is re-serialized, into one line.

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use chrono::Utc;
use serde::Serialize;
use shared::event::{Event, Limits};
use shared::http::ApiError;
use uuid::Uuid;

use crate::publish::Incoming;

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

/// The lines of `body` with their byte ranges (memchr finds newlines with SIMD).
fn split_lines(body: &[u8]) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let mut start = 0;
    memchr::memchr_iter(b'\n', body)
        .chain(std::iter::once(body.len()))
        .map(move |end| {
            let line = start.min(end)..end;
            start = end + 1;
            line
        })
}

/// Parses the body into events, each with an id and its wire bytes.
pub fn parse_events(
    body: &Bytes,
    single: bool,
    max_events: usize,
) -> Result<Vec<Incoming>, ApiError> {
    let lines: Vec<(usize, std::ops::Range<usize>)> = if single {
        vec![(1, 0..body.len())]
    } else {
        split_lines(body)
            .enumerate()
            .map(|(i, mut range)| {
                if body[..range.end].ends_with(b"\r") && range.end > range.start {
                    range.end -= 1;
                }
                (i + 1, range)
            })
            .filter(|(_, range)| !body[range.clone()].iter().all(u8::is_ascii_whitespace))
            .collect()
    };
    if lines.is_empty() {
        return Err(ApiError::bad_request(
            "empty_body",
            "the body holds no event",
        ));
    }
    let total = lines.len();
    if total > max_events {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_events",
            format!("{total} events in one request; at most {max_events} (gateway.max_events_per_request)"),
        )
        .with("limit", max_events));
    }
    let mut events = Vec::with_capacity(total);
    let mut errors = Vec::new();
    let mut invalid = 0usize;
    // Arrival is now: event times are held to it as on the stream.
    let arrival = Utc::now();
    // One UTF-8 check for the whole body spares the parser one per string.
    let text = std::str::from_utf8(body).ok();
    for (line, range) in lines {
        let parsed = match text {
            Some(text) => Event::parse_str(&text[range.clone()]),
            None => Event::parse(&body[range.clone()]),
        };
        let parsed = parsed
            .and_then(|event| match event.ts {
                Some(ts) => Limits::get().time(ts, arrival).map(|()| event),
                None => Ok(event),
            })
            .map_err(|e| (e.code(), e.to_string()));
        match parsed {
            Ok(event) if invalid == 0 => events.push(wire(event, body.slice(range), single)),
            Ok(_) => {}
            Err((code, error)) => {
                metrics::counter!("kappa_gateway_events_rejected_total", "reason" => code)
                    .increment(1);
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

/// Gives the event an id if it has none, and decides its bytes on the wire.
fn wire(mut event: Event, line: Bytes, single: bool) -> Incoming {
    if event.id.is_some() && !single {
        return Incoming::new(event, line);
    }
    let id = *event.id.get_or_insert_with(Uuid::now_v7);
    // Splicing is safe only if the line holds no `id` key (an explicit
    // `"id":null` would then appear twice). Without a backslash, such a key
    // can only be spelt `"id"`; a line with escapes (`"\u0069d"`) or that
    // spelling is re-serialized instead.
    let splice_at = line.iter().position(|&b| b == b'{');
    let plain =
        memchr::memchr(b'\\', &line).is_none() && memchr::memmem::find(&line, b"\"id\"").is_none();
    let wire = match splice_at {
        Some(brace) if !single && plain => {
            let mut out = Vec::with_capacity(line.len() + 48);
            out.extend_from_slice(&line[..=brace]);
            out.extend_from_slice(b"\"id\":\"");
            out.extend_from_slice(
                id.hyphenated()
                    .encode_lower(&mut Uuid::encode_buffer())
                    .as_bytes(),
            );
            out.extend_from_slice(b"\",");
            out.extend_from_slice(&line[brace + 1..]);
            Bytes::from(out)
        }
        _ => Bytes::from(event.to_json()),
    };
    Incoming::new(event, wire)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &'static [u8], single: bool) -> Result<Vec<Incoming>, ApiError> {
        parse_events(&Bytes::from_static(body), single, 100)
    }

    /// (line, code) of every listed error.
    fn listed(error: &ApiError) -> Vec<(u64, String)> {
        error
            .detail("errors")
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["line"].as_u64().unwrap(),
                    e["code"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn ndjson_lines_are_numbered_and_blank_lines_skipped() {
        // CRLF endings and blank lines (also "\r\n" alone) still count as lines.
        let body = b"{\"type\":\"page_access\",\"page\":\"/a\"}\r\n\n{\"type\":\"nope\"}\r\n\r\n\n{\"type\":\"page_access\"}\n";
        let error = parse(body, false).unwrap_err();
        assert_eq!(error.code(), "invalid_events");
        assert_eq!(
            listed(&error),
            vec![
                (3, "unknown_type".to_owned()),
                (6, "missing_field".to_owned())
            ]
        );
        assert_eq!(error.detail("invalid"), Some(&serde_json::json!(2)));
        let ok = parse(b"{\"type\":\"page_access\",\"page\":\"/a\"}\r\n\n", false).unwrap();
        assert_eq!(ok.len(), 1);
        assert!(!ok[0].id.is_nil());
        assert!(!ok[0].wire.ends_with(b"\r"), "CR is not part of the event");
    }

    #[test]
    fn wire_bytes_are_the_line_with_an_id() {
        let with_id =
            br#"{"id":"0193a5c2-7f1e-7000-8000-000000000001", "type":"page_access","page":"/a"}"#;
        let got = parse(with_id, false).unwrap().remove(0);
        assert_eq!(&got.wire[..], &with_id[..], "sent byte for byte");

        let without = parse(b" {\"type\":\"page_access\",\"page\":\"/a\"}", false)
            .unwrap()
            .remove(0);
        let reparsed = Event::parse(&without.wire).unwrap();
        assert_eq!(
            reparsed.id,
            Some(without.id),
            "the spliced id is the event's id"
        );
        assert_eq!(reparsed.key(), without.key);

        let null_id = parse(
            b"{\"type\":\"page_access\",\"page\":\"/a\",\"id\":null}",
            false,
        )
        .unwrap()
        .remove(0);
        assert_eq!(Event::parse(&null_id.wire).unwrap().id, Some(null_id.id));
    }

    #[test]
    fn an_escaped_id_key_is_not_mistaken_for_absent() {
        // `\u0069d` is `id`: splicing another one in would make two.
        let escaped = parse(
            br#"{"type":"page_access","page":"/a","\u0069d":null}"#,
            false,
        )
        .unwrap()
        .remove(0);
        let on_the_wire = Event::parse(&escaped.wire).unwrap();
        assert_eq!(
            on_the_wire.id,
            Some(escaped.id),
            "consumers see the acknowledged id"
        );
        assert!(on_the_wire.id.is_some());
    }

    #[test]
    fn more_events_than_a_request_may_hold_are_413() {
        let body = "{\"type\":\"page_access\",\"page\":\"/a\"}\n".repeat(101);
        let error = parse_events(&Bytes::from(body.clone()), false, 100).unwrap_err();
        assert_eq!(error.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(error.code(), "too_many_events");
        assert_eq!(
            parse_events(&Bytes::from(body), false, 101).unwrap().len(),
            101
        );
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let error = parse(
            br#"{"type":"page_access","type":"interaction","user_id":"u","product_id":"p","action":"view"}"#,
            false,
        )
        .unwrap_err();
        assert_eq!(listed(&error), vec![(1, "duplicate_field".to_owned())]);
    }

    #[test]
    fn single_json_may_span_lines_and_is_compacted() {
        let body = b"{\n  \"type\": \"page_access\",\n  \"page\": \"/a\"\n}";
        let single = parse(body, true).unwrap().remove(0);
        assert!(!single.wire.contains(&b'\n'));
        assert!(parse(body, false).is_err());
        assert_eq!(parse(b"  \n", false).unwrap_err().code(), "empty_body");
    }

    #[test]
    fn times_more_than_an_hour_ahead_are_rejected() {
        use chrono::TimeDelta;
        let at = |ahead: TimeDelta| {
            let ts = (Utc::now() + ahead).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            Bytes::from(format!(
                "{{\"type\":\"page_access\",\"page\":\"/a\",\"ts\":\"{ts}\"}}"
            ))
        };
        let skew = TimeDelta::seconds(Limits::get().max_future_secs);
        let just_inside = at(skew - TimeDelta::seconds(5));
        assert!(parse_events(&just_inside, true, 100).is_ok());
        let just_outside = at(skew + TimeDelta::seconds(5));
        let error = parse_events(&just_outside, true, 100).unwrap_err();
        assert_eq!(listed(&error), vec![(1, "ts_in_future".to_owned())]);
        let far = parse(
            b"{\"type\":\"page_access\",\"page\":\"/a\",\"ts\":\"2999-01-01T00:00:00Z\"}",
            true,
        );
        assert_eq!(
            listed(&far.unwrap_err()),
            vec![(1, "ts_in_future".to_owned())]
        );
    }
}
