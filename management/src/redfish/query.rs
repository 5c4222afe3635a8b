//! Query parameters (DSP0266 "Query parameters"): `only`, `$filter`,
//! `$skip`/`$top`, `$expand` (`*`, `.`, `~`, `$levels`) and `$select`.
//!
//! They are applied to the JSON a handler produced, so every resource
//! supports them alike. Expanding and filtering need other resources: the
//! layer fetches them through the service's own router with the caller's
//! credentials, so privileges hold for every resource a response includes.

use std::collections::HashSet;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use serde_json::{Map, Value};
use tower::ServiceExt;

use super::message::RedfishError;

/// Deepest `$levels` accepted.
pub const MAX_LEVELS: u32 = 6;
/// Most resources one response may pull in through `$expand` or `$filter`.
pub const MAX_FETCHES: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpandKind {
    /// `*`: every hyperlink.
    All,
    /// `.`: subordinate resources (not under `Links`).
    Subordinate,
    /// `~`: links under `Links` only.
    Links,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub only: bool,
    pub filter: Option<Filter>,
    pub skip: Option<usize>,
    pub top: Option<usize>,
    pub expand: Option<(ExpandKind, u32)>,
    pub select: Option<Vec<Vec<String>>>,
}

fn bad_value(value: &str, parameter: &str) -> RedfishError {
    RedfishError::new(
        StatusCode::BAD_REQUEST,
        "QueryParameterValueFormatError",
        &[value, parameter],
    )
}

/// Percent-decodes a query component (`+` is a space).
pub fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|d| d as u8)
}

impl Query {
    /// Parses a query string. `None` when it holds no query parameter of
    /// ours; 501 for `$` parameters not implemented, 400 for bad values.
    pub fn parse(raw: &str) -> Result<Option<Self>, RedfishError> {
        let mut query = Query {
            only: false,
            filter: None,
            skip: None,
            top: None,
            expand: None,
            select: None,
        };
        let mut any = false;
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let (name, value) = (decode(name), decode(value));
            any |= name.starts_with('$') || name == "only" || name == "excerpt";
            match name.as_str() {
                "only" if value.is_empty() => query.only = true,
                "only" => return Err(bad_value(&value, "only")),
                "$skip" => query.skip = Some(value.parse().map_err(|_| bad_value(&value, &name))?),
                "$top" => query.top = Some(value.parse().map_err(|_| bad_value(&value, &name))?),
                "$expand" => query.expand = Some(parse_expand(&value)?),
                "$select" => query.select = Some(parse_select(&value)?),
                "$filter" => query.filter = Some(Filter::parse(&value)?),
                _ if name.starts_with('$') || name == "excerpt" => {
                    return Err(RedfishError::new(
                        StatusCode::NOT_IMPLEMENTED,
                        "QueryParameterUnsupported",
                        &[&name],
                    ));
                }
                _ => {}
            }
        }
        if query.only
            && (query.filter.is_some()
                || query.skip.is_some()
                || query.top.is_some()
                || query.expand.is_some()
                || query.select.is_some())
        {
            return Err(RedfishError::new(
                StatusCode::BAD_REQUEST,
                "QueryCombinationInvalid",
                &[],
            ));
        }
        Ok(any.then_some(query))
    }
}

fn parse_expand(value: &str) -> Result<(ExpandKind, u32), RedfishError> {
    let bad = || bad_value(value, "$expand");
    let (kind, rest) = match value.chars().next() {
        Some('*') => (ExpandKind::All, &value[1..]),
        Some('.') => (ExpandKind::Subordinate, &value[1..]),
        Some('~') => (ExpandKind::Links, &value[1..]),
        _ => return Err(bad()),
    };
    let levels = if rest.is_empty() {
        1
    } else {
        let inner = rest
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|r| r.strip_prefix("$levels="))
            .ok_or_else(bad)?;
        let levels: u32 = inner.parse().map_err(|_| bad())?;
        if levels == 0 || levels > MAX_LEVELS {
            return Err(bad());
        }
        levels
    };
    Ok((kind, levels))
}

