//! Request bodies are read only once the caller is known. A request with
//! a body is authenticated first (if it carries credentials); an
//! authenticated caller may send up to `MAX_BODY_BYTES`, anyone else (a
//! login, or a request about to be refused) up to
//! `MAX_UNAUTHENTICATED_BODY_BYTES`, as bmcweb does. Within its cap the
//! body is read whole before anything answers: a response sent while
//! request bytes are still unread makes an HTTP/1.1 connection close with
//! them pending, which resets it under a client reusing it. A body over
//! the cap is not read: the answer is 413, and HTTP/1.1 connections are
//! closed after it.

use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::MAX_BODY_BYTES;
use super::message::RedfishError;
use crate::auth::{self, Authentication};
use crate::state::AppState;

/// Largest body read from a caller that has not authenticated: a login's
/// user name and password fit many times over.
pub const MAX_UNAUTHENTICATED_BODY_BYTES: usize = 4 << 10;

/// The request with its body read, or the response refusing it.
pub async fn read_body(state: &AppState, mut request: Request) -> Result<Request, Response> {
    if request.body().is_end_stream() {
        return Ok(request);
    }
    let mut limit = MAX_UNAUTHENTICATED_BODY_BYTES;
    if auth::has_credentials(request.headers()) {
        let authentication = match auth::authenticate(state, request.headers()).await {
            Ok(principal) => {
                limit = MAX_BODY_BYTES;
                if let Some(connection) =
                    request.extensions().get::<auth::ConnectionAuthenticated>()
                {
                    connection.mark();
                }
                Authentication::Proven(principal)
            }
            Err(_) => Authentication::Refused,
        };
        request.extensions_mut().insert(authentication);
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let version = request.version();
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large(version));
    }
    let (parts, body) = request.into_parts();
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(Request::from_parts(parts, Body::from(collected.to_bytes()))),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large(version)),
        Err(_) => Err(
            RedfishError::new(StatusCode::BAD_REQUEST, "UnrecognizedRequestBody", &[])
                .into_response(),
        ),
    }
}

/// 413; on HTTP/1 also `Connection: close`, since the rest of the body is
/// never read (HTTP/2 resets just the stream).
fn too_large(version: Version) -> Response {
    let mut response =
        RedfishError::new(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge", &[]).into_response();
    if version < Version::HTTP_2 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
