//! The Redfish service: protocol rules, messages, and the router that
//! puts every resource at its URI behind the right guard.

pub mod body;
pub mod intake;
pub mod message;
pub mod openapi;
pub mod protocol;
pub mod query;
pub mod resource;

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use tower_http::timeout::TimeoutLayer;

use crate::auth;
use crate::resources::{
    account_service, chassis, connections, drives, endpoint_groups, endpoints, event_service,
    fabrics, managers, odata, registries, schemas, service_root, session_service, storage,
    storage_controllers, storage_pools, systems, task_service, volumes,
};
use crate::state::AppState;
use message::RedfishError;

/// Largest request body accepted from an authenticated caller (413
/// above); see `intake` for everyone else.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Longest time a request may take end to end.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One registered route, as the OpenAPI document describes it.
#[derive(Debug, Clone)]
pub struct RouteDoc {
    pub path: String,
    pub methods: &'static str,
    /// The resource type whose privileges guard it; `None`: no credentials.
    pub entity: Option<&'static str>,
    /// Methods of a guarded route that need no credentials (login).
    pub open_methods: &'static str,
}

/// Registers routes and keeps their description, so the router and the
/// OpenAPI document cannot disagree.
struct Routes {
    state: AppState,
    router: Router<AppState>,
    docs: Vec<RouteDoc>,
}

const READ: &str = "GET, HEAD";
const READ_PATCH: &str = "GET, HEAD, PATCH";
const COLLECTION_POST: &str = "GET, HEAD, POST";
const READ_DELETE: &str = "GET, HEAD, DELETE";

impl Routes {
    fn add(mut self, doc: RouteDoc, routes: MethodRouter<AppState>) -> Self {
        self.router = self.router.route(&doc.path, allow(doc.methods, routes));
        self.docs.push(doc);
        self
    }

    /// Readable without credentials.
    fn open(self, path: &str, routes: MethodRouter<AppState>) -> Self {
        let doc = RouteDoc {
            path: path.to_string(),
            methods: READ,
            entity: None,
            open_methods: READ,
        };
        self.add(doc, routes)
    }

    /// Credentials and the privilege registry's privileges for `entity`.
    fn guarded(
        self,
        path: &str,
        entity: &'static str,
        methods: &'static str,
        routes: MethodRouter<AppState>,
    ) -> Self {
        let guard = from_fn_with_state((self.state.clone(), entity), auth::authorize);
        let doc = RouteDoc {
            path: path.to_string(),
            methods,
            entity: Some(entity),
            open_methods: "",
        };
        self.add(doc, routes.route_layer(guard))
    }

    /// A collection whose GET is guarded and whose POST (login) is not.
    fn login(
        self,
        path: &str,
        entity: &'static str,
        list: MethodRouter<AppState>,
        create: MethodRouter<AppState>,
    ) -> Self {
        let guard = from_fn_with_state((self.state.clone(), entity), auth::authorize);
        let doc = RouteDoc {
            path: path.to_string(),
            methods: COLLECTION_POST,
            entity: Some(entity),
            open_methods: "POST",
        };
        self.add(doc, list.route_layer(guard).merge(create))
    }
}

