//! Rules of DSP0266 that hold for every response and request: the
//! `OData-Version` and `Cache-Control` headers, refusal of OData versions
//! other than 4.0 (412), and Redfish error bodies where a layer answered
//! on its own (405, 413).

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::message::RedfishError;

pub async fn enforce(request: Request, next: Next) -> Response {
    if let Some(version) = request.headers().get("odata-version")
        && version.as_bytes() != b"4.0"
    {
        return RedfishError::new(
            StatusCode::PRECONDITION_FAILED,
            "HeaderInvalid",
            &["OData-Version"],
        )
        .into_response();
    }
    let mut response = next.run(request).await;
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    response = match response.status() {
        StatusCode::METHOD_NOT_ALLOWED if !is_json => {
            let allow = response
                .headers()
                .get(header::ALLOW)
                .and_then(|a| a.to_str().ok())
                .unwrap_or("")
                .to_string();
            RedfishError::method_not_allowed(&allow).into_response()
        }
        // The body limit answers in plain text.
        StatusCode::PAYLOAD_TOO_LARGE if !is_json => {
            RedfishError::new(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge", &[]).into_response()
        }
        _ => response,
    };
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
