//! Rules of DSP0266 that hold for every response and request: the
//! `OData-Version` and `Cache-Control` headers, refusal of OData versions
//! other than 4.0 (412), request bodies read after authentication and
//! capped (413, see [`intake`](super::intake)), and Redfish error bodies
//! where a layer answered on its own (405).

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::intake;
use super::message::RedfishError;
use crate::state::AppState;

pub async fn enforce(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // The body first: nothing may answer before it is read (see intake).
    let request = match intake::read_body(&state, request).await {
        Ok(request) => request,
        Err(response) => return with_protocol_headers(response),
    };
    if let Some(version) = request.headers().get("odata-version")
        && version.as_bytes() != b"4.0"
    {
        return with_protocol_headers(
            RedfishError::new(
                StatusCode::PRECONDITION_FAILED,
                "HeaderInvalid",
                &["OData-Version"],
            )
            .into_response(),
        );
    }
    let response = next.run(request).await;
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    let response = match response.status() {
        StatusCode::METHOD_NOT_ALLOWED if !is_json => {
            let allow = response
                .headers()
                .get(header::ALLOW)
                .and_then(|a| a.to_str().ok())
                .unwrap_or("")
                .to_string();
            RedfishError::method_not_allowed(&allow).into_response()
        }
        _ => response,
    };
    with_protocol_headers(response)
}

/// The headers every response carries.
fn with_protocol_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert("odata-version", HeaderValue::from_static("4.0"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    response
}
