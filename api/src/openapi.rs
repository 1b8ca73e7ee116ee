//! The OpenAPI 3.1 document of each role, generated from the handlers'
//! `#[utoipa::path]` annotations and the [`crate::v1`] types, so the document
//! cannot say what the code does not do.
//!
//! [`document`] adds what every route shares: bearer authentication, and the
//! one error envelope as the `default` response of every operation. Each
//! role serves its document at `GET /openapi.json` ([`route`]); the
//! committed copies under `api/openapi/` are checked against the code by a
//! drift test.

use axum::Router;
use axum::http::header;
use axum::routing::get;
use utoipa::OpenApi as _;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, InfoBuilder, LicenseBuilder, OpenApi, Ref, RefOr, ResponseBuilder,
};

use crate::v1::{ErrorBody, ErrorDetail};

#[derive(utoipa::OpenApi)]
#[openapi(components(schemas(ErrorBody, ErrorDetail)))]
struct Shared;

const ERROR: &str = "Error";
const BEARER: &str = "bearer";

/// A role's document: its routes, titled, with the shared parts added.
pub fn document(title: &str, description: &str, routes: OpenApi) -> OpenApi {
    let mut doc = Shared::openapi();
    doc.merge(routes);
    doc.info = InfoBuilder::new()
        .title(title)
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(description))
        .license(Some(
            LicenseBuilder::new()
                .name("Apache-2.0")
                .identifier(Some("Apache-2.0"))
                .build(),
        ))
        .build();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("An API key: `authorization: Bearer <key>`"))
                .build(),
        ),
    );
    components.responses.insert(
        ERROR.into(),
        RefOr::T(
            ResponseBuilder::new()
                .description(
                    "Any error: a stable `code`, a `message` for people, and `details` where \
                     there are some. 400 malformed input, 401 no valid key (checked before the \
                     body is read), 404 not found, 409 conflict, 413 too large, 422 a broken \
                     rule, 503 retry.",
                )
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build(),
        ),
    );
    doc.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
    for item in doc.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            add_error_response(operation);
        }
    }
    doc
}

/// Every operation answers errors with the one envelope, and every
/// response has the description OpenAPI requires (the status's reason
/// phrase where the handler gave none).
fn add_error_response(operation: &mut Operation) {
    for (status, response) in operation.responses.responses.iter_mut() {
        if let RefOr::T(response) = response
            && response.description.is_empty()
        {
            response.description = status
                .parse::<u16>()
                .ok()
                .and_then(|code| axum::http::StatusCode::from_u16(code).ok())
                .and_then(|code| code.canonical_reason())
                .unwrap_or("Success")
                .to_owned();
        }
    }
    operation
        .responses
        .responses
        .entry("default".into())
        .or_insert_with(|| RefOr::Ref(Ref::from_response_name(ERROR)));
}

/// Several roles' documents as one (what `aforo standalone` serves).
pub fn merge(title: &str, description: &str, docs: impl IntoIterator<Item = OpenApi>) -> OpenApi {
    let mut routes = OpenApi::default();
    for doc in docs {
        routes.merge(doc);
    }
    document(title, description, routes)
}

/// The text a role serves and commits: pretty JSON and a final newline.
pub fn to_json(doc: &OpenApi) -> String {
    let mut text = doc
        .to_pretty_json()
        .expect("an OpenAPI document is plain data and always serializes");
    text.push('\n');
    text
}

/// `GET /openapi.json`, unauthenticated: the document is public.
pub fn route<S: Clone + Send + Sync + 'static>(doc: &OpenApi) -> Router<S> {
    let text = to_json(doc);
    Router::new().route(
        "/openapi.json",
        get(move || {
            let text = text.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], text) }
        }),
    )
}
