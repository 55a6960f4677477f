//! Combined Log Format, as web servers really write it:
//! `host ident user [time] "request" status bytes "referer" "agent"`.
//! The page is the request's path without its query string (an absolute
//! URL in the request is reduced to its path). Every line is a page or a
//! reason: IPv6 clients and `-` sizes are fine; a request that is not
//! `METHOD PATH PROTOCOL` (a TLS handshake sent to port 80, an empty `"-"`),
//! a line without its bracketed time or quoted fields, a status that is not
//! three digits, bytes that are not UTF-8, a page that is too long to be a
//! key, or a page holding a bidirectional control (shown, it would read as
//! another page) are rejected with a stable code.

/// The longest page kept (the stream's bound on ids).
pub const MAX_PAGE_BYTES: usize = 256;
/// Longer lines are not log lines.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Why a line is not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    TooLong,
    NotUtf8,
    Malformed,
    NotHttp,
    BadStatus,
    PageTooLong,
    PageBidiControl,
}

impl Reject {
    pub fn code(self) -> &'static str {
        match self {
            Reject::TooLong => "line_too_long",
            Reject::NotUtf8 => "not_utf8",
            Reject::Malformed => "not_combined_log_format",
            Reject::NotHttp => "not_an_http_request",
            Reject::BadStatus => "bad_status",
            Reject::PageTooLong => "page_too_long",
            Reject::PageBidiControl => "page_bidi_control",
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Reject::TooLong => "longer than 16 KiB",
            Reject::NotUtf8 => "not UTF-8",
            Reject::Malformed => {
                "not Combined Log Format: host ident user [time] \"request\" status bytes"
            }
            Reject::NotHttp => {
                "the request is not METHOD PATH HTTP/x (e.g. a TLS handshake, or \"-\")"
            }
            Reject::BadStatus => "the status is not three digits",
            Reject::PageTooLong => "the page is longer than 256 bytes",
            Reject::PageBidiControl => {
                "the page contains a bidirectional control character (U+202A to U+202E, U+2066 to U+2069, U+200E, U+200F, U+061C)"
            }
        }
    }
}

/// The page a line requested.
pub fn page(line: &[u8]) -> Result<&str, Reject> {
    if line.len() > MAX_LINE_BYTES {
        return Err(Reject::TooLong);
    }
    let line = std::str::from_utf8(line).map_err(|_| Reject::NotUtf8)?;
    let line = line.trim_end_matches(['\r', '\n']);
    // host ident user [time] "
    let open = line.find(" [").ok_or(Reject::Malformed)?;
    if line[..open].split(' ').count() != 3 {
        return Err(Reject::Malformed);
    }
    let close = open + line[open..].find("] \"").ok_or(Reject::Malformed)?;
    let rest = &line[close + 3..];
    let end = closing_quote(rest).ok_or(Reject::Malformed)?;
    let request = &rest[..end];
    let mut after = rest[end + 1..].trim_start().split(' ');
    let status = after.next().unwrap_or_default();
    if status.len() != 3 || !status.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Reject::BadStatus);
    }
    // The size: digits, or `-` when nothing was sent.
    match after.next() {
        Some("-") => {}
        Some(bytes) if !bytes.is_empty() && bytes.bytes().all(|b| b.is_ascii_digit()) => {}
        _ => return Err(Reject::Malformed),
    }
    let mut parts = request.split(' ');
    let (method, target, protocol) = (parts.next(), parts.next(), parts.next());
    let (Some(method), Some(target), Some(protocol), None) =
        (method, target, protocol, parts.next())
    else {
        return Err(Reject::NotHttp);
    };
    if method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !protocol.starts_with("HTTP/")
    {
        return Err(Reject::NotHttp);
    }
    // An absolute URL (proxies log them): keep its path.
    let target = match target.split_once("://") {
        Some((_, after_scheme)) => after_scheme.find('/').map_or("/", |i| &after_scheme[i..]),
        None => target,
    };
    if !target.starts_with('/') {
        return Err(Reject::NotHttp);
    }
    let page = target.split(['?', '#']).next().unwrap_or(target);
    if page.len() > MAX_PAGE_BYTES || page.chars().any(char::is_control) {
        return Err(Reject::PageTooLong);
    }
    if shared::text::bidi_control(page).is_some() {
        return Err(Reject::PageBidiControl);
    }
    Ok(page)
}

