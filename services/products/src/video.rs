//! The video branch: the container is parsed for real (MP4 with the `mp4`
//! crate, WebM/Matroska with `matroska`), and its duration, resolution and
//! codec read from the video track. A truncated file, a fake one, one
//! without a video track or without a duration is refused with the parser's
//! reason. Parsers of hostile input can panic: that is a refusal too.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

use serde::Serialize;

/// What the branch reports for a video.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Probed {
    /// mp4 or webm (matroska).
    pub container: &'static str,
    pub duration_ms: u64,
    pub width: u64,
    pub height: u64,
    /// The codec as the container names it (`avc1`, `V_VP8`, ...).
    pub codec: String,
}

/// Parses `bytes` as a video container.
pub fn probe(bytes: &[u8]) -> Result<Probed, String> {
    let container = if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
        "mp4"
    } else if bytes.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        "webm"
    } else {
        return Err("not an MP4 or WebM container".into());
    };
    let parsed = catch_unwind(AssertUnwindSafe(|| match container {
        "mp4" => mp4_facts(bytes),
        _ => matroska_facts(bytes),
    }))
    .unwrap_or_else(|_| Err("the container parser gave up on this file".into()))?;
    let (duration_ms, width, height, codec) = parsed;
    if duration_ms == 0 {
        return Err(format!("the {container} file has no duration"));
    }
    if width == 0 || height == 0 {
        return Err(format!(
            "the {container} file's video track has no resolution"
        ));
    }
    Ok(Probed {
        container,
        duration_ms,
        width,
        height,
        codec,
    })
}

type Facts = (u64, u64, u64, String);

fn mp4_facts(bytes: &[u8]) -> Result<Facts, String> {
    let reader = mp4::Mp4Reader::read_header(Cursor::new(bytes), bytes.len() as u64)
        .map_err(|e| format!("not a valid MP4: {e}"))?;
    let track = reader
        .tracks()
        .values()
        .find(|t| matches!(t.track_type(), Ok(mp4::TrackType::Video)))
        .ok_or("the MP4 has no video track")?;
    let codec = track
        .box_type()
        .map(|fourcc| fourcc.to_string())
        .unwrap_or_else(|_| "unknown".into());
    // A cut-off upload keeps its header but loses its media data.
    let media = media_end(track).ok_or("the MP4's sample table is inconsistent")?;
    if media > bytes.len() as u64 {
        return Err(format!(
            "the MP4 is truncated: its samples reach byte {media}, the file has {}",
            bytes.len()
        ));
    }
    Ok((
        reader.duration().as_millis() as u64,
        u64::from(track.width()),
        u64::from(track.height()),
        codec,
    ))
}

/// The byte after the track's last sample (from its chunk offsets and sizes).
fn media_end(track: &mp4::Mp4Track) -> Option<u64> {
    let stbl = &track.trak.mdia.minf.stbl;
    let sizes = &stbl.stsz;
    let last_chunk = match (&stbl.stco, &stbl.co64) {
        (Some(stco), _) => stco.entries.iter().map(|o| u64::from(*o)).max(),
        (None, Some(co64)) => co64.entries.iter().copied().max(),
        _ => None,
    }?;
    let largest = if sizes.sample_size > 0 {
        u64::from(sizes.sample_size)
    } else {
        sizes.sample_sizes.iter().copied().max().map(u64::from)?
    };
    Some(last_chunk + largest)
}

fn matroska_facts(bytes: &[u8]) -> Result<Facts, String> {
    // The parser reads the headers only: a cut-off file is caught by the
    // Segment's declared size (unless it is "unknown", as in live streams).
    if let Some(end) = segment_end(bytes) {
        if end > bytes.len() as u64 {
            return Err(format!(
                "the WebM is truncated: its segment ends at byte {end}, the file has {}",
                bytes.len()
            ));
        }
    }
    let file = matroska::Matroska::open(Cursor::new(bytes))
        .map_err(|e| format!("not a valid WebM: {e}"))?;
    let track = file
        .video_tracks()
        .next()
        .ok_or("the WebM has no video track")?;
    let (width, height) = match &track.settings {
        matroska::Settings::Video(v) => (v.pixel_width, v.pixel_height),
        _ => (0, 0),
    };
    let duration = file.info.duration.map_or(0, |d| d.as_millis() as u64);
    Ok((duration, width, height, track.codec_id.clone()))
}

/// Where the first top-level Segment ends, if its size is known.
fn segment_end(bytes: &[u8]) -> Option<u64> {
    let mut at = 0usize;
    while at < bytes.len() {
        let (id, id_len) = vint(&bytes[at..], false)?;
        let (size, size_len) = vint(&bytes[at + id_len..], true)?;
        let body = (at + id_len + size_len) as u64;
        if id == 0x1853_8067 {
            // All ones: size unknown.
            return (size != u64::MAX).then_some(body + size);
        }
        at = usize::try_from(body + size).ok()?;
    }
    None
}

/// An EBML variable-length integer: (value, length). Ids keep their marker
/// bit; sizes drop it, and an all-ones size is `u64::MAX` (unknown).
fn vint(bytes: &[u8], size: bool) -> Option<(u64, usize)> {
    let first = *bytes.first()?;
    let len = first.leading_zeros() as usize + 1;
    if len > 8 || bytes.len() < len {
        return None;
    }
    let mut value = u64::from(if size {
        first & (0xFFu16 >> len) as u8
    } else {
        first
    });
    for b in &bytes[1..len] {
        value = (value << 8) | u64::from(*b);
    }
    let all_ones = (1u64 << (7 * len)) - 1;
    Some((
        if size && value == all_ones {
            u64::MAX
        } else {
            value
        },
        len,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MP4: &[u8] = include_bytes!("../tests/fixtures/clip.mp4");
    const WEBM: &[u8] = include_bytes!("../tests/fixtures/clip.webm");

    #[test]
    fn real_mp4_and_webm_files_are_probed() {
        let mp4 = probe(MP4).unwrap();
        assert_eq!((mp4.container, mp4.width, mp4.height), ("mp4", 160, 120));
        assert_eq!(mp4.duration_ms, 1000);
        assert_eq!(mp4.codec, "avc1");
        let webm = probe(WEBM).unwrap();
        assert_eq!(
            (webm.container, webm.width, webm.height),
            ("webm", 160, 120)
        );
        assert!((900..=1100).contains(&webm.duration_ms), "{webm:?}");
        assert_eq!(webm.codec, "V_VP8");
    }

    #[test]
    fn truncated_and_fake_files_are_refused() {
        for cut in [MP4.len() / 2, 40, 12] {
            let err = probe(&MP4[..cut]).unwrap_err();
            assert!(!err.is_empty(), "{cut}");
        }
        assert!(probe(&WEBM[..WEBM.len() / 3]).is_err());
        let mut fake = vec![0, 0, 0, 24];
        fake.extend_from_slice(b"ftypisom");
        fake.extend_from_slice(&[0; 64]);
        assert!(probe(&fake).is_err());
        assert_eq!(probe(b"hello").unwrap_err(), "not an MP4 or WebM container");
    }
}