fn parse_select(value: &str) -> Result<Vec<Vec<String>>, RedfishError> {
    let paths: Vec<Vec<String>> = value
        .split(',')
        .map(|p| p.trim().split('/').map(str::to_string).collect::<Vec<_>>())
        .collect();
    let valid = |segment: &String| {
        !segment.is_empty()
            && segment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '@' | '.' | '#'))
    };
    if paths.is_empty() || paths.iter().any(|p| !p.iter().all(valid)) {
        return Err(bad_value(value, "$select"));
    }
    Ok(paths)
}

// ---------------------------------------------------------------- $filter

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    Compare(Operand, CompareOp, Operand),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Property(Vec<String>),
    Literal(Value),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    Word(String),
    Text(String),
    Number(f64),
}

fn tokens(text: &str) -> Option<Vec<Token>> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' => i += 1,
            '(' => {
                out.push(Token::Open);
                i += 1;
            }
            ')' => {
                out.push(Token::Close);
                i += 1;
            }
            '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return None,
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            s.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(&other) => {
                            s.push(other);
                            i += 1;
                        }
                    }
                }
                out.push(Token::Text(s));
            }
            c if c.is_ascii_digit() || c == '-' => {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_digit()
                        || matches!(chars[i], '.' | 'e' | 'E' | '+' | '-'))
                {
                    i += 1;
                }
                let number: String = chars[start..i].iter().collect();
                out.push(Token::Number(number.parse().ok()?));
            }
            c if c.is_alphanumeric() || matches!(c, '_' | '@' | '#' | '/' | '.') => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric()
                        || matches!(chars[i], '_' | '@' | '#' | '/' | '.'))
                {
                    i += 1;
                }
                out.push(Token::Word(chars[start..i].iter().collect()));
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Longest `$filter` expression accepted, and its deepest nesting.
const MAX_FILTER_CHARS: usize = 1024;
const MAX_FILTER_DEPTH: usize = 32;

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn peek_word(&self, word: &str) -> bool {
        matches!(self.tokens.get(self.at), Some(Token::Word(w)) if w == word)
    }

    fn or(&mut self) -> Option<Filter> {
        let mut left = self.and()?;
        while self.peek_word("or") {
            self.at += 1;
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Some(left)
    }

    fn and(&mut self) -> Option<Filter> {
        let mut left = self.not()?;
        while self.peek_word("and") {
            self.at += 1;
            left = Filter::And(Box::new(left), Box::new(self.not()?));
        }
        Some(left)
    }

    fn not(&mut self) -> Option<Filter> {
        self.depth += 1;
        if self.depth > MAX_FILTER_DEPTH {
            return None;
        }
        let result = if self.peek_word("not") {
            self.at += 1;
            self.not().map(|f| Filter::Not(Box::new(f)))
        } else {
            self.primary()
        };
        self.depth -= 1;
        result
    }

    fn primary(&mut self) -> Option<Filter> {
        if self.tokens.get(self.at) == Some(&Token::Open) {
            self.at += 1;
            let inner = self.or()?;
            if self.tokens.get(self.at) != Some(&Token::Close) {
                return None;
            }
            self.at += 1;
            return Some(inner);
        }
        let left = self.operand()?;
        let op = match self.tokens.get(self.at) {
            Some(Token::Word(w)) => match w.as_str() {
                "eq" => CompareOp::Eq,
                "ne" => CompareOp::Ne,
                "gt" => CompareOp::Gt,
                "ge" => CompareOp::Ge,
                "lt" => CompareOp::Lt,
                "le" => CompareOp::Le,
                _ => return None,
            },
            _ => return None,
        };
        self.at += 1;
        let right = self.operand()?;
        Some(Filter::Compare(left, op, right))
    }

    fn operand(&mut self) -> Option<Operand> {
        let token = self.tokens.get(self.at)?.clone();
        self.at += 1;
        Some(match token {
            Token::Text(s) => Operand::Literal(Value::String(s)),
            Token::Number(n) => {
                Operand::Literal(serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number))
            }
            Token::Word(w) => match w.as_str() {
                "true" => Operand::Literal(Value::Bool(true)),
                "false" => Operand::Literal(Value::Bool(false)),
                "null" => Operand::Literal(Value::Null),
                "and" | "or" | "not" | "eq" | "ne" | "gt" | "ge" | "lt" | "le" => return None,
                _ => Operand::Property(w.split('/').map(str::to_string).collect()),
            },
            Token::Open | Token::Close => return None,
        })
    }
}

