//! `/openapi.json`: each service's API, generated from its handlers.
//!
//! A service registers its routes on a [`utoipa_axum::router::OpenApiRouter`]
//! with `routes!(handler, ...)`, each handler carrying `#[utoipa::path]`
//! (path, parameters, body, success answers, `security(("bearer" = []))`
//! when it takes [`Admin`](super::Admin)). [`complete`] then adds what every
//! operation shares, so no handler repeats it: the error answers the shared
//! layers can give (all with the [`ErrorBody`] schema), the bearer scheme,
//! and the service's name and version. The path templates come from the
//! router itself, so the description cannot drift from what is served.

use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};
use utoipa::{PartialSchema, ToSchema};

/// The body of every answer that is not a success (`shared::http::ApiError`):
/// other fields name what was wrong (`field`, `limit`, `retry_ids`, ...).
#[derive(ToSchema)]
#[schema(as = Error)]
#[allow(dead_code)] // A schema only: the body is built by `ApiError`.
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `bad_request`, `unauthorized`.
    error: String,
    /// What went wrong, for a person.
    message: String,
    /// On a 5xx answer: the request id to quote (the cause is in the log).
    request_id: Option<String>,
}

/// Raw bytes in a body (`type: string, format: binary`).
pub struct Binary;

impl PartialSchema for Binary {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .into()
    }
}

impl ToSchema for Binary {}

/// The error answers, by status: (status, component name, description).
const ERRORS: [(&str, &str, &str); 9] = [
    ("400", "BadRequest", "The request does not fit: a parameter or the body names what and why"),
    ("401", "Unauthorized", "A valid bearer token (the admin token) is required"),
    ("404", "NotFound", "No such resource"),
    ("408", "RequestTimeout", "The body did not arrive within the request deadline"),
    ("413", "PayloadTooLarge", "The body (or one of its parts) is over the configured limit"),
    ("415", "UnsupportedMediaType", "The body's content type is not one this route takes"),
    ("429", "TooManyRequests", "Over a configured rate: retry after the time given"),
    ("500", "Internal", "Something failed inside: quote the request id"),
    ("503", "Unavailable", "A dependency (broker, database) or the request budget is exhausted; retry after the time given"),
];

/// Describes the security of the `GET` operations at `paths`, which take
/// [`Viewer`](super::Viewer): optional while `public` (anyone, or the token),
/// the token otherwise, as `auth.public_metrics` says.
pub fn metrics_security<S: Clone + Send + Sync + 'static>(
    router: &mut utoipa_axum::router::OpenApiRouter<S>,
    paths: &[&str],
    public: bool,
) {
    use utoipa::openapi::security::SecurityRequirement;
    let bearer = SecurityRequirement::new("bearer", Vec::<String>::new());
    let security = if public {
        vec![SecurityRequirement::default(), bearer]
    } else {
        vec![bearer]
    };
    for path in paths {
        let item = router.get_openapi_mut().paths.paths.get_mut(*path);
        let get = item.and_then(|item| item.get.as_mut());
        get.unwrap_or_else(|| panic!("GET {path} is not described"))
            .security = Some(security.clone());
    }
}

/// Fills in what every operation of `service` shares (see the module docs).
pub fn complete(api: &mut OpenApi, service: &str) {
    api.info.title = format!("kappa-jobs {service}");
    api.info.version = env!("CARGO_PKG_VERSION").to_owned();
    api.info.contact = None;
    api.info.license = Some(utoipa::openapi::License::new(env!("CARGO_PKG_LICENSE")));
    api.info.description = Some(format!(
        "The {service} service. Errors are JSON `{{\"error\", \"message\", ...}}`; \
         writes, admin and personal data take `Authorization: Bearer <admin token>`."
    ));
    let components = api.components.get_or_insert_with(Default::default);
    components.security_schemes.insert(
        "bearer".into(),
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    components
        .schemas
        .insert(ErrorBody::name().into_owned(), ErrorBody::schema());
    for (_, name, description) in ERRORS {
        let body = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(ErrorBody::name())))
            .build();
        let response = ResponseBuilder::new()
            .description(description)
            .content("application/json", body)
            .build();
        components.responses.insert(name.into(), RefOr::T(response));
    }
    for item in api.paths.paths.values_mut() {
        let has_path_params = item
            .parameters
            .iter()
            .flatten()
            .any(|p| p.parameter_in == utoipa::openapi::path::ParameterIn::Path);
        for operation in operations(item) {
            one_per_name(operation);
            add_errors(operation, has_path_params);
        }
    }
}

/// A path parameter described by a handler's `IntoParams` (for its
/// schema) is one utoipa also adds from the path template, as a bare
/// string: the first, declared one is kept, and a path parameter is
/// required (OpenAPI says so; a schema-built one does not know it is one).
fn one_per_name(operation: &mut Operation) {
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::Required;
    let Some(parameters) = operation.parameters.as_mut() else {
        return;
    };
    let mut seen: Vec<(String, ParameterIn)> = Vec::new();
    parameters.retain(|p| {
        let key = (p.name.clone(), p.parameter_in.clone());
        let first = !seen.contains(&key);
        seen.push(key);
        first
    });
    for parameter in parameters.iter_mut() {
        if parameter.parameter_in == ParameterIn::Path {
            parameter.required = Required::True;
        }
        // A parameter is text: absent or a value, never JSON's null (an
        // `Option` field's schema says null, which a client would send as
        // the text `null`).
        if let Some(RefOr::T(Schema::Object(object))) = parameter.schema.as_mut() {
            if let SchemaType::Array(types) = &object.schema_type {
                let kept: Vec<Type> = types
                    .iter()
                    .filter(|t| **t != Type::Null)
                    .cloned()
                    .collect();
                object.schema_type = match kept.as_slice() {
                    [one] => SchemaType::Type(one.clone()),
                    _ => SchemaType::Array(kept),
                };
            }
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// The error answers the shared layers give to `operation`.
fn add_errors(operation: &mut Operation, path_params: bool) {
    use utoipa::openapi::path::ParameterIn;
    let params = operation.parameters.iter().flatten();
    let takes_path = path_params || params.clone().any(|p| p.parameter_in == ParameterIn::Path);
    let takes_input = takes_path || params.count() > 0 || operation.request_body.is_some();
    let secured = operation
        .security
        .as_ref()
        .is_some_and(|requirements| !requirements.is_empty());
    let has_body = operation.request_body.is_some();
    for (status, name, _) in ERRORS {
        let applies = match status {
            "400" => takes_input,
            "401" => secured,
            "404" => takes_path,
            "408" | "413" | "415" => has_body,
            "429" => false,
            _ => true,
        };
        if applies && !operation.responses.responses.contains_key(status) {
            operation.responses.responses.insert(
                status.into(),
                RefOr::Ref(Ref::new(format!("#/components/responses/{name}"))),
            );
        }
    }
}
