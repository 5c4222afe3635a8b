//! SessionService, its Sessions collection and each Session. Logging in
//! (POST to Sessions) needs no credentials; everything else does.

use std::time::Duration;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::Principal;
use crate::auth::accounts::LoginFailure;
use crate::auth::sessions::{MAX_SESSIONS_PER_ACCOUNT, SessionRefused};
use crate::redfish::body;
use crate::redfish::message::RedfishError;
use crate::redfish::resource;
use crate::state::AppState;

const SESSIONS: &str = "/redfish/v1/SessionService/Sessions";

pub async fn get_service(State(state): State<AppState>, headers: HeaderMap) -> Response {
    resource::get(
        &headers,
        service_body(&state),
        "SessionService",
        "GET, HEAD, PATCH",
    )
}

fn service_body(state: &AppState) -> serde_json::Value {
    json!({
        "@odata.id": "/redfish/v1/SessionService",
        "@odata.type": "#SessionService.v1_1_9.SessionService",
        "Id": "SessionService",
        "Name": "Session Service",
        "ServiceEnabled": true,
        "SessionTimeout": state.sessions.timeout().as_secs(),
        "Status": {"State": "Enabled", "Health": "OK"},
        "Sessions": {"@odata.id": SESSIONS},
    })
}

pub async fn patch_service(
    State(state): State<AppState>,
    raw: Bytes,
) -> Result<Response, RedfishError> {
    let object = body::object(&raw)?;
    let mut timeout = None;
    let mut problems: Vec<RedfishError> = Vec::new();
    for (name, value) in &object {
        match name.as_str() {
            "SessionTimeout" => match body::unsigned(name, value) {
                Ok(seconds) if (30..=86_400).contains(&seconds) => timeout = Some(seconds),
                Ok(seconds) => problems.push(RedfishError::new(
                    StatusCode::BAD_REQUEST,
                    "PropertyValueNotInList",
                    &[&seconds.to_string(), name],
                )),
                Err(e) => problems.push(e),
            },
            "Id" | "Name" | "ServiceEnabled" | "Status" | "Sessions" | "Description" => problems
                .push(RedfishError::new(
                    StatusCode::BAD_REQUEST,
                    "PropertyNotWritable",
                    &[name],
                )),
            _ if body::is_annotation(name) => {}
            _ => problems.push(RedfishError::new(
                StatusCode::BAD_REQUEST,
                "PropertyUnknown",
                &[name],
            )),
        }
    }
    let Some(seconds) = timeout else {
        return Err(merge(problems)
            .unwrap_or_else(|| RedfishError::new(StatusCode::BAD_REQUEST, "NoOperation", &[])));
    };
    state.sessions.set_timeout(Duration::from_secs(seconds));
    state
        .store
        .put(crate::store::Table::Settings, "session_timeout_s", &seconds)
        .await
        .map_err(RedfishError::internal)?;
    Ok(resource::updated(
        service_body(&state),
        not_applied(problems),
    ))
}

/// Several problems as one error (first status wins).
pub fn merge(problems: Vec<RedfishError>) -> Option<RedfishError> {
    let mut iter = problems.into_iter();
    let mut first = iter.next()?;
    for other in iter {
        first.messages.extend(other.messages);
    }
    Some(first)
}

/// The messages of properties a partly successful PATCH did not apply.
pub fn not_applied(problems: Vec<RedfishError>) -> Vec<serde_json::Value> {
    problems.into_iter().flat_map(|p| p.messages).collect()
}

pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
) -> Response {
    // Without ConfigureManager, a caller sees only its own sessions.
    let all = principal.may("Session", &axum::http::Method::GET, false);
    let ids: Vec<String> = state
        .sessions
        .list()
        .into_iter()
        .filter(|s| all || s.account_id == principal.account_id)
        .map(|s| format!("{SESSIONS}/{}", s.id))
        .collect();
    let body = json!({
        "@odata.id": SESSIONS,
        "@odata.type": "#SessionCollection.SessionCollection",
        "Name": "Session Collection",
        "Members@odata.count": ids.len(),
        "Members": resource::members(ids),
    });
    resource::get(&headers, body, "SessionCollection", "GET, HEAD, POST")
}

