//! Rules of DSP0266 that hold for every response and request: the
//! `OData-Version` and `Cache-Control` headers, refusal of OData versions
//! other than 4.0 (412) and of query parameters this service does not
//! implement (501), and Redfish error bodies where the router answered
//! 404 or 405 on its own.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::message::RedfishError;

/// Query parameters a client may send (the service's own and harmless
/// non-`$` ones are passed to handlers; other `$` ones get 501).
const SUPPORTED_QUERY: &[&str] = &[];

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
    if let Some(query) = request.uri().query() {
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let name = pair.split('=').next().unwrap_or("");
            let name = percent_decode(name);
            if (name.starts_with('$') || name == "only" || name == "excerpt")
                && !SUPPORTED_QUERY.contains(&name.as_str())
            {
                return RedfishError::new(
                    StatusCode::NOT_IMPLEMENTED,
                    "QueryParameterUnsupported",
                    &[&name],
                )
                .into_response();
            }
        }
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

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(high << 4 | low);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_of_query_names() {
        assert_eq!(percent_decode("%24select"), "$select");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("bad%2"), "bad%2");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(
            percent_decode("%é1"),
            "%é1",
            "multi-byte text after % is kept"
        );
    }
}
