//! Hostile images through the whole DAG, on the real broker and database:
//! a decompression bomb whose pixels pass the pixel limit but whose 16-bit
//! channels do not fit the byte budget is refused from its header, and
//! garbage that claims to be a PNG is refused in fixed words, with none of
//! the decoder's text in the `asset_failed` reason or the product's status.

mod common;

use std::time::Duration;

use common::{image, World};
use image::ImageFormat;
use serde_json::{json, Value};
use shared::event::EventBody;

/// The refusal of a garbage PNG, whatever the decoder said.
const NOT_A_PNG: &str = "not a decodable PNG image";

fn lamp(id: &str) -> Value {
    json!({"product_id": id, "title": "Lamp", "price": "9.90", "currency": "EUR"})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deep_pixel_bomb_and_garbage_pngs_are_refused_in_fixed_words() {
    let world = World::new("products_hostile", &[]).await;
    let _image = world.spawn("image", "1").await;
    let _metadata = world.spawn("metadata", "1").await;
    let _creator = world.spawn("creator", "1").await;
    let api = world.spawn("api", "1").await;

    // 39.69 megapixels, under the default 40; 8 bytes each, 317 MB decoded.
    let bomb = rgba16_png(6300, 6300);
    assert!(
        bomb.len() < 4 << 20,
        "the bomb is small: {} bytes",
        bomb.len()
    );
    world
        .upload(&lamp("bomb"), &[(bomb, "image/png")], None)
        .await;
    // A PNG signature and then nonsense (refused reading the header), and a
    // real PNG cut in half (refused while decoding).
    let mut garbage = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    garbage.extend_from_slice(&[0xA5; 64]);
    let mut truncated = image(200, 200, ImageFormat::Png);
    truncated.truncate(truncated.len() / 2);
    world
        .upload(
            &lamp("garbage"),
            &[(garbage, "image/png"), (truncated, "image/png")],
            None,
        )
        .await;

    let product = world.decided(&api, "bomb", Duration::from_secs(60)).await;
    assert_eq!(product["status"], "rejected", "{product}");
    let reason = product["reason"].as_str().unwrap();
    let expected =
        "image-1: 6300x6300 at 8 bytes per pixel is 317520000 bytes decoded, more than the ";
    assert!(
        reason.starts_with(expected) && reason.ends_with(" bytes allowed"),
        "the refusal names the size and the limit: {reason}"
    );

    let product = world
        .decided(&api, "garbage", Duration::from_secs(60))
        .await;
    assert_eq!(product["status"], "rejected", "{product}");
    assert_eq!(
        product["reason"],
        format!("image-1: {NOT_A_PNG}; image-2: {NOT_A_PNG}"),
        "{product}"
    );
    for part in product["parts"].as_array().unwrap() {
        if part["part"] != "metadata" {
            assert_eq!(part["reason"], NOT_A_PNG, "{part}");
        }
    }

    // The events say the same: fixed words, no decoder text.
    let events = world.events(2 + 2 + 3 + 2).await;
    let mut failed: Vec<(String, String, String)> = events
        .iter()
        .filter_map(|(_, e)| match &e.body {
            EventBody::AssetFailed(f) => {
                Some((f.product_id.clone(), f.part.clone(), f.reason.clone()))
            }
            _ => None,
        })
        .collect();
    failed.sort();
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert_eq!(
        (failed[0].0.as_str(), failed[0].1.as_str()),
        ("bomb", "image-1")
    );
    assert!(failed[0].2.starts_with("6300x6300 at 8 bytes per pixel"));
    for (product, part, reason) in &failed[1..] {
        assert_eq!(product, "garbage");
        assert_eq!(reason, NOT_A_PNG, "{part}");
    }
}

/// The helper makes real PNGs: a small one decodes, every pixel zero.
#[test]
fn the_hand_made_png_is_a_real_rgba16_png() {
    let decoded = ::image::load_from_memory(&rgba16_png(40, 30)).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (40, 30));
    assert_eq!(decoded.color(), ::image::ColorType::Rgba16);
    assert!(decoded.as_bytes().iter().all(|b| *b == 0));
}

/// A valid PNG of `width` x `height`, colour type 6 (RGBA) at bit depth 16,
/// every pixel zero, deflated by hand (fixed Huffman codes: one zero
/// literal, then copies of 258 bytes at distance 1): a 6300x6300 one is
/// 2 MB, and its 317 MB of pixels never exist in the test.
fn rgba16_png(width: u32, height: u32) -> Vec<u8> {
    // Each row: a filter byte (0, none), then 8 bytes per pixel.
    let raw = u64::from(height) * (1 + u64::from(width) * 8);
    let mut bits = Bits::default();
    bits.put(1, 1); // the final block
    bits.put(1, 2); // fixed Huffman codes
    bits.code(0x30, 8); // literal 0
    let rest = raw - 1;
    for _ in 0..rest / 258 {
        bits.code(0xC5, 8); // length 258 (symbol 285)
        bits.code(0, 5); // distance 1 (code 0)
    }
    for _ in 0..rest % 258 {
        bits.code(0x30, 8);
    }
    bits.code(0, 7); // end of block (symbol 256)
    let mut zlib = vec![0x78, 0x01];
    zlib.extend(bits.finish());
    // Adler-32 of zeros: a stays 1, b adds it once per byte.
    let adler = (((raw % 65521) as u32) << 16) | 1;
    zlib.extend(adler.to_be_bytes());

    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([16, 6, 0, 0, 0]); // depth, colour type, compression, filter, interlace
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &zlib);
    chunk(&mut png, b"IEND", &[]);
    png
}

fn chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    png.extend((data.len() as u32).to_be_bytes());
    png.extend(kind);
    png.extend(data);
    let mut crc = !0u32;
    for &byte in kind.iter().chain(data) {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    png.extend((!crc).to_be_bytes());
}

/// A deflate bit stream: values least significant bit first, Huffman codes
/// most significant bit first.
#[derive(Default)]
struct Bits {
    out: Vec<u8>,
    acc: u64,
    len: u32,
}

impl Bits {
    fn put(&mut self, value: u32, count: u32) {
        self.acc |= u64::from(value) << self.len;
        self.len += count;
        while self.len >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.len -= 8;
        }
    }

    fn code(&mut self, code: u32, count: u32) {
        self.put(code.reverse_bits() >> (32 - count), count);
    }

    fn finish(mut self) -> Vec<u8> {
        if self.len > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}
