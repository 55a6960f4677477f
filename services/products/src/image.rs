//! The image branch: decode PNG, JPEG or WebP, refuse decompression bombs
//! before allocating them, and make a thumbnail that fits a square of
//! `thumbnail_px`, encoded as JPEG. CPU-bound: callers run it off the async
//! runtime.
//!
//! A bomb is refused from the header alone, on two counts: its pixels
//! against `max_pixels`, and the bytes its decoded buffer would take against
//! a byte budget. Bytes per pixel depend on the colour type and bit depth
//! (a 16-bit RGBA PNG takes 8, twice what RGBA8 takes), so pixels alone let
//! a 6300x6300 16-bit PNG of 300 KB decode to 317 MB. The budget is
//! `max_pixels` RGBA8 pixels, one configured number
//! (`products.max_image_pixels`) for both counts, and the decoder's own
//! allocation limit is that same budget.
//!
//! A refusal's reason goes to the `asset_failed` event and the product's
//! status, read by sellers: it is fixed wording. What the decoder said is
//! [`ImageError::detail`], for the service log only.

use std::io::Cursor;

use image::{ImageDecoder, ImageFormat, ImageReader, Limits};
use serde::{Deserialize, Serialize};

/// Bytes per pixel of the budget: RGBA8, what `max_pixels` is sized for.
const BUDGET_BYTES_PER_PIXEL: u64 = 4;

/// What the branch needs to know.
#[derive(Debug, Clone, Copy)]
pub struct ImageRules {
    /// Width times height above this is refused (a decompression bomb); it
    /// also sets the decoded byte budget ([`ImageRules::max_decoded_bytes`]).
    pub max_pixels: u64,
    /// The thumbnail fits a square of this many pixels.
    pub thumbnail_px: u32,
}

impl ImageRules {
    /// The most bytes a decoded image may take: `max_pixels` RGBA8 pixels.
    pub fn max_decoded_bytes(&self) -> u64 {
        self.max_pixels.saturating_mul(BUDGET_BYTES_PER_PIXEL)
    }
}

/// A decoded image's facts and its thumbnail.
#[derive(Debug, Clone, Serialize)]
pub struct Processed {
    pub width: u32,
    pub height: u32,
    /// png, jpeg or webp: what the bytes are, whatever the upload claimed.
    pub format: &'static str,
    #[serde(skip)]
    pub thumbnail: Vec<u8>,
    #[serde(skip)]
    pub thumbnail_width: u32,
    #[serde(skip)]
    pub thumbnail_height: u32,
}

/// A processed image part's result, as its `asset_processed` event and its
/// part row carry it: the image's facts and where its thumbnail is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageResult {
    pub width: u32,
    pub height: u32,
    /// png, jpeg or webp.
    pub format: String,
    pub thumbnail: Thumbnail,
}

/// A thumbnail in the claim-check store (content addressed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thumbnail {
    pub token: uuid::Uuid,
    pub sha256: String,
    pub size: u64,
    pub content_type: String,
    pub width: u32,
    pub height: u32,
}

/// Why the image was refused (its `Display` is the `asset_failed` reason).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    #[error("not a PNG, JPEG or WebP image")]
    UnknownFormat,
    #[error("{width}x{height} is {pixels} pixels, more than the {limit} allowed")]
    TooManyPixels {
        width: u32,
        height: u32,
        pixels: u64,
        limit: u64,
    },
    #[error(
        "{width}x{height} at {bytes_per_pixel} bytes per pixel is {bytes} bytes decoded, \
         more than the {limit} bytes allowed"
    )]
    TooManyBytes {
        width: u32,
        height: u32,
        bytes_per_pixel: u8,
        bytes: u64,
        limit: u64,
    },
    /// The decoder asked for more than the budget while decoding.
    #[error("decoding it needs more than the {limit} bytes allowed")]
    OverBudget { limit: u64, detail: String },
    /// The format is known, the bytes do not decode as it.
    #[error("not a decodable {format} image")]
    Corrupt {
        format: &'static str,
        detail: String,
    },
    #[error("its thumbnail could not be made")]
    Thumbnail { detail: String },
}

