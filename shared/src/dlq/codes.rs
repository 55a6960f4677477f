//! The catalogue of dead-letter reason codes (the `dlq.code` header).
//!
//! A code becomes a metric label and a dashboard column, and whoever can
//! write to the DLQ topic can put any `dlq.code` on a record: taken as it
//! is, each new code would be a new series or column, kept for the life of
//! the process. So wherever a code becomes a label or an aggregation key it
//! goes through [`bounded`]: a code of this catalogue, or [`OTHER`]. The
//! raw code stays on the record (and in the gateway's `GET /dlq` listing).
//!
//! A writer that adds a code adds it here too; otherwise its dead letters
//! are counted as `other` (a test scans the sources for codes).

/// The label of every code outside the catalogue.
pub const OTHER: &str = "other";

/// Every code a writer of the suite puts on a dead letter, beside the
/// parser's ([`crate::event::ParseError::CODES`]).
pub const KNOWN: &[&str] = &[
    // Receiving a record (`shared::consume`).
    "empty_payload",
    "key_mismatch",
    // Resolving a claim check (`ClaimError::code`).
    "claim_check_missing",
    "claim_check_corrupt",
    "claim_check_mismatch",
    "claim_check_invalid",
    "claim_check_unavailable",
    // Workers' refusals (`Refused`, and the database refusing an event).
    "refused",
    "unknown_user",
    "product_exists",
    "smtp_refused",
    // Access-log lines the pagecount job cannot count (its `Reject::code`).
    "line_too_long",
    "not_utf8",
    "not_combined_log_format",
    "not_an_http_request",
    "bad_status",
    "page_too_long",
    "page_bidi_control",
];

/// `code` as a label or an aggregation key: itself if it is in the
/// catalogue, [`OTHER`] if not.
pub fn bounded(code: &str) -> &'static str {
    crate::event::ParseError::CODES
        .iter()
        .chain(KNOWN)
        .copied()
        .find(|known| *known == code)
        .unwrap_or(OTHER)
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::claim_check::ClaimError;
    use crate::ParseError;

    #[test]
    fn a_known_code_is_itself_and_anything_else_is_other() {
        assert_eq!(bounded("key_mismatch"), "key_mismatch");
        assert_eq!(bounded("page_too_long"), "page_too_long");
        assert_eq!(bounded(&"X".repeat(3_000)), OTHER);
        assert_eq!(bounded("Key_Mismatch"), OTHER);
        assert_eq!(bounded(""), OTHER);
        assert_eq!(bounded(OTHER), OTHER);
        assert!(!KNOWN.contains(&OTHER), "`other` would hide unknown codes");
    }

    #[test]
    fn the_parser_and_claim_check_codes_are_known() {
        let token = uuid::Uuid::nil();
        let claims = [
            ClaimError::NotFound(token),
            ClaimError::Corrupt {
                token,
                expected: String::new(),
                actual: String::new(),
            },
            ClaimError::Mismatch {
                token,
                what: String::new(),
            },
            ClaimError::BadPayload {
                token,
                expected: "view",
                reason: String::new(),
            },
            ClaimError::Database(sqlx::Error::PoolTimedOut),
        ];
        let codes = ParseError::CODES
            .into_iter()
            .chain(claims.iter().map(ClaimError::code));
        for code in codes {
            assert_eq!(bounded(code), code, "{code} is not in the catalogue");
        }
    }

    /// The codes written in the sources: the literal of every
    /// `Refused::new("..")` and `code: ".."`, and the `=> ".."` arms of
    /// every `fn code(`.
    fn codes_in(text: &str) -> Vec<String> {
        let mut found = Vec::new();
        for needle in ["Refused::new(", "code: "] {
            for (at, _) in text.match_indices(needle) {
                let before = text[..at].chars().next_back();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue;
                }
                found.extend(literal(text[at + needle.len()..].trim_start()));
            }
        }
        for (at, _) in text.match_indices("fn code(") {
            let body = &text[at..];
            let body = &body[..body.find("\n    }").unwrap_or(body.len())];
            for (arm, _) in body.match_indices("=> ") {
                found.extend(literal(&body[arm + 3..]));
            }
        }
        found
    }

    /// The string literal `text` starts with, if any.
    fn literal(text: &str) -> Option<String> {
        let rest = text.strip_prefix('"')?;
        Some(rest[..rest.find('"')?].to_owned())
    }

    #[test]
    fn every_code_in_the_sources_is_in_the_catalogue() {
        let files = crate::testkit::workspace_sources();
        let mut seen = 0;
        // The HTTP error's codes are no dead letter's; this file names the
        // patterns it looks for.
        let skipped = ["http/error.rs", "dlq/codes.rs"];
        for file in files
            .iter()
            .filter(|f| !skipped.iter().any(|s| f.ends_with(s)))
        {
            for code in codes_in(&std::fs::read_to_string(file).unwrap()) {
                seen += 1;
                assert!(
                    bounded(&code) == code,
                    "dead-letter code `{code}` ({}) is not in shared::dlq::codes::KNOWN",
                    file.display()
                );
            }
        }
        assert!(seen > 20, "the scan found only {seen} codes");
    }
}
