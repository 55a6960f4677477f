//! `POST /products`: a multipart upload becomes one small `product_uploaded`
//! event. Every part is read and checked before anything is stored; each file
//! then goes to the claim-check store on its own, content addressed (the same
//! file uploaded twice is one payload), and the event carries the metadata
//! inline and, per file, its token, sha256, size and content type, so each
//! branch of the DAG fetches only its own bytes. Nothing reaches the topic
//! unless the whole upload is acceptable.

use axum::extract::multipart::{Field, MultipartError, MultipartRejection};
use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use serde_json::{Map, Value};
use shared::claim_check::content_ref;
use shared::event::{AssetKind, Event, EventBody, ProductUploaded, UploadedAsset};
use shared::http::{Admin, ApiError};
use uuid::Uuid;

use super::events::publish_error;
use crate::publish::Incoming;
use crate::state::AppState;

/// The metadata part is small JSON; anything larger is not metadata.
const MAX_METADATA_BYTES: usize = 64 * 1024;

/// A file name travels on the topic and is shown back to people: at most
/// what filesystems take (255 bytes), so a name cannot outweigh its event.
const MAX_FILE_NAME_BYTES: usize = 255;

/// The content types each branch takes.
fn accepted(kind: AssetKind) -> &'static [&'static str] {
    match kind {
        AssetKind::Image => &["image/png", "image/jpeg", "image/webp"],
        AssetKind::Video => &["video/mp4", "video/webm"],
        AssetKind::Metadata => &["application/json"],
    }
}

/// One file as it arrived.
struct File {
    kind: AssetKind,
    name: Option<String>,
    content_type: String,
    bytes: Vec<u8>,
}

/// The parts of an upload (a schema only: parts are read one by one).
#[derive(Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
struct Upload {
    /// The product as JSON (`title`, `price`, `currency`, `categories`, ...).
    metadata: String,
    /// An image: png, jpeg or webp (more as `image-3`, ...).
    #[serde(rename = "image-1")]
    #[schema(value_type = Option<shared::http::openapi::Binary>)]
    image_1: Option<Vec<u8>>,
    #[serde(rename = "image-2")]
    #[schema(value_type = Option<shared::http::openapi::Binary>)]
    image_2: Option<Vec<u8>>,
    /// A video: mp4 or webm.
    #[schema(value_type = Option<shared::http::openapi::Binary>)]
    video: Option<Vec<u8>>,
}

/// The 202 answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Uploaded {
    product_id: String,
    event_id: Uuid,
    partition: i32,
    offset: i64,
    /// The parts the product waits for, metadata first.
    parts: Vec<Part>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Part {
    part: String,
    kind: AssetKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
}

/// A multipart upload (a `metadata` JSON part, `image-*` and `video` file
/// parts) becomes one `product_uploaded` event; the files go to the
/// claim-check store first, content addressed.
#[utoipa::path(post, path = "/products", tag = "gateway",
    security(("bearer" = [])),
    request_body(content_type = "multipart/form-data", content = Upload),
    responses((status = 202, description = "The product is uploaded; its DAG runs", body = Uploaded)))]
pub async fn post_product(
    _: Admin,
    State(state): State<AppState>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<Uploaded>), ApiError> {
    let mut multipart = multipart
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_multipart", e.body_text()))?;
    let mut metadata: Option<Map<String, Value>> = None;
    let mut files: Vec<File> = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        let kind = match name.as_str() {
            "metadata" => {
                if metadata.is_some() {
                    return Err(ApiError::bad_request(
                        "bad_upload",
                        "more than one metadata part",
                    ));
                }
                let bytes = read(field, "metadata", MAX_METADATA_BYTES).await?;
                metadata = Some(parse_metadata(&bytes)?);
                continue;
            }
            "image" => AssetKind::Image,
            "video" => AssetKind::Video,
            other => {
                return Err(ApiError::bad_request(
                    "bad_upload",
                    format!("unknown part `{other}`; expected metadata, image or video"),
                ))
            }
        };
        let content_type = field
            .content_type()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if !accepted(kind).contains(&content_type.as_str()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "{name} part of type `{content_type}`; the {name} branch takes {}",
                    accepted(kind).join(", ")
                ),
            ));
        }
        let file_name = file_name(&name, field.file_name())?;
        let bytes = read(field, &name, state.max_file_bytes).await?;
        files.push(File {
            kind,
            name: file_name,
            content_type,
            bytes,
        });
    }
    let mut metadata =
        metadata.ok_or_else(|| ApiError::bad_request("bad_upload", "no metadata part"))?;
    let count = |kind| files.iter().filter(|f| f.kind == kind).count();
    if count(AssetKind::Image) == 0 {
        return Err(ApiError::bad_request(
            "bad_upload",
            "at least one image part is required",
        ));
    }
    if count(AssetKind::Video) > 1 {
        return Err(ApiError::bad_request(
            "bad_upload",
            "at most one video part",
        ));
    }
    // Ids are the envelope's, not the product's description.
    let product_id =
        take_id(&mut metadata, "product_id")?.unwrap_or_else(|| Uuid::now_v7().to_string());
    let seller_id = take_id(&mut metadata, "seller_id")?;

    let mut assets = Vec::with_capacity(files.len());
    let mut references = Vec::with_capacity(files.len());
    let mut images = 0;
    for file in &files {
        let part = match file.kind {
            AssetKind::Image => {
                images += 1;
                format!("image-{images}")
            }
            _ => file.kind.as_str().to_owned(),
        };
        let reference = content_ref(&file.bytes, &file.content_type);
        assets.push(UploadedAsset {
            part,
            kind: file.kind,
            token: reference.token,
            sha256: reference.sha256.clone(),
            size: reference.size,
            content_type: reference.content_type.clone(),
            name: file.name.clone(),
        });
        references.push(reference);
    }
    let uploaded = ProductUploaded {
        product_id: product_id.clone(),
        seller_id,
        metadata: Value::Object(metadata),
        assets,
    };
    let parts = uploaded
        .parts()
        .map(|(part, kind)| {
            let asset = uploaded.assets.iter().find(|a| a.part == part);
            Part {
                part: part.to_owned(),
                kind,
                sha256: asset.map(|a| a.sha256.clone()),
                size: asset.map(|a| a.size),
            }
        })
        .collect();
    let tokens: Vec<Uuid> = references.iter().map(|r| r.token).collect();
    let mut event = Event::new(EventBody::ProductUploaded(Box::new(uploaded)));
    event.id = Some(Uuid::now_v7());
    event.ts = Some(chrono::Utc::now());
    let wire = event.to_json();
    // The parser's bounds hold for uploads as for every other entry.
    Event::parse(&wire).map_err(|e| ApiError::bad_request("invalid_event", e.to_string()))?;
    // Acceptable as a whole: now the files are stored, then the event produced.
    for (reference, file) in references.iter().zip(&files) {
        state
            .claims
            .put_content(reference, &file.bytes)
            .await
            .map_err(|e| {
                ApiError::unavailable(
                    e.code(),
                    "the claim-check store could not take the files; nothing was produced",
                )
                .caused_by(e)
            })?;
        metrics::counter!("kappa_gateway_upload_bytes_total", "kind" => file.kind.as_str())
            .increment(reference.size);
    }
    let ack = state
        .publisher
        .publish(vec![Incoming::new(event, wire.into())])
        .await
        .map_err(publish_error)?
        .remove(0);
    // Referenced by an acknowledged event: the sweeper keeps the files.
    if let Err(error) = state.claims.commit(&tokens).await {
        tracing::warn!(%error, product_id, "marking uploaded files committed failed; the sweeper's grace applies");
    }
    metrics::counter!("kappa_gateway_products_uploaded_total").increment(1);
    Ok((
        StatusCode::ACCEPTED,
        Json(Uploaded {
            product_id,
            event_id: ack.id,
            partition: ack.partition,
            offset: ack.offset,
            parts,
        }),
    ))
}