impl Filter {
    pub fn parse(text: &str) -> Result<Self, RedfishError> {
        let bad = || bad_value(text, "$filter");
        if text.len() > MAX_FILTER_CHARS {
            return Err(bad());
        }
        let mut parser = Parser {
            tokens: tokens(text).ok_or_else(bad)?,
            at: 0,
            depth: 0,
        };
        let filter = parser.or().ok_or_else(bad)?;
        if parser.at != parser.tokens.len() {
            return Err(bad());
        }
        Ok(filter)
    }

    pub fn matches(&self, resource: &Value) -> bool {
        match self {
            Filter::And(a, b) => a.matches(resource) && b.matches(resource),
            Filter::Or(a, b) => a.matches(resource) || b.matches(resource),
            Filter::Not(f) => !f.matches(resource),
            Filter::Compare(left, op, right) => {
                let value = |operand: &Operand| match operand {
                    Operand::Literal(v) => v.clone(),
                    Operand::Property(path) => path
                        .iter()
                        .try_fold(resource, |v, key| v.get(key))
                        .cloned()
                        .unwrap_or(Value::Null),
                };
                compare(&value(left), *op, &value(right))
            }
        }
    }
}

fn compare(left: &Value, op: CompareOp, right: &Value) -> bool {
    use std::cmp::Ordering;
    let ordering = match (left, right) {
        (Value::Number(a), Value::Number(b)) => a
            .as_f64()
            .zip(b.as_f64())
            .and_then(|(a, b)| a.partial_cmp(&b)),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        _ => None,
    };
    match op {
        CompareOp::Eq => ordering == Some(Ordering::Equal),
        CompareOp::Ne => ordering != Some(Ordering::Equal),
        CompareOp::Gt => ordering == Some(Ordering::Greater),
        CompareOp::Ge => matches!(ordering, Some(Ordering::Greater | Ordering::Equal)),
        CompareOp::Lt => ordering == Some(Ordering::Less),
        CompareOp::Le => matches!(ordering, Some(Ordering::Less | Ordering::Equal)),
    }
}

// ------------------------------------------------------------ application

/// Fetches resources through the service's own router.
pub struct Fetcher<'a> {
    pub router: &'a Router,
    /// The caller's credentials, forwarded to every fetch.
    pub credentials: HeaderMap,
    /// The caller, authenticated once: every fetch reuses it instead of
    /// authenticating again (HTTP Basic would run argon2 once per member).
    pub authentication: Option<crate::auth::Authentication>,
    pub fetched: usize,
}

