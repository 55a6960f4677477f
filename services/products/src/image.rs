//! The image branch: decode PNG, JPEG or WebP, refuse decompression bombs
//! before allocating them (the header's dimensions against a pixel limit,
//! and the decoder's own allocation limit), and make a thumbnail that fits
//! a square of `thumbnail_px`, encoded as JPEG. CPU-bound: callers run it
//! off the async runtime.

use std::io::Cursor;

use image::{ImageFormat, ImageReader, Limits};
use serde::Serialize;

/// What the branch needs to know.
#[derive(Debug, Clone, Copy)]
pub struct ImageRules {
    /// Width times height above this is refused (a decompression bomb).
    pub max_pixels: u64,
    /// The thumbnail fits a square of this many pixels.
    pub thumbnail_px: u32,
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

/// Why the image was refused (the `asset_failed` reason).
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
    #[error("the image does not decode: {0}")]
    Corrupt(String),
}

/// Decodes `bytes` and makes the thumbnail.
pub fn process(bytes: &[u8], rules: ImageRules) -> Result<Processed, ImageError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::Corrupt(e.to_string()))?;
    let format = match reader.format() {
        Some(ImageFormat::Png) => "png",
        Some(ImageFormat::Jpeg) => "jpeg",
        Some(ImageFormat::WebP) => "webp",
        _ => return Err(ImageError::UnknownFormat),
    };
    // The header alone: a bomb is refused before a pixel is allocated.
    let (width, height) = ImageReader::with_format(Cursor::new(bytes), reader.format().unwrap())
        .into_dimensions()
        .map_err(|e| ImageError::Corrupt(e.to_string()))?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > rules.max_pixels {
        return Err(ImageError::TooManyPixels {
            width,
            height,
            pixels,
            limit: rules.max_pixels,
        });
    }
    let mut reader = reader;
    let mut limits = Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    // Four bytes per pixel (RGBA8), plus the decoder's working room.
    limits.max_alloc = Some(rules.max_pixels.saturating_mul(8));
    reader.limits(limits);
    let image = reader
        .decode()
        .map_err(|e| ImageError::Corrupt(e.to_string()))?;
    let thumbnail = image
        .thumbnail(rules.thumbnail_px, rules.thumbnail_px)
        .into_rgb8();
    let (thumbnail_width, thumbnail_height) = thumbnail.dimensions();
    let mut encoded = Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut encoded, 80)
        .encode_image(&thumbnail)
        .map_err(|e| ImageError::Corrupt(e.to_string()))?;
    Ok(Processed {
        width,
        height,
        format,
        thumbnail: encoded.into_inner(),
        thumbnail_width,
        thumbnail_height,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Rgb};

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
            Err(ImageError::Corrupt(_))
        ));
    }
}
