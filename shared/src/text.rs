//! Characters that no id or page name may hold, whatever its other limits.
//!
//! Bidirectional controls reorder what follows them when the text is shown:
//! an id `u1\u{202E}gnp.exe` is displayed as `u1exe.png`, so a name in a log,
//! a dashboard or an admin listing would read as something it is not. They
//! are Unicode format characters (category Cf), not control characters (Cc),
//! so `char::is_control` lets them through: they are named here.

/// The bidirectional controls: the embeddings and overrides (U+202A to
/// U+202E), the isolates (U+2066 to U+2069), the marks (U+200E, U+200F) and
/// the Arabic letter mark (U+061C).
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
    )
}

/// The first bidirectional control in `text`, if any.
pub fn bidi_control(text: &str) -> Option<char> {
    text.chars().find(|&c| is_bidi_control(c))
}

#[cfg(test)]
mod tests {
    use super::bidi_control;

    #[test]
    fn every_bidi_control_is_found_and_nothing_else() {
        let controls = ('\u{202A}'..='\u{202E}')
            .chain('\u{2066}'..='\u{2069}')
            .chain(['\u{200E}', '\u{200F}', '\u{061C}']);
        for c in controls {
            let id = format!("u1{c}gnp.exe");
            assert_eq!(bidi_control(&id), Some(c), "U+{:04X}", c as u32);
        }
        // Right-to-left text itself, and the joiners next to the controls, are fine.
        for text in [
            "u1",
            "/שלום",
            "/مرحبا",
            "a\u{200D}b",
            "a\u{2060}b",
            "a\u{2029}b",
        ] {
            assert_eq!(bidi_control(text), None, "{text}");
        }
    }
}