impl Fetcher<'_> {
    pub async fn get(&mut self, uri: &str) -> Option<Value> {
        if self.fetched >= MAX_FETCHES || !uri.starts_with("/redfish/v1") || uri.contains('?') {
            return None;
        }
        self.fetched += 1;
        let mut request = Request::get(uri).body(Body::empty()).ok()?;
        *request.headers_mut() = self.credentials.clone();
        if let Some(authentication) = &self.authentication {
            request.extensions_mut().insert(authentication.clone());
        }
        let response = self.router.clone().oneshot(request).await.ok()?;
        if response.status() != StatusCode::OK {
            return None;
        }
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
            .await
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

fn is_reference(value: &Value) -> Option<&str> {
    match value {
        Value::Object(map) if map.len() == 1 => map.get("@odata.id")?.as_str(),
        _ => None,
    }
}

/// Applies `query` to the body of `path`.
pub async fn apply(
    query: &Query,
    path: &str,
    mut body: Value,
    fetcher: &mut Fetcher<'_>,
) -> Result<Value, RedfishError> {
    let is_collection = body.get("Members").is_some_and(Value::is_array);
    // DSP0266: `only`, `$filter`, `$skip` and `$top` apply to resource
    // collections; on any other resource they are refused, not ignored.
    if !is_collection
        && (query.only || query.filter.is_some() || query.skip.is_some() || query.top.is_some())
    {
        return Err(RedfishError::bad_request(
            "QueryNotSupportedOnResource",
            &[],
        ));
    }
    if query.only {
        if let Some(Value::Array(members)) = body.get("Members")
            && members.len() == 1
            && let Some(uri) = is_reference(&members[0])
        {
            let uri = uri.to_string();
            if let Some(member) = fetcher.get(&uri).await {
                return Ok(member);
            }
        }
        return Ok(body);
    }
    if let Some(filter) = &query.filter {
        let members = body["Members"].as_array().cloned().unwrap_or_default();
        let mut kept = Vec::new();
        for member in members {
            let Some(uri) = is_reference(&member).map(str::to_string) else {
                continue;
            };
            if let Some(resource) = fetcher.get(&uri).await
                && filter.matches(&resource)
            {
                kept.push(member);
            }
        }
        body["Members@odata.count"] = Value::from(kept.len());
        body["Members"] = Value::Array(kept);
    }
    if query.skip.is_some() || query.top.is_some() {
        let members = body["Members"].as_array().cloned().unwrap_or_default();
        let skip = query.skip.unwrap_or(0);
        let rest: Vec<Value> = members.into_iter().skip(skip).collect();
        let page: Vec<Value> = match query.top {
            Some(top) => rest.iter().take(top).cloned().collect(),
            None => rest.clone(),
        };
        if let Some(top) = query.top
            && rest.len() > top
        {
            body["Members@odata.nextLink"] =
                Value::String(format!("{path}?$skip={}&$top={top}", skip + top));
        }
        body["Members"] = Value::Array(page);
    }
    if let Some((kind, levels)) = query.expand {
        let mut seen = HashSet::new();
        seen.insert(path.trim_end_matches('/').to_string());
        expand(&mut body, kind, levels, false, fetcher, &mut seen).await;
    }
    if let Some(paths) = &query.select {
        body = select(body, paths);
    }
    Ok(body)
}

/// Replaces references with the resources they point to, `levels` deep.
fn expand<'a>(
    value: &'a mut Value,
    kind: ExpandKind,
    levels: u32,
    under_links: bool,
    fetcher: &'a mut Fetcher<'_>,
    seen: &'a mut HashSet<String>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
    Box::pin(async move {
        if levels == 0 {
            return;
        }
        let wanted = match kind {
            ExpandKind::All => true,
            ExpandKind::Subordinate => !under_links,
            ExpandKind::Links => under_links,
        };
        if let Some(uri) = is_reference(value).map(str::to_string) {
            if wanted
                && !seen.contains(&uri)
                && let Some(mut resource) = fetcher.get(&uri).await
            {
                seen.insert(uri.clone());
                expand(&mut resource, kind, levels - 1, false, fetcher, seen).await;
                seen.remove(&uri);
                *value = resource;
            }
            return;
        }
        match value {
            Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    if key.starts_with('@') || key.contains("@odata.") {
                        continue;
                    }
                    let links = under_links || key == "Links";
                    expand(child, kind, levels, links, fetcher, seen).await;
                }
            }
            Value::Array(items) => {
                for item in items {
                    expand(item, kind, levels, under_links, fetcher, seen).await;
                }
            }
            _ => {}
        }
    })
}

