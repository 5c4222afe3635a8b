//! The Redfish service: protocol rules, messages, and the router that
//! puts every resource at its URI behind the right guard.

pub mod body;
pub mod message;
pub mod protocol;
pub mod query;
pub mod resource;

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::auth;
use crate::resources::{
    account_service, chassis, managers, odata, registries, schemas, service_root, session_service,
    systems,
};
use crate::state::AppState;
use message::RedfishError;

/// Largest request body accepted (413 above).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Longest time a request may take end to end.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Every route of the service. Routes under a guard need credentials and
/// the privilege registry's privileges for their resource type; the rest
/// (versions, service root, OData documents, CSDL, login) need none.
pub fn router(state: AppState) -> Router {
    const READ: &str = "GET, HEAD";
    const READ_PATCH: &str = "GET, HEAD, PATCH";
    const COLLECTION_POST: &str = "GET, HEAD, POST";
    let guard = |entity: &'static str, methods: &'static str, routes: MethodRouter<AppState>| {
        allow(methods, routes)
            .route_layer(from_fn_with_state((state.clone(), entity), auth::authorize))
    };
    let open = |routes: MethodRouter<AppState>| allow(READ, routes);
    let sessions = "/redfish/v1/SessionService/Sessions";
    Router::new()
        .route("/redfish", open(get(service_root::versions)))
        .route("/redfish/", open(get(service_root::versions)))
        .route("/redfish/v1", open(get(service_root::get)))
        .route("/redfish/v1/", open(get(service_root::get)))
        .route("/redfish/v1/odata", open(get(odata::service_document)))
        .route("/redfish/v1/$metadata", open(get(odata::metadata)))
        .route("/redfish/v1/schemas/{name}", open(get(schemas::csdl)))
        .route(
            "/redfish/v1/SessionService",
            guard(
                "SessionService",
                READ_PATCH,
                get(session_service::get_service).patch(session_service::patch_service),
            ),
        )
        .route(
            sessions,
            // Logging in is the one write that needs no credentials.
            guard(
                "SessionCollection",
                COLLECTION_POST,
                get(session_service::list),
            )
            .post(session_service::create),
        )
        // POST to a collection's Members property creates a member too.
        .route(
            &format!("{sessions}/Members"),
            allow("POST", post(session_service::create)),
        )
        .route(
            "/redfish/v1/AccountService/Accounts/Members",
            guard(
                "ManagerAccountCollection",
                "POST",
                post(account_service::create),
            ),
        )
        .route(
            &format!("{sessions}/{{id}}"),
            guard(
                "Session",
                "GET, HEAD, DELETE",
                get(session_service::get_one).delete(session_service::delete),
            ),
        )
        .route(
            "/redfish/v1/AccountService",
            guard(
                "AccountService",
                READ_PATCH,
                get(account_service::get_service).patch(account_service::patch_service),
            ),
        )
        .route(
            "/redfish/v1/AccountService/Accounts",
            guard(
                "ManagerAccountCollection",
                COLLECTION_POST,
                get(account_service::list).post(account_service::create),
            ),
        )
        .route(
            "/redfish/v1/AccountService/Accounts/{id}",
            guard(
                "ManagerAccount",
                "GET, HEAD, PATCH, DELETE",
                get(account_service::get_one)
                    .patch(account_service::patch)
                    .delete(account_service::delete),
            ),
        )
        .route(
            "/redfish/v1/AccountService/Roles",
            guard("RoleCollection", READ, get(account_service::roles)),
        )
        .route(
            "/redfish/v1/AccountService/Roles/{id}",
            guard("Role", READ, get(account_service::role)),
        )
        .route(
            "/redfish/v1/Managers",
            guard("ManagerCollection", READ, get(managers::list)),
        )
        .route(
            "/redfish/v1/Managers/{id}",
            guard("Manager", READ, get(managers::get)),
        )
        .route(
            "/redfish/v1/Managers/{id}/NetworkProtocol",
            guard(
                "ManagerNetworkProtocol",
                READ,
                get(managers::network_protocol),
            ),
        )
        .route(
            "/redfish/v1/Chassis",
            guard("ChassisCollection", READ, get(chassis::list)),
        )
        .route(
            "/redfish/v1/Chassis/{id}",
            guard("Chassis", READ, get(chassis::get)),
        )
        .route(
            "/redfish/v1/Systems",
            guard("ComputerSystemCollection", READ, get(systems::list)),
        )
        .route(
            "/redfish/v1/Systems/{id}",
            guard("ComputerSystem", READ, get(systems::get)),
        )
        .route(
            "/redfish/v1/Registries",
            guard("MessageRegistryFileCollection", READ, get(registries::list)),
        )
        .route(
            "/redfish/v1/Registries/{id}",
            guard("MessageRegistryFile", READ, get(registries::get)),
        )
        .route(
            "/redfish/v1/Registries/{id}/{file}",
            guard("MessageRegistry", READ, get(registries::file)),
        )
        .route(
            "/redfish/v1/JsonSchemas",
            guard("JsonSchemaFileCollection", READ, get(schemas::collection)),
        )
        .route(
            "/redfish/v1/JsonSchemas/{name}",
            guard("JsonSchemaFile", READ, get(schemas::file_entry)),
        )
        .route(
            "/redfish/v1/JsonSchemas/{name}/{file}",
            guard("JsonSchemaFile", READ, get(schemas::file)),
        )
        .fallback(not_found)
        .with_state(state.clone())
        .layer(from_fn_with_state(state, query::layer))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(from_fn(protocol::enforce))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
}

/// Answers the methods a route lacks with 405 and an `Allow` of those it
/// has (axum's own 405 carries neither a body nor `Allow`).
fn allow(methods: &'static str, routes: MethodRouter<AppState>) -> MethodRouter<AppState> {
    routes
        .fallback(move || async move { RedfishError::method_not_allowed(methods).into_response() })
}

async fn not_found(uri: axum::http::Uri) -> Response {
    RedfishError::not_found("Resource", uri.path()).into_response()
}