/// A part's bytes, refused with 413 beyond `limit`.
async fn read(mut field: Field<'_>, part: &str, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if bytes.len() + chunk.len() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the {part} part is larger than {limit} bytes"),
            )
            .with("part", part)
            .with("limit_bytes", limit));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// A part's file name, refused (400, naming the `filename` field) when
/// longer than [`MAX_FILE_NAME_BYTES`] or holding a control character
/// (a TAB, an escape, a C1 control) or a bidirectional control (which
/// would show `invoice<U+202E>fdp.exe` as `invoiceexe.pdf`): checked before the
/// part's bytes are read.
fn file_name(part: &str, name: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(name) = name else { return Ok(None) };
    let refused = |message: String| {
        Err(ApiError::bad_request("bad_upload", message)
            .with("field", "filename")
            .with("part", part))
    };
    if name.len() > MAX_FILE_NAME_BYTES {
        return refused(format!(
            "the filename of the {part} part is {} bytes long; at most {MAX_FILE_NAME_BYTES} bytes",
            name.len()
        ));
    }
    let shown_reversed = |c: &char| shared::text::is_bidi_control(*c);
    if let Some(c) = name.chars().find(|c| c.is_control() || shown_reversed(c)) {
        return refused(format!(
            "the filename of the {part} part contains the control character U+{:04X} (control and bidirectional characters are refused)",
            c as u32
        ));
    }
    Ok(Some(name.to_owned()))
}

fn parse_metadata(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request(
            "bad_metadata",
            "the metadata part must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(
            "bad_metadata",
            format!("the metadata part is not JSON: {e}"),
        )),
    }
}

/// Removes `field` from the metadata: a string id, or absent.
fn take_id(metadata: &mut Map<String, Value>, field: &str) -> Result<Option<String>, ApiError> {
    match metadata.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) => Ok(Some(id)),
        Some(_) => Err(
            ApiError::bad_request("bad_metadata", format!("{field} must be a string"))
                .with("field", field),
        ),
    }
}

fn multipart_error(error: MultipartError) -> ApiError {
    let status = error.status();
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "payload_too_large"
    } else {
        "bad_multipart"
    };
    ApiError::new(status, code, error.body_text())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_bounded_in_bytes_and_free_of_control_characters() {
        let at_limit = "a".repeat(MAX_FILE_NAME_BYTES);
        assert_eq!(file_name("image", Some(&at_limit)).unwrap(), Some(at_limit));
        assert_eq!(file_name("image", None).unwrap(), None);
        assert_eq!(
            file_name("image", Some("lampe-été.png"))
                .unwrap()
                .as_deref(),
            Some("lampe-été.png")
        );
        // Bytes, not characters: 128 two-byte characters are 256 bytes.
        for name in ["a".repeat(MAX_FILE_NAME_BYTES + 1), "é".repeat(128)] {
            let err = file_name("video", Some(&name)).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST);
            assert_eq!(err.detail("field"), Some(&Value::from("filename")));
            assert!(format!("{err:?}").contains("256 bytes long"), "{err:?}");
        }
        for name in [
            "a\tb.png",
            "a\u{1b}b.png",
            "a\u{85}b.png",
            "a\u{7f}b.png",
            "invoice\u{202e}fdp.exe",
        ] {
            let err = file_name("image", Some(name)).unwrap_err();
            assert_eq!(err.detail("field"), Some(&Value::from("filename")));
            assert!(format!("{err:?}").contains("control character"), "{err:?}");
        }
    }
}