/// Keeps the selected properties (and the OData annotations).
fn select(body: Value, paths: &[Vec<String>]) -> Value {
    let Value::Object(map) = body else {
        return body;
    };
    let mut out = Map::new();
    for (key, value) in &map {
        if matches!(
            key.as_str(),
            "@odata.id" | "@odata.type" | "@odata.context" | "@odata.etag"
        ) {
            out.insert(key.clone(), value.clone());
        }
    }
    for path in paths {
        let Some(value) = map.get(&path[0]) else {
            continue;
        };
        if path.len() == 1 {
            out.insert(path[0].clone(), value.clone());
        } else {
            let nested = select(value.clone(), &[path[1..].to_vec()]);
            match (out.get_mut(&path[0]), nested) {
                (Some(Value::Object(existing)), Value::Object(more)) => existing.extend(more),
                (_, nested) => {
                    out.insert(path[0].clone(), nested);
                }
            }
        }
    }
    Value::Object(out)
}

/// Middleware: takes the query off a GET, lets the handler answer as if
/// there were none, then applies the query to the JSON it produced.
pub async fn layer(
    axum::extract::State(state): axum::extract::State<crate::state::AppState>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    // The event stream reads its own `$filter` (DSP0266's SSE filter).
    if request.uri().path() == crate::resources::event_service::SSE {
        return next.run(request).await;
    }
    let Some(raw) = request.uri().query().map(str::to_string) else {
        return next.run(request).await;
    };
    let query = match Query::parse(&raw) {
        Ok(Some(query)) => query,
        Ok(None) => return next.run(request).await,
        Err(error) => return error.into_response(),
    };
    let method = request.method().clone();
    if method != axum::http::Method::GET && method != axum::http::Method::HEAD {
        return RedfishError::new(StatusCode::BAD_REQUEST, "QueryNotSupportedOnOperation", &[])
            .into_response();
    }
    let path = request.uri().path().to_string();
    let Ok(bare) = path.parse() else {
        return next.run(request).await;
    };
    *request.uri_mut() = bare;
    let mut credentials = HeaderMap::new();
    for name in [
        axum::http::header::AUTHORIZATION,
        "x-auth-token".parse().expect("header name"),
    ] {
        if let Some(value) = request.headers().get(&name) {
            credentials.insert(name, value.clone());
        }
    }
    let response = next.run(request).await;
    let json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    if response.status() != StatusCode::OK || !json {
        return response;
    }
    let Some(router) = state.router.get() else {
        return response;
    };
    let (mut parts, body) = response.into_parts();
    // The resource's guard authenticated the caller; an open resource's
    // did not, so that is done here, once.
    use crate::auth::Authentication;
    let authentication = match parts.extensions.get::<crate::auth::Principal>() {
        Some(principal) => Some(Authentication::Proven(principal.clone())),
        None if crate::auth::has_credentials(&credentials) => {
            match crate::auth::authenticate(&state, &credentials).await {
                Ok(principal) => Some(Authentication::Proven(principal)),
                Err(_) => Some(Authentication::Refused),
            }
        }
        None => None,
    };
    let Ok(bytes) = axum::body::to_bytes(body, 16 << 20).await else {
        return RedfishError::internal("resource body unreadable").into_response();
    };
    let Ok(value) = serde_json::from_slice::<Value>(&bytes) else {
        return RedfishError::internal("resource body is not JSON").into_response();
    };
    let mut fetcher = Fetcher {
        router,
        credentials,
        authentication,
        fetched: 0,
    };
    let value = match apply(&query, &path, value, &mut fetcher).await {
        Ok(value) => value,
        Err(error) => return error.into_response(),
    };
    // The ETag stays the resource's: a client may GET a selection and
    // PATCH with If-Match of what it saw.
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let body = serde_json::to_vec(&value).expect("JSON values serialise");
    axum::response::Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parameters_parse_and_bad_values_are_refused() {
        let q = Query::parse("$expand=.($levels=2)&$select=Name,Status/Health&$top=2&$skip=1")
            .unwrap()
            .unwrap();
        assert_eq!(q.expand, Some((ExpandKind::Subordinate, 2)));
        assert_eq!(q.select.unwrap()[1], vec!["Status", "Health"]);
        assert_eq!((q.top, q.skip), (Some(2), Some(1)));
        assert!(Query::parse("x=1").unwrap().is_none(), "not ours");
        assert_eq!(
            Query::parse("$top=-1").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            Query::parse("$expand=x").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            Query::parse("$expand=*($levels=99)").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            Query::parse("$orderby=Id").unwrap_err().status,
            StatusCode::NOT_IMPLEMENTED
        );
        assert_eq!(
            Query::parse("only&$top=1").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(decode("%24select=Name%2CId"), "$select=Name,Id");
        assert_eq!(decode("%é%"), "%é%");
    }

    #[tokio::test]
    async fn collection_queries_are_refused_on_other_resources() {
        let router = Router::new();
        let mut fetcher = Fetcher {
            router: &router,
            credentials: HeaderMap::new(),
            authentication: None,
            fetched: 0,
        };
        let single = json!({"@odata.id": "/redfish/v1/Systems/appliance", "Id": "appliance"});
        for raw in [
            "only",
            "$top=1",
            "$skip=0",
            "$skip=1&$top=1",
            "$filter=Id eq 'x'",
        ] {
            let query = Query::parse(raw).unwrap().unwrap();
            let error = apply(
                &query,
                "/redfish/v1/Systems/appliance",
                single.clone(),
                &mut fetcher,
            )
            .await
            .unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{raw}");
            assert_eq!(
                error.messages[0]["MessageId"], "Base.1.22.QueryNotSupportedOnResource",
                "{raw}"
            );
        }
        // On a collection they apply; `only` with two members is the
        // collection itself.
        let collection = json!({"@odata.id": "/redfish/v1/Systems", "Members": [
            {"@odata.id": "/redfish/v1/Systems/a"}, {"@odata.id": "/redfish/v1/Systems/b"}]});
        let only = Query::parse("only").unwrap().unwrap();
        let same = apply(
            &only,
            "/redfish/v1/Systems",
            collection.clone(),
            &mut fetcher,
        )
        .await;
        assert_eq!(same.unwrap(), collection);
        let top = Query::parse("$top=1").unwrap().unwrap();
        let page = apply(&top, "/redfish/v1/Systems", collection, &mut fetcher)
            .await
            .unwrap();
        assert_eq!(page["Members"].as_array().unwrap().len(), 1);
        // `$select` and `$expand` stay usable on any resource.
        let select = Query::parse("$select=Id").unwrap().unwrap();
        assert!(
            apply(
                &select,
                "/redfish/v1/Systems/appliance",
                single,
                &mut fetcher
            )
            .await
            .is_ok()
        );
    }

    #[test]
    fn filters_evaluate_like_odata() {
        let resource = json!({"Id": "2", "Enabled": true, "Count": 5, "Status": {"Health": "OK"}});
        let yes = |f: &str| Filter::parse(f).unwrap().matches(&resource);
        assert!(yes("Id eq '2'"));
        assert!(yes("Count gt 4 and Count le 5"));
        assert!(yes("not (Enabled eq false)"));
        assert!(yes("Status/Health eq 'OK' or Id eq 'x'"));
        assert!(!yes("Missing eq 'x'"));
        assert!(yes("Missing eq null"));
        assert!(yes("Id ne 'it''s'"));
        for bad in ["Id eq", "(Id eq '2'", "Id === 2", "eq eq eq", "'open"] {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
        let deep = format!("{}Id eq '2'{}", "(".repeat(100), ")".repeat(100));
        assert!(Filter::parse(&deep).is_err(), "nesting is bounded");
    }

    #[test]
    fn select_keeps_annotations_and_nested_paths() {
        let body = json!({"@odata.id": "/x", "Name": "n", "Status": {"Health": "OK", "State": "Enabled"}, "Other": 1});
        let selected = select(
            body,
            &[vec!["Status".into(), "Health".into()], vec!["Name".into()]],
        );
        assert_eq!(
            selected,
            json!({"@odata.id": "/x", "Name": "n", "Status": {"Health": "OK"}})
        );
    }
}
