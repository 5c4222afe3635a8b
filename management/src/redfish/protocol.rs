//! Rules of DSP0266 that hold for every response and request: the
//! `OData-Version` and `Cache-Control` headers, refusal of OData versions
//! other than 4.0 (412), request bodies read after authentication and
//! capped (413, see [`intake`](super::intake)), a `Retry-After` on every
//! 503, and Redfish error bodies where a layer answered on its own (405).

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

/// Seconds a 503 tells the client to wait when the code that refused did
/// not say (`Retry-After`, RFC 9110; DSP0266 asks for it on 503).
pub const DEFAULT_RETRY_AFTER_S: u64 = 5;

/// The headers every response carries.
fn with_protocol_headers(mut response: Response) -> Response {
    let unavailable = response.status() == StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    if unavailable {
        headers
            .entry(header::RETRY_AFTER)
            .or_insert(HeaderValue::from(DEFAULT_RETRY_AFTER_S));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_503_says_when_to_retry() {
        let bare = (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response();
        let answered = with_protocol_headers(bare);
        assert_eq!(answered.headers()[header::RETRY_AFTER], "5");
        let told = RedfishError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceTemporarilyUnavailable",
            &["2"],
        )
        .with_header(header::RETRY_AFTER, "2")
        .into_response();
        assert_eq!(
            with_protocol_headers(told).headers()[header::RETRY_AFTER],
            "2"
        );
        let fine = with_protocol_headers(StatusCode::OK.into_response());
        assert!(!fine.headers().contains_key(header::RETRY_AFTER));
    }
}
