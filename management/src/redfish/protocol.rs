//! Rules of DSP0266 that hold for every response and request: the
//! `OData-Version` and `Cache-Control` headers, refusal of OData versions
//! other than 4.0 (412), request bodies of at most `MAX_BODY_BYTES` (413),
//! and Redfish error bodies where a layer answered on its own (405).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::MAX_BODY_BYTES;
use super::message::RedfishError;

/// The request with its whole body read (at most `MAX_BODY_BYTES`), or
/// the error response. Reading it before anything answers matters: a
/// response sent while request bytes are still unread (a 401 to an
/// unauthenticated PATCH) makes the connection close with them pending,
/// which resets it, and a client reusing that keep-alive connection sees
/// its next request fail.
async fn read_body(request: Request) -> Result<Request, Response> {
    let (parts, body) = request.into_parts();
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(Request::from_parts(parts, Body::from(collected.to_bytes()))),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(
                RedfishError::new(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge", &[])
                    .into_response(),
            )
        }
        Err(_) => Err(
            RedfishError::new(StatusCode::BAD_REQUEST, "UnrecognizedRequestBody", &[])
                .into_response(),
        ),
    }
}

pub async fn enforce(request: Request, next: Next) -> Response {
    let request = match read_body(request).await {
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
