//! JSON-RPC 2.0 messages and error codes.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub const VERSION: &str = "2.0";

/// The codes JSON-RPC 2.0 reserves.
pub mod codes {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
}

/// A JSON-RPC error object. Semantic failures use SPDK's convention of a
/// negative errno as the code (`-ENODEV` for a missing bdev, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} (code {code})")]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    pub fn parse_error(detail: impl std::fmt::Display) -> Self {
        Self::new(codes::PARSE_ERROR, format!("Parse error: {detail}"))
    }

    pub fn invalid_request(detail: impl std::fmt::Display) -> Self {
        Self::new(codes::INVALID_REQUEST, format!("Invalid request: {detail}"))
    }

    pub fn method_not_found(method: &str) -> Self {
        Self::new(
            codes::METHOD_NOT_FOUND,
            format!("Method not found: {method}"),
        )
    }

    pub fn invalid_params(detail: impl std::fmt::Display) -> Self {
        Self::new(
            codes::INVALID_PARAMS,
            format!("Invalid parameters: {detail}"),
        )
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::new(codes::INTERNAL_ERROR, format!("Internal error: {detail}"))
    }

    /// A semantic failure reported SPDK-style as `-errno`.
    pub fn errno(errno: nix::errno::Errno, message: impl Into<String>) -> Self {
        Self::new(-(errno as i64), message)
    }
}

/// A validated request. `id: None` marks a notification (no response).
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: Option<Value>,
    pub method: String,
    pub params: Option<Value>,
}

impl Request {
    /// Checks a received value against the JSON-RPC 2.0 request rules. On
    /// failure returns the id to answer with (null when unknown) and the error.
    pub fn from_value(value: Value) -> Result<Self, (Value, RpcError)> {
        let Value::Object(mut object) = value else {
            return Err((
                Value::Null,
                RpcError::invalid_request("a request must be a JSON object"),
            ));
        };
        let id = object.remove("id");
        let reply_id = id.clone().unwrap_or(Value::Null);
        let fail = |detail: &str| Err((reply_id.clone(), RpcError::invalid_request(detail)));
        if let Some(id) = &id
            && !(id.is_string() || id.is_number() || id.is_null())
        {
            return Err((
                Value::Null,
                RpcError::invalid_request("\"id\" must be a string, number or null"),
            ));
        }
        match object.remove("jsonrpc") {
            Some(Value::String(v)) if v == VERSION => {}
            _ => return fail("\"jsonrpc\" must be \"2.0\""),
        }
        let method = match object.remove("method") {
            Some(Value::String(method)) => method,
            _ => return fail("\"method\" must be a string"),
        };
        let params = object.remove("params");
        if let Some(params) = &params
            && !(params.is_object() || params.is_array())
        {
            return fail("\"params\" must be an object or an array");
        }
        if let Some(extra) = object.keys().next() {
            return fail(&format!("unknown member \"{extra}\""));
        }
        Ok(Self { id, method, params })
    }

    pub fn to_value(&self) -> Value {
        let mut object = Map::new();
        object.insert("jsonrpc".into(), VERSION.into());
        object.insert("method".into(), self.method.clone().into());
        if let Some(params) = &self.params {
            object.insert("params".into(), params.clone());
        }
        if let Some(id) = &self.id {
            object.insert("id".into(), id.clone());
        }
        Value::Object(object)
    }
}

pub fn success(id: Value, result: Value) -> Value {
    json!({"jsonrpc": VERSION, "id": id, "result": result})
}

pub fn failure(id: Value, error: &RpcError) -> Value {
    json!({"jsonrpc": VERSION, "id": id, "error": error})
}

/// Deserialises a method's params; absent params read as `{}` so methods
/// whose parameters are all optional need none. Mismatches are -32602 with
/// serde's description (which names the field).
pub fn parse_params<T: DeserializeOwned>(params: Option<Value>) -> Result<T, RpcError> {
    let params = params.unwrap_or_else(|| Value::Object(Map::new()));
    serde_json::from_value(params).map_err(RpcError::invalid_params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_request_and_notification() {
        let r = Request::from_value(json!({"jsonrpc":"2.0","method":"m","params":{"a":1},"id":7}))
            .unwrap();
        assert_eq!(r.id, Some(json!(7)));
        assert_eq!(r.method, "m");
        assert_eq!(Request::from_value(r.to_value()).unwrap(), r);
        let n = Request::from_value(json!({"jsonrpc":"2.0","method":"m"})).unwrap();
        assert_eq!(n.id, None);
    }

    #[test]
    fn malformed_requests_are_invalid_requests() {
        for bad in [
            json!([1]),
            json!("x"),
            json!({"method":"m","id":1}),
            json!({"jsonrpc":"1.0","method":"m","id":1}),
            json!({"jsonrpc":"2.0","method":5,"id":1}),
            json!({"jsonrpc":"2.0","method":"m","params":3,"id":1}),
            json!({"jsonrpc":"2.0","method":"m","id":{"x":1}}),
            json!({"jsonrpc":"2.0","method":"m","id":1,"extra":true}),
        ] {
            let (_, err) = Request::from_value(bad.clone()).unwrap_err();
            assert_eq!(err.code, codes::INVALID_REQUEST, "{bad}");
        }
    }

    #[test]
    fn params_errors_name_the_field() {
        #[derive(Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct P {
            cluster: u32,
        }
        let err = parse_params::<P>(None).unwrap_err();
        assert_eq!(err.code, codes::INVALID_PARAMS);
        assert!(err.message.contains("cluster"), "{}", err.message);
        let err = parse_params::<P>(Some(json!({"cluster": "one"}))).unwrap_err();
        assert!(err.message.contains("invalid type"), "{}", err.message);
        assert_eq!(
            parse_params::<P>(Some(json!({"cluster": 2})))
                .unwrap()
                .cluster,
            2
        );
    }

    #[test]
    fn errno_codes_are_negative_errno() {
        assert_eq!(RpcError::errno(nix::errno::Errno::ENODEV, "no").code, -19);
    }
}
