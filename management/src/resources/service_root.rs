//! `/redfish` (the version document) and `/redfish/v1` (ServiceRoot).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::json;

use crate::redfish::resource;
use crate::state::AppState;

pub async fn versions() -> axum::Json<serde_json::Value> {
    axum::Json(json!({"v1": "/redfish/v1/"}))
}

pub async fn get(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let mut body = json!({
        "@odata.id": "/redfish/v1",
        "@odata.type": "#ServiceRoot.v1_17_0.ServiceRoot",
        "Id": "RootService",
        "Name": "Shoal Root Service",
        "RedfishVersion": "1.20.0",
        "UUID": state.service_uuid.to_string(),
        "Vendor": "Shoal",
        "Product": "Shoal storage appliance",
        // Only what is implemented is claimed.
        "ProtocolFeaturesSupported": {
            "ExpandQuery": {
                "ExpandAll": true,
                "Levels": true,
                "MaxLevels": crate::redfish::query::MAX_LEVELS,
                "Links": true,
                "NoLinks": true,
            },
            "FilterQuery": true,
            "SelectQuery": true,
            "OnlyMemberQuery": true,
            "TopSkipQuery": true,
            "ExcerptQuery": false,
            "DeepOperations": {"DeepPATCH": false, "DeepPOST": false},
            // HTTP/2 (ALPN h2, up to MAX_STREAMS_PER_CONNECTION streams a
            // connection), HTTP/1.1 keep-alive and many connections, all
            // served concurrently.
            "MultipleHTTPRequests": true,
        },
        "SessionService": {"@odata.id": "/redfish/v1/SessionService"},
        "AccountService": {"@odata.id": "/redfish/v1/AccountService"},
        "Managers": {"@odata.id": "/redfish/v1/Managers"},
        "Chassis": {"@odata.id": "/redfish/v1/Chassis"},
        "Systems": {"@odata.id": "/redfish/v1/Systems"},
        "Storage": {"@odata.id": "/redfish/v1/Storage"},
        "Fabrics": {"@odata.id": "/redfish/v1/Fabrics"},
        "Tasks": {"@odata.id": "/redfish/v1/TaskService"},
        "EventService": {"@odata.id": "/redfish/v1/EventService"},
        "Registries": {"@odata.id": "/redfish/v1/Registries"},
        "JsonSchemas": {"@odata.id": "/redfish/v1/JsonSchemas"},
        "Links": {"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}},
    });
    // The manager's, and absent while that is empty (ServiceRoot schema).
    if let Ok(identification) = super::managers::service_identification(&state)
        && !identification.is_empty()
    {
        body["ServiceIdentification"] = json!(identification);
    }
    resource::get(&headers, body, "ServiceRoot", "GET, HEAD")
}