/// Every route of the service. Routes under a guard need credentials and
/// the privilege registry's privileges for their resource type; the rest
/// (versions, service root, OData documents, CSDL, OpenAPI, login) need none.
pub fn router(state: AppState) -> Router {
    let sessions = "/redfish/v1/SessionService/Sessions";
    let routes = Routes {
        state: state.clone(),
        router: Router::new(),
        docs: Vec::new(),
    }
    .open("/redfish", get(service_root::versions))
    .open("/redfish/", get(service_root::versions))
    .open("/redfish/v1", get(service_root::get))
    .open("/redfish/v1/", get(service_root::get))
    .open("/redfish/v1/odata", get(odata::service_document))
    .open("/redfish/v1/$metadata", get(odata::metadata))
    .open("/redfish/v1/openapi.json", get(openapi::serve))
    .open("/redfish/v1/schemas/{name}", get(schemas::csdl))
    .guarded(
        "/redfish/v1/SessionService",
        "SessionService",
        READ_PATCH,
        get(session_service::get_service).patch(session_service::patch_service),
    )
    .login(
        sessions,
        "SessionCollection",
        get(session_service::list),
        post(session_service::create),
    )
    // POST to a collection's Members property creates a member too.
    .add(
        RouteDoc {
            path: format!("{sessions}/Members"),
            methods: "POST",
            entity: None,
            open_methods: "POST",
        },
        post(session_service::create),
    )
    .guarded(
        &format!("{sessions}/{{id}}"),
        "Session",
        "GET, HEAD, DELETE",
        get(session_service::get_one).delete(session_service::delete),
    )
    .guarded(
        "/redfish/v1/AccountService",
        "AccountService",
        READ_PATCH,
        get(account_service::get_service).patch(account_service::patch_service),
    )
    .guarded(
        "/redfish/v1/AccountService/Accounts",
        "ManagerAccountCollection",
        COLLECTION_POST,
        get(account_service::list).post(account_service::create),
    )
    .guarded(
        "/redfish/v1/AccountService/Accounts/Members",
        "ManagerAccountCollection",
        "POST",
        post(account_service::create),
    )
    .guarded(
        "/redfish/v1/AccountService/Accounts/{id}",
        "ManagerAccount",
        "GET, HEAD, PATCH, DELETE",
        get(account_service::get_one)
            .patch(account_service::patch)
            .delete(account_service::delete),
    )
    .guarded(
        "/redfish/v1/AccountService/Roles",
        "RoleCollection",
        READ,
        get(account_service::roles),
    )
    .guarded(
        "/redfish/v1/AccountService/Roles/{id}",
        "Role",
        READ,
        get(account_service::role),
    )
    .guarded(
        "/redfish/v1/Managers",
        "ManagerCollection",
        READ,
        get(managers::list),
    )
    .guarded(
        "/redfish/v1/Managers/{id}",
        "Manager",
        READ_PATCH,
        get(managers::get).patch(managers::patch),
    )
    .guarded(
        "/redfish/v1/Managers/{id}/NetworkProtocol",
        "ManagerNetworkProtocol",
        READ,
        get(managers::network_protocol),
    )
    .guarded(
        "/redfish/v1/Chassis",
        "ChassisCollection",
        READ,
        get(chassis::list),
    )
    .guarded(
        "/redfish/v1/Chassis/{id}",
        "Chassis",
        READ,
        get(chassis::get),
    )
    .guarded(
        "/redfish/v1/Chassis/{id}/Drives",
        "DriveCollection",
        READ,
        get(drives::list),
    )
    .guarded(
        "/redfish/v1/Chassis/{id}/Drives/{drive}",
        "Drive",
        READ,
        get(drives::get),
    )
    .guarded(
        "/redfish/v1/Systems",
        "ComputerSystemCollection",
        READ,
        get(systems::list),
    )
    .guarded(
        "/redfish/v1/Systems/{id}",
        "ComputerSystem",
        READ,
        get(systems::get),
    )
    .guarded(
        "/redfish/v1/Storage",
        "StorageCollection",
        READ,
        get(storage::list),
    )
    .guarded(
        "/redfish/v1/Storage/{id}",
        "Storage",
        READ,
        get(storage::get),
    )
    .guarded(
        "/redfish/v1/Storage/{id}/Volumes",
        "VolumeCollection",
        COLLECTION_POST,
        get(volumes::list).post(volumes::create),
    )
    .guarded(
        "/redfish/v1/Storage/{id}/Volumes/{volume}",
        "Volume",
        "GET, HEAD, PATCH, DELETE",
        get(volumes::get)
            .patch(volumes::patch)
            .delete(volumes::delete),
    )
    // The DMTF privilege registry has no VolumeMetrics, StoragePool or
    // CapacitySource: they take the rules of the resource that holds them.
    .guarded(
        "/redfish/v1/Storage/{id}/Volumes/{volume}/Actions/Volume.Initialize",
        "Volume",
        "POST",
        post(volumes::initialize),
    )
    .guarded(
        "/redfish/v1/Storage/{id}/Volumes/{volume}/Actions/Volume.CreateReplicaTarget",
        "Volume",
        "POST",
        post(volumes::create_replica),
    )
    .guarded(
        "/redfish/v1/Storage/{id}/Volumes/{volume}/Actions/Volume.SplitReplication",
        "Volume",
        "POST",
        post(volumes::split_replication),
    )
    .guarded(
        "/redfish/v1/Storage/{id}/Volumes/{volume}/Actions/Volume.RemoveReplicaRelationship",
        "Volume",
        "POST",
        post(volumes::remove_replica_relationship),
    )
    .guarded(
        "/redfish/v1/Storage/{id}/Volumes/{volume}/Actions/Volume.CheckConsistency",
        "Volume",
        "POST",
        post(volumes::check_consistency),
    )
    .guarded(
        "/redfish/v1/Storage/{id}/Volumes/{volume}/Metrics",
        "Volume",
        READ,
        get(volumes::metrics),
    )
    .guarded(
        "/redfish/v1/Storage/{id}/StoragePools",
        "Storage",
        COLLECTION_POST,
        get(storage_pools::list).post(storage_pools::create),
    )
    .guarded(
        "/redfish/v1/Storage/{id}/StoragePools/{pool}",
        "Storage",
        "GET, HEAD, PATCH, DELETE",
        get(storage_pools::get)
            .patch(storage_pools::patch)
            .delete(storage_pools::delete),
    )
    .guarded(
        "/redfish/v1/Storage/{id}/StoragePools/{pool}/AllocatedVolumes",
        "VolumeCollection",
        READ,
        get(storage_pools::allocated_volumes),
    )
    .guarded(
        "/redfish/v1/Storage/{id}/StoragePools/{pool}/CapacitySources/{source}",
        "Storage",
        READ,
        get(storage_pools::capacity_source_get),
    )
    .guarded(
        "/redfish/v1/Storage/{id}/StoragePools/{pool}/CapacitySources/{source}/ProvidingDrives",
        "DriveCollection",
        READ,
        get(storage_pools::providing_drives),
    )
    .guarded(
        "/redfish/v1/Storage/{id}/StoragePools/{pool}/CapacitySources/{source}/ProvidingVolumes",
        "VolumeCollection",
        READ,
        get(storage_pools::providing_volumes),
    )
    .guarded(
        "/redfish/v1/Storage/{id}/Controllers",
        "StorageControllerCollection",
        READ,
        get(storage_controllers::list),
    )
    .guarded(
        "/redfish/v1/Storage/{id}/Controllers/{controller}",
        "StorageController",
        READ,
        get(storage_controllers::get),
    )
    .guarded(
        "/redfish/v1/Fabrics",
        "FabricCollection",
        READ,
        get(fabrics::list),
    )
    .guarded(
        "/redfish/v1/Fabrics/{id}",
        "Fabric",
        READ,
        get(fabrics::get),
    )
    .guarded(
        "/redfish/v1/Fabrics/{id}/Endpoints",
        "EndpointCollection",
        COLLECTION_POST,
        get(endpoints::list).post(endpoints::create),
    )
    .guarded(
        "/redfish/v1/Fabrics/{id}/Endpoints/{endpoint}",
        "Endpoint",
        READ_DELETE,
        get(endpoints::get).delete(endpoints::delete),
    )
    .guarded(
        "/redfish/v1/Fabrics/{id}/EndpointGroups",
        "EndpointGroupCollection",
        READ,
        get(endpoint_groups::list),
    )
    .guarded(
        "/redfish/v1/Fabrics/{id}/EndpointGroups/{group}",
        "EndpointGroup",
        READ,
        get(endpoint_groups::get),
    )
    .guarded(
        "/redfish/v1/Fabrics/{id}/Connections",
        "ConnectionCollection",
        COLLECTION_POST,
        get(connections::list).post(connections::create),
    )
    .guarded(
        "/redfish/v1/Fabrics/{id}/Connections/{connection}",
        "Connection",
        "GET, HEAD, PATCH, DELETE",
        get(connections::get)
            .patch(connections::patch)
            .delete(connections::delete),
    )
    .guarded(
        "/redfish/v1/EventService",
        "EventService",
        READ_PATCH,
        get(event_service::get_service).patch(event_service::patch_service),
    )
    .guarded(
        "/redfish/v1/EventService/Subscriptions",
        "EventDestinationCollection",
        COLLECTION_POST,
        get(event_service::list).post(event_service::create),
    )
    .guarded(
        "/redfish/v1/EventService/Subscriptions/{id}",
        "EventDestination",
        READ_DELETE,
        get(event_service::get).delete(event_service::delete),
    )
    .guarded(
        "/redfish/v1/EventService/SSE",
        "EventService",
        "GET",
        get(event_service::sse),
    )
    .guarded(
        "/redfish/v1/EventService/Actions/EventService.SubmitTestEvent",
        "EventService",
        "POST",
        post(event_service::submit_test_event),
    )
    .guarded(
        "/redfish/v1/TaskService",
        "TaskService",
        READ,
        get(task_service::get_service),
    )
    .guarded(
        "/redfish/v1/TaskService/Tasks",
        "TaskCollection",
        READ,
        get(task_service::list),
    )
    .guarded(
        "/redfish/v1/TaskService/Tasks/{id}",
        "Task",
        READ,
        get(task_service::get),
    )
    .guarded(
        "/redfish/v1/TaskService/TaskMonitors/{id}",
        "Task",
        READ,
        get(task_service::monitor),
    )
    .guarded(
        "/redfish/v1/Registries",
        "MessageRegistryFileCollection",
        READ,
        get(registries::list),
    )
    .guarded(
        "/redfish/v1/Registries/{id}",
        "MessageRegistryFile",
        READ,
        get(registries::get),
    )
    .guarded(
        "/redfish/v1/Registries/{id}/{file}",
        "MessageRegistry",
        READ,
        get(registries::file),
    )
    .guarded(
        "/redfish/v1/JsonSchemas",
        "JsonSchemaFileCollection",
        READ,
        get(schemas::collection),
    )
    .guarded(
        "/redfish/v1/JsonSchemas/{name}",
        "JsonSchemaFile",
        READ,
        get(schemas::file_entry),
    )
    .guarded(
        "/redfish/v1/JsonSchemas/{name}/{file}",
        "JsonSchemaFile",
        READ,
        get(schemas::file),
    );

    let _ = state.openapi.set(openapi::document(&routes.docs));
    routes
        .router
        .fallback(not_found)
        .with_state(state.clone())
        .layer(from_fn_with_state(state.clone(), query::layer))
        .layer(from_fn_with_state(state, protocol::enforce))
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