impl ImageError {
    /// The decoder's own words, if any: for the log, never the reason.
    pub fn detail(&self) -> Option<&str> {
        match self {
            ImageError::OverBudget { detail, .. }
            | ImageError::Corrupt { detail, .. }
            | ImageError::Thumbnail { detail } => Some(detail),
            _ => None,
        }
    }
}

/// Decodes `bytes` and makes the thumbnail.
pub fn process(bytes: &[u8], rules: ImageRules) -> Result<Processed, ImageError> {
    let guessed = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .ok()
        .and_then(|reader| reader.format());
    let (format, name, label) = match guessed {
        Some(ImageFormat::Png) => (ImageFormat::Png, "png", "PNG"),
        Some(ImageFormat::Jpeg) => (ImageFormat::Jpeg, "jpeg", "JPEG"),
        Some(ImageFormat::WebP) => (ImageFormat::WebP, "webp", "WebP"),
        _ => return Err(ImageError::UnknownFormat),
    };
    let budget = rules.max_decoded_bytes();
    let refused = |error: image::ImageError| match error {
        image::ImageError::Limits(_) => ImageError::OverBudget {
            limit: budget,
            detail: error.to_string(),
        },
        _ => ImageError::Corrupt {
            format: label,
            detail: error.to_string(),
        },
    };
    let mut limits = Limits::default();
    limits.max_alloc = Some(budget);

    // The header alone: a bomb is refused before a pixel is allocated. The
    // decoder's colour type is what decoding will produce (the header's
    // colour type and bit depth, palettes expanded), so its bytes per pixel
    // are what the buffer takes.
    let mut header = ImageReader::with_format(Cursor::new(bytes), format);
    header.limits(limits.clone());
    let decoder = header.into_decoder().map_err(refused)?;
    let (width, height) = decoder.dimensions();
    let bytes_per_pixel = decoder.color_type().bytes_per_pixel();
    drop(decoder);
    let pixels = u64::from(width) * u64::from(height);
    if pixels > rules.max_pixels {
        return Err(ImageError::TooManyPixels {
            width,
            height,
            pixels,
            limit: rules.max_pixels,
        });
    }
    let decoded = pixels.saturating_mul(u64::from(bytes_per_pixel));
    if decoded > budget {
        return Err(ImageError::TooManyBytes {
            width,
            height,
            bytes_per_pixel,
            bytes: decoded,
            limit: budget,
        });
    }

    // The decode holds to the same budget (a second reading of the header,
    // cheap, with the dimensions pinned to those just checked).
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits);
    let image = reader.decode().map_err(refused)?;
    let thumbnail = image
        .thumbnail(rules.thumbnail_px, rules.thumbnail_px)
        .into_rgb8();
    let (thumbnail_width, thumbnail_height) = thumbnail.dimensions();
    let mut encoded = Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut encoded, 80)
        .encode_image(&thumbnail)
        .map_err(|e| ImageError::Thumbnail {
            detail: e.to_string(),
        })?;
    Ok(Processed {
        width,
        height,
        format: name,
        thumbnail: encoded.into_inner(),
        thumbnail_width,
        thumbnail_height,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Rgb, Rgba};

    const RULES: ImageRules = ImageRules {
        max_pixels: 4_000_000,
        thumbnail_px: 256,
    };

    fn encoded(width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
        let img = ImageBuffer::from_fn(width, height, |x, y| {
            Rgb([(x % 256) as u8, (y % 256) as u8, 90])
        });
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    #[test]
    fn png_jpeg_and_webp_decode_and_thumbnail_within_the_square() {
        for (format, name) in [
            (ImageFormat::Png, "png"),
            (ImageFormat::Jpeg, "jpeg"),
            (ImageFormat::WebP, "webp"),
        ] {
            let p = process(&encoded(640, 320, format), RULES).unwrap();
            assert_eq!((p.width, p.height, p.format), (640, 320, name));
            assert_eq!((p.thumbnail_width, p.thumbnail_height), (256, 128));
            let thumb = image::load_from_memory(&p.thumbnail).unwrap();
            assert_eq!((thumb.width(), thumb.height()), (256, 128));
        }
    }

    #[test]
    fn bombs_and_garbage_are_refused_with_a_reason() {
        // 9 megapixels against a limit of 4: refused from the header.
        let bomb = encoded(3000, 3000, ImageFormat::Png);
        let err = process(&bomb, RULES).unwrap_err();
        assert!(
            matches!(
                err,
                ImageError::TooManyPixels {
                    pixels: 9_000_000,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            process(b"plain text, not an image", RULES).unwrap_err(),
            ImageError::UnknownFormat
        );
        let mut truncated = encoded(200, 200, ImageFormat::Png);
        truncated.truncate(truncated.len() / 2);
        assert!(matches!(
            process(&truncated, RULES),
            Err(ImageError::Corrupt { format: "PNG", .. })
        ));
    }

    fn png<P: image::PixelWithColorType>(img: &ImageBuffer<P, Vec<P::Subpixel>>) -> Vec<u8>
    where
        [P::Subpixel]: image::EncodableLayout,
    {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn deep_pixels_count_for_their_bytes_against_the_budget() {
        // A budget of 40,000 bytes (10,000 RGBA8 pixels); 80x80 is 6,400.
        let rules = ImageRules {
            max_pixels: 10_000,
            thumbnail_px: 16,
        };
        assert_eq!(rules.max_decoded_bytes(), 40_000);
        let rgba16 = png(&ImageBuffer::from_pixel(80, 80, Rgba([1u16, 2, 3, 4])));
        let err = process(&rgba16, rules).unwrap_err();
        assert_eq!(
            err,
            ImageError::TooManyBytes {
                width: 80,
                height: 80,
                bytes_per_pixel: 8,
                bytes: 51_200,
                limit: 40_000,
            }
        );
        assert_eq!(
            err.to_string(),
            "80x80 at 8 bytes per pixel is 51200 bytes decoded, more than the 40000 bytes allowed"
        );
        // 6 and 4 bytes per pixel fit: 38,400 and 25,600 bytes.
        let rgb16 = png(&ImageBuffer::from_pixel(80, 80, Rgb([1u16, 2, 3])));
        let rgba8 = png(&ImageBuffer::from_pixel(80, 80, Rgba([1u8, 2, 3, 4])));
        for fits in [rgb16, rgba8] {
            assert_eq!(process(&fits, rules).unwrap().width, 80);
        }
    }

    #[test]
    fn a_refusal_reason_is_fixed_wording_and_the_decoder_detail_stays_apart() {
        let mut garbage = b"\x89PNG\r\n\x1a\n".to_vec();
        garbage.extend_from_slice(b"\0\0\0\x0dIHDR not a header at all, CRC be damned");
        let mut truncated = encoded(200, 200, ImageFormat::Png);
        truncated.truncate(truncated.len() / 2);
        let mut jpeg = encoded(64, 64, ImageFormat::Jpeg);
        jpeg.truncate(40);
        for (bytes, reason) in [
            (garbage, "not a decodable PNG image"),
            (truncated, "not a decodable PNG image"),
            (jpeg, "not a decodable JPEG image"),
        ] {
            let err = process(&bytes, RULES).unwrap_err();
            assert_eq!(err.to_string(), reason, "{err:?}");
            let detail = err.detail().expect("the decoder said why");
            assert!(!detail.is_empty() && !reason.contains(detail), "{err:?}");
        }
        assert_eq!(ImageError::UnknownFormat.detail(), None);
    }
}
