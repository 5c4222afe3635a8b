//! Rules of DSP0266 that hold for every response and request: the
//! `OData-Version` and `Cache-Control` headers, refusal of OData versions
//! other than 4.0 (412), request bodies read after authentication and
//! capped (413, see [`intake`](super::intake)), request bodies of POST,
//! PATCH and PUT only as `application/json` (415), a `Retry-After` on
//! every 503, and Redfish error bodies where a layer answered on its own
//! (405).

use axum::body::HttpBody;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
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
    if let Err(refused) = media_type(request.method(), request.headers(), request.body()) {
        return with_protocol_headers(refused.into_response());
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

/// Longest `Content-Type` value echoed in a refusal.
const MAX_ECHOED_MEDIA_TYPE: usize = 64;

/// DSP0266: a request body is JSON, `Content-Type: application/json`
/// (parameters allowed, a charset only UTF-8); anything else is 415. The
/// header is required with a body (DSP0266 "Request headers"), so a
/// body without it is 415 too (redfishtool, sushy, python-redfish and
/// curl's `-H` all send it). A body-less POST (an action without
/// parameters) needs none. The service has no multipart endpoint (no
/// UpdateService), so nothing else is accepted anywhere.
fn media_type<B: HttpBody>(
    method: &Method,
    headers: &HeaderMap,
    body: &B,
) -> Result<(), RedfishError> {
    if !matches!(*method, Method::POST | Method::PATCH | Method::PUT) || body.is_end_stream() {
        return Ok(());
    }
    let unsupported = |key: &str, arg: &str| {
        RedfishError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, key, &[arg])
            .with_detail("Request bodies are application/json.")
    };
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(unsupported("HeaderMissing", "Content-Type"));
    };
    let text = value.to_str().unwrap_or("");
    if is_json_media_type(text) {
        return Ok(());
    }
    let mut shown: String = String::from_utf8_lossy(value.as_bytes())
        .chars()
        .take(MAX_ECHOED_MEDIA_TYPE)
        .collect();
    if shown.len() < value.len() {
        shown.push_str("...");
    }
    Err(unsupported(
        "HeaderInvalid",
        &format!("Content-Type: {shown}"),
    ))
}

/// `application/json`, any case, with optional parameters of which a
/// `charset` must be UTF-8.
pub fn is_json_media_type(value: &str) -> bool {
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return false;
    }
    parts.all(|parameter| {
        let Some((name, value)) = parameter.split_once('=') else {
            return parameter.trim().is_empty();
        };
        let value = value.trim().trim_matches('"');
        !name.trim().eq_ignore_ascii_case("charset")
            || value.eq_ignore_ascii_case("utf-8")
            || value.eq_ignore_ascii_case("utf8")
    })
}

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
    use axum::body::Body;

    fn refusal(method: Method, content_type: Option<&str>, body: &'static str) -> Option<String> {
        let mut headers = HeaderMap::new();
        if let Some(value) = content_type {
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
        }
        media_type(&method, &headers, &Body::from(body))
            .err()
            .map(|e| {
                assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
                e.messages[0]["MessageId"].as_str().unwrap().to_string()
            })
    }

    #[test]
    fn bodies_are_json_by_their_content_type() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON;charset=\"UTF-8\"",
            "application/json;",
        ] {
            assert_eq!(refusal(Method::PATCH, Some(ok), "{}"), None, "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/json-patch+json",
            "application/jsonx",
            "application/json; charset=iso-8859-1",
            "multipart/form-data; boundary=x",
        ] {
            assert_eq!(
                refusal(Method::POST, Some(bad), "{}").as_deref(),
                Some("Base.1.22.HeaderInvalid"),
                "{bad}"
            );
        }
        assert_eq!(
            refusal(Method::PUT, None, "{}").as_deref(),
            Some("Base.1.22.HeaderMissing")
        );
        // No body, or a method without one: nothing to describe.
        assert_eq!(refusal(Method::POST, None, ""), None);
        assert_eq!(refusal(Method::GET, Some("text/plain"), "x"), None);
        assert_eq!(refusal(Method::DELETE, None, "x"), None);
    }

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
