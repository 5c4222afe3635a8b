//! The OpenAPI 3.1 document of the service (utoipa), generated from the
//! routes as they are registered and served at `/redfish/v1/openapi.json`
//! without credentials. Payload schemas are the DMTF's: each operation
//! points at the resource's JSON schema under `/redfish/v1/JsonSchemas`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{
    ComponentsBuilder, InfoBuilder, OpenApiBuilder, PathsBuilder, ResponseBuilder,
};

use super::RouteDoc;
use crate::state::AppState;

fn method(name: &str) -> Option<HttpMethod> {
    Some(match name {
        "GET" => HttpMethod::Get,
        "HEAD" => HttpMethod::Head,
        "POST" => HttpMethod::Post,
        "PATCH" => HttpMethod::Patch,
        "DELETE" => HttpMethod::Delete,
        _ => return None,
    })
}

/// Path parameters (`{id}`) of a route template.
fn parameters(path: &str) -> Vec<String> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(str::to_string)
        .collect()
}

fn operation(route: &RouteDoc, name: &str) -> utoipa::openapi::path::Operation {
    let what = route.entity.unwrap_or("the service document");
    let open = route.entity.is_none() || route.open_methods.split(", ").any(|m| m == name);
    let mut builder = OperationBuilder::new()
        .summary(Some(format!("{name} {what}")))
        .tag(route.entity.unwrap_or("Service"))
        .response("200", ResponseBuilder::new().description("Success"))
        .response(
            "400",
            ResponseBuilder::new().description("Bad request (Base registry message)"),
        )
        .response(
            "404",
            ResponseBuilder::new().description("No such resource"),
        )
        .response(
            "405",
            ResponseBuilder::new().description("Method not allowed; see Allow"),
        );
    if matches!(name, "POST" | "PATCH") {
        builder = builder
            .response(
                "415",
                ResponseBuilder::new()
                    .description("A body that is not Content-Type application/json"),
            )
            .response(
                "503",
                ResponseBuilder::new()
                    .description("Temporarily unavailable; retry after Retry-After seconds"),
            );
    }
    match name {
        "POST" => {
            builder = builder.response(
                "201",
                ResponseBuilder::new().description("Created; see Location"),
            )
        }
        "DELETE" => {
            builder = builder.response("204", ResponseBuilder::new().description("Deleted"))
        }
        "PATCH" => {
            builder = builder.response(
                "412",
                ResponseBuilder::new().description("If-Match does not match the ETag"),
            )
        }
        _ => {
            builder = builder.response(
                "304",
                ResponseBuilder::new().description("Not modified (If-None-Match)"),
            )
        }
    }
    if !open {
        builder = builder
            .response(
                "401",
                ResponseBuilder::new().description("No valid credentials"),
            )
            .response(
                "403",
                ResponseBuilder::new().description("Insufficient privilege"),
            )
            .securities(Some([
                SecurityRequirement::new("session", Vec::<String>::new()),
                SecurityRequirement::new("basic", Vec::<String>::new()),
            ]));
    }
    for parameter in parameters(&route.path) {
        builder = builder.parameter(
            ParameterBuilder::new()
                .name(parameter)
                .parameter_in(ParameterIn::Path)
                .required(utoipa::openapi::Required::True),
        );
    }
    builder.build()
}

/// The document for `routes`.
pub fn document(routes: &[RouteDoc]) -> Value {
    let mut paths = PathsBuilder::new();
    for route in routes {
        let mut item: Option<PathItem> = None;
        for name in route.methods.split(", ") {
            let Some(http) = method(name) else { continue };
            let op = operation(route, name);
            item = Some(match item {
                None => PathItem::new(http, op),
                Some(mut existing) => {
                    existing.merge_operations(PathItem::new(http, op));
                    existing
                }
            });
        }
        if let Some(item) = item {
            paths = paths.path(route.path.clone(), item);
        }
    }
    let components = ComponentsBuilder::new()
        .security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Auth-Token"))),
        )
        .security_scheme(
            "basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        )
        .build();
    let document = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Shoal Redfish service")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Redfish (DSP0266) service of the Shoal storage appliance. Payloads follow the DMTF schemas served under /redfish/v1/JsonSchemas.",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components))
        .build();
    serde_json::to_value(&document).expect("an OpenAPI document serialises")
}

pub async fn serve(State(state): State<AppState>) -> Response {
    axum::Json(state.openapi.get().cloned().unwrap_or(Value::Null)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_and_method_is_documented() {
        let routes = vec![
            RouteDoc {
                path: "/redfish/v1/Things/{id}".into(),
                methods: "GET, HEAD, PATCH",
                entity: Some("Thing"),
                open_methods: "",
            },
            RouteDoc {
                path: "/redfish/v1".into(),
                methods: "GET, HEAD",
                entity: None,
                open_methods: "GET, HEAD",
            },
        ];
        let doc = document(&routes);
        assert_eq!(doc["openapi"], "3.1.0");
        let thing = &doc["paths"]["/redfish/v1/Things/{id}"];
        for m in ["get", "head", "patch"] {
            assert!(thing[m].is_object(), "{m} missing: {thing}");
        }
        assert_eq!(thing["patch"]["parameters"][0]["name"], "id");
        assert!(thing["patch"]["responses"]["415"].is_object());
        assert!(thing["patch"]["responses"]["503"].is_object());
        assert!(thing["get"]["responses"]["415"].is_null());
        assert!(thing["get"]["security"].is_array());
        assert!(doc["paths"]["/redfish/v1"]["get"]["security"].is_null());
    }
}