/// Login: `{"UserName", "Password"}` → 201, `X-Auth-Token`, `Location`.
pub async fn create(State(state): State<AppState>, raw: Bytes) -> Result<Response, RedfishError> {
    let object = body::object(&raw)?;
    let user_name = object
        .get("UserName")
        .ok_or_else(|| body::missing("UserName"))?;
    let user_name = body::string("UserName", user_name)?;
    let password = object
        .get("Password")
        .ok_or_else(|| body::missing("Password"))?;
    let password = body::string("Password", password)?;
    let account = state
        .accounts
        .login(user_name, password)
        .await
        .map_err(|failure| {
            if failure == LoginFailure::LockedOut {
                tracing::info!(user = user_name, "session refused: account locked out");
            }
            RedfishError::new(
                StatusCode::UNAUTHORIZED,
                "ResourceAtUriUnauthorized",
                &[SESSIONS, "Invalid user name or password"],
            )
        })?;
    let session = state
        .sessions
        .open(
            &account.user_name,
            &account.id,
            account.role,
            account.password_change_required,
        )
        .map_err(|refused| {
            let detail = match refused {
                SessionRefused::TableFull => format!(
                    "the service holds at most {} sessions",
                    state.sessions.limit()
                ),
                SessionRefused::AccountLimit => format!(
                    "an account holds at most {MAX_SESSIONS_PER_ACCOUNT} sessions; \
                     end one (DELETE) or let one expire"
                ),
            };
            RedfishError::new(StatusCode::SERVICE_UNAVAILABLE, "SessionLimitExceeded", &[])
                .with_detail(&detail)
        })?;
    let location = format!("{SESSIONS}/{}", session.id);
    let mut body = session_body(&session);
    if account.password_change_required {
        let uri = format!("/redfish/v1/AccountService/Accounts/{}", account.id);
        body["@Message.ExtendedInfo"] = json!([crate::redfish::message::message(
            "PasswordChangeRequired",
            &[&uri]
        )]);
    }
    let mut response = (StatusCode::CREATED, axum::Json(body)).into_response();
    let h = response.headers_mut();
    if let (Ok(token), Ok(location)) = (
        HeaderValue::from_str(&session.token),
        HeaderValue::from_str(&location),
    ) {
        h.insert("x-auth-token", token);
        h.insert(header::LOCATION, location);
    }
    // The caller proved who they are on this connection.
    response.extensions_mut().insert(Principal {
        user_name: account.user_name,
        account_id: account.id,
        role: account.role,
        session_id: Some(session.id),
        password_change_required: account.password_change_required,
    });
    Ok(response)
}

fn session_body(session: &crate::auth::sessions::Session) -> serde_json::Value {
    json!({
        "@odata.id": format!("{SESSIONS}/{}", session.id),
        "@odata.type": "#Session.v1_7_0.Session",
        "Id": session.id,
        "Name": "User Session",
        "UserName": session.user_name,
        "SessionType": "Redfish",
        "CreatedTime": crate::resources::time::rfc3339(session.created),
    })
}

fn visible(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Option<crate::auth::sessions::Session> {
    let session = state.sessions.get(id)?;
    let all = principal.may("Session", &axum::http::Method::GET, false);
    (all || session.account_id == principal.account_id).then_some(session)
}

pub async fn get_one(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    match visible(&state, &principal, &id) {
        Some(session) => resource::get(
            &headers,
            session_body(&session),
            "Session",
            "GET, HEAD, DELETE",
        ),
        None => RedfishError::not_found("Session", &id).into_response(),
    }
}

/// Logout (own session) or ending another's (ConfigureManager).
pub async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    if visible(&state, &principal, &id).is_none() || !state.sessions.close(&id) {
        return RedfishError::not_found("Session", &id).into_response();
    }
    StatusCode::NO_CONTENT.into_response()
}
