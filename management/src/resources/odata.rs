//! The OData service document (`/redfish/v1/odata`) and the CSDL metadata
//! document (`/redfish/v1/$metadata`), both readable without credentials.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Top-level resources listed in the service document.
const SERVICE_DOCUMENT: &[(&str, &str)] = &[
    ("Service", "/redfish/v1/"),
    ("SessionService", "/redfish/v1/SessionService"),
    ("AccountService", "/redfish/v1/AccountService"),
    ("Managers", "/redfish/v1/Managers"),
    ("Chassis", "/redfish/v1/Chassis"),
    ("Systems", "/redfish/v1/Systems"),
    ("Storage", "/redfish/v1/Storage"),
    ("Fabrics", "/redfish/v1/Fabrics"),
    ("Tasks", "/redfish/v1/TaskService"),
    ("EventService", "/redfish/v1/EventService"),
    ("Registries", "/redfish/v1/Registries"),
    ("JsonSchemas", "/redfish/v1/JsonSchemas"),
    ("Sessions", "/redfish/v1/SessionService/Sessions"),
];

pub async fn service_document() -> axum::Json<serde_json::Value> {
    let value: Vec<_> = SERVICE_DOCUMENT
        .iter()
        .map(|(name, url)| json!({"name": name, "kind": "Singleton", "url": url}))
        .collect();
    axum::Json(json!({
        "@odata.context": "/redfish/v1/$metadata",
        "value": value,
    }))
}

/// Schemas whose namespaces the payloads use; each is one CSDL file.
const NAMESPACES: &[&str] = &[
    "ServiceRoot",
    "SessionService",
    "Session",
    "SessionCollection",
    "AccountService",
    "ManagerAccount",
    "ManagerAccountCollection",
    "Role",
    "RoleCollection",
    "Manager",
    "ManagerCollection",
    "ManagerNetworkProtocol",
    "Chassis",
    "ChassisCollection",
    "Drive",
    "DriveCollection",
    "Protocol",
    "ComputerSystem",
    "ComputerSystemCollection",
    "Storage",
    "StorageCollection",
    "StorageController",
    "StorageControllerCollection",
    "StoragePool",
    "StoragePoolCollection",
    "Capacity",
    "Volume",
    "VolumeCollection",
    "VolumeMetrics",
    "IOStatistics",
    "Fabric",
    "FabricCollection",
    "Endpoint",
    "EndpointCollection",
    "EndpointGroup",
    "EndpointGroupCollection",
    "Connection",
    "ConnectionCollection",
    "TaskService",
    "Task",
    "TaskCollection",
    "EventService",
    "EventDestination",
    "EventDestinationCollection",
    "Event",
    "MessageRegistryFile",
    "MessageRegistryFileCollection",
    "JsonSchemaFile",
    "JsonSchemaFileCollection",
    "Message",
    "Resource",
];

pub async fn metadata() -> Response {
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <edmx:Edmx xmlns:edmx=\"http://docs.oasis-open.org/odata/ns/edmx\" Version=\"4.0\">\n",
    );
    for namespace in NAMESPACES {
        xml.push_str(&format!(
            "  <edmx:Reference Uri=\"/redfish/v1/schemas/{namespace}_v1.xml\">\n    \
             <edmx:Include Namespace=\"{namespace}\"/>\n  </edmx:Reference>\n"
        ));
    }
    xml.push_str(
        "  <edmx:DataServices>\n    <Schema xmlns=\"http://docs.oasis-open.org/odata/ns/edm\" Namespace=\"Service\">\n      \
         <EntityContainer Name=\"Service\" Extends=\"ServiceRoot.v1_0_0.ServiceContainer\"/>\n    \
         </Schema>\n  </edmx:DataServices>\n</edmx:Edmx>\n",
    );
    let mut response = xml.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    response
}