/// The index of the first `"` not escaped with a backslash.
fn closing_quote(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_lines_and_their_oddities() {
        let ok = [
            (
                r#"192.0.2.1 - u7 [26/Nov/2026:10:00:00 +0000] "GET /products/p1?ref=mail HTTP/1.1" 200 5120 "-" "curl/8""#,
                "/products/p1",
            ),
            (
                r#"2001:db8::1 - - [26/Nov/2026:10:00:00 +0000] "POST /cart HTTP/2.0" 302 - "https://e.example/" "Mozilla/5.0 (X11) \"quoted\" agent""#,
                "/cart",
            ),
            (
                r#"192.0.2.9 - - [26/Nov/2026:10:00:00 +0000] "GET http://shop.example/a/b?x HTTP/1.0" 404 0 "-" "-""#,
                "/a/b",
            ),
            (
                r#"192.0.2.9 - - [26/Nov/2026:10:00:00 +0000] "HEAD / HTTP/1.1" 200 - "-" "-""#,
                "/",
            ),
        ];
        for (line, want) in ok {
            assert_eq!(page(line.as_bytes()), Ok(want), "{line}");
        }
        let bad = [
            (r#"192.0.2.1 - - [26/Nov/2026:10:00:00 +0000] "-" 400 0 "-" "-""#, Reject::NotHttp),
            ("192.0.2.1 - - [26/Nov/2026:10:00:00 +0000] \"\\x16\\x03\\x01\\x02\\x00\\x01\\x00\" 400 157 \"-\" \"-\"", Reject::NotHttp),
            (r#"192.0.2.1 - - [26/Nov/2026:10:00:00 +0000] "GET /x HTTP/1.1" 2000 1 "-" "-""#, Reject::BadStatus),
            ("just some words", Reject::Malformed),
            (r#"192.0.2.1 - - [26/Nov/2026:10:00:00 +0000] "GET /x HTTP/1.1"#, Reject::Malformed),
            (r#"192.0.2.1 - - [26/Nov/2026:10:00:00 +0000] "GET /x HTTP/1.1" 200"#, Reject::Malformed),
        ];
        for (line, want) in bad {
            assert_eq!(page(line.as_bytes()), Err(want), "{line}");
        }
        assert_eq!(page(b"\xff\xfe"), Err(Reject::NotUtf8));
        let long = format!(
            r#"192.0.2.1 - - [26/Nov/2026:10:00:00 +0000] "GET /{} HTTP/1.1" 200 1 "-" "-""#,
            "a".repeat(300)
        );
        assert_eq!(page(long.as_bytes()), Err(Reject::PageTooLong));
        assert_eq!(page(&vec![b'a'; MAX_LINE_BYTES + 1]), Err(Reject::TooLong));
        // `/admin\u{202E}gnp.x` would be shown as `/adminx.png`.
        for control in ['\u{202E}', '\u{2066}', '\u{200F}', '\u{061C}'] {
            let line = format!(
                r#"192.0.2.1 - - [26/Nov/2026:10:00:00 +0000] "GET /admin{control}gnp.x?q HTTP/1.1" 200 1 "-" "-""#
            );
            assert_eq!(
                page(line.as_bytes()),
                Err(Reject::PageBidiControl),
                "{line}"
            );
        }
        // Only the page is checked: a query string or an agent is not counted.
        let elsewhere = "192.0.2.1 - - [26/Nov/2026:10:00:00 +0000] \"GET /a?\u{202E} HTTP/1.1\" 200 1 \"-\" \"\u{202E}\"";
        assert_eq!(page(elsewhere.as_bytes()), Ok("/a"));
    }
}
