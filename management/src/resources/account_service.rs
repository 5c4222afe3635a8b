//! AccountService, ManagerAccounts and Roles.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::session_service::{merge, not_applied};
use crate::auth::Principal;
use crate::auth::accounts::{Account, AccountError, Policy};
use crate::auth::privileges::{self, Role};
use crate::redfish::body;
use crate::redfish::message::RedfishError;
use crate::redfish::resource;
use crate::state::AppState;

const ACCOUNTS: &str = "/redfish/v1/AccountService/Accounts";
const ROLES: &str = "/redfish/v1/AccountService/Roles";
/// What an account may use: this Redfish service, nothing else (no IPMI,
/// SNMP, host console...).
const ACCOUNT_TYPES: [&str; 1] = ["Redfish"];

/// `AccountTypes` from a request: a non-empty array of the supported
/// types (`PropertyValueNotInList` otherwise).
fn check_account_types(value: &Value) -> Result<(), RedfishError> {
    let name = "AccountTypes";
    let items = value
        .as_array()
        .ok_or_else(|| body::type_error(name, value))?;
    if items.is_empty() {
        return Err(RedfishError::bad_request(
            "PropertyValueNotInList",
            &["[]", name],
        ));
    }
    for item in items {
        let text = body::string(name, item)?;
        if !ACCOUNT_TYPES.contains(&text) {
            return Err(RedfishError::bad_request(
                "PropertyValueNotInList",
                &[text, name],
            ));
        }
    }
    Ok(())
}

fn policy_body(policy: &Policy) -> Value {
    json!({
        "MinPasswordLength": policy.min_password_length,
        "MaxPasswordLength": policy.max_password_length,
        "AccountLockoutThreshold": policy.lockout_threshold,
        "AccountLockoutDuration": policy.lockout_duration_s,
        "AccountLockoutCounterResetAfter": policy.lockout_counter_reset_after_s,
    })
}

pub async fn get_service(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, RedfishError> {
    let policy = state.accounts.policy().map_err(RedfishError::internal)?;
    Ok(resource::get(
        &headers,
        service_body(&policy),
        "AccountService",
        "GET, HEAD, PATCH",
    ))
}

fn service_body(policy: &Policy) -> Value {
    let mut body = json!({
        "@odata.id": "/redfish/v1/AccountService",
        "@odata.type": "#AccountService.v1_15_0.AccountService",
        "Id": "AccountService",
        "Name": "Account Service",
        "ServiceEnabled": true,
        "Status": {"State": "Enabled", "Health": "OK"},
        "LocalAccountAuth": "Enabled",
        "SupportedAccountTypes": ACCOUNT_TYPES,
        "Accounts": {"@odata.id": ACCOUNTS},
        "Roles": {"@odata.id": ROLES},
    });
    if let (Value::Object(map), Value::Object(extra)) = (&mut body, policy_body(policy)) {
        map.extend(extra);
    }
    body
}

pub async fn patch_service(
    State(state): State<AppState>,
    raw: Bytes,
) -> Result<Response, RedfishError> {
    let object = body::object(&raw)?;
    let mut policy = state.accounts.policy().map_err(RedfishError::internal)?;
    let mut problems = Vec::new();
    let mut changed = false;
    for (name, value) in &object {
        let number = || body::unsigned(name, value);
        let result = match name.as_str() {
            "MinPasswordLength" => number().map(|n| policy.min_password_length = n as usize),
            "MaxPasswordLength" => number().map(|n| policy.max_password_length = n as usize),
            "AccountLockoutThreshold" => {
                number().map(|n| policy.lockout_threshold = n.min(u64::from(u32::MAX)) as u32)
            }
            "AccountLockoutDuration" => number().map(|n| policy.lockout_duration_s = n),
            "AccountLockoutCounterResetAfter" => {
                number().map(|n| policy.lockout_counter_reset_after_s = n)
            }
            _ if body::is_annotation(name) => continue,
            "Id"
            | "Name"
            | "Description"
            | "ServiceEnabled"
            | "Status"
            | "Accounts"
            | "Roles"
            | "LocalAccountAuth"
            | "SupportedAccountTypes" => {
                Err(RedfishError::bad_request("PropertyNotWritable", &[name]))
            }
            _ => Err(RedfishError::bad_request("PropertyUnknown", &[name])),
        };
        match result {
            Ok(()) => changed = true,
            Err(e) => problems.push(e),
        }
    }
    if policy.min_password_length < 1
        || policy.min_password_length > policy.max_password_length
        || policy.max_password_length > 256
    {
        return Err(RedfishError::bad_request(
            "PropertyValueNotInList",
            &[&policy.min_password_length.to_string(), "MinPasswordLength"],
        ));
    }
    if !changed {
        return Err(
            merge(problems).unwrap_or_else(|| RedfishError::bad_request("NoOperation", &[]))
        );
    }
    state
        .accounts
        .set_policy(&policy)
        .await
        .map_err(RedfishError::internal)?;
    Ok(resource::updated(
        service_body(&policy),
        not_applied(problems),
    ))
}

fn account_body(state: &AppState, account: &Account) -> Value {
    json!({
        "@odata.id": format!("{ACCOUNTS}/{}", account.id),
        "@odata.type": "#ManagerAccount.v1_12_0.ManagerAccount",
        "Id": account.id,
        "Name": "User Account",
        "UserName": account.user_name,
        "RoleId": account.role.id(),
        "Enabled": account.enabled,
        "Locked": state.accounts.locked(&account.id),
        "PasswordChangeRequired": account.password_change_required,
        "AccountTypes": ACCOUNT_TYPES,
        "Password": null,
        "Links": {"Role": {"@odata.id": format!("{ROLES}/{}", account.role.id())}},
    })
}

pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, RedfishError> {
    let ids: Vec<String> = state
        .accounts
        .list()
        .map_err(RedfishError::internal)?
        .into_iter()
        .map(|a| format!("{ACCOUNTS}/{}", a.id))
        .collect();
    let body = json!({
        "@odata.id": ACCOUNTS,
        "@odata.type": "#ManagerAccountCollection.ManagerAccountCollection",
        "Name": "Accounts Collection",
        "Members@odata.count": ids.len(),
        "Members": resource::members(ids),
    });
    Ok(resource::get(
        &headers,
        body,
        "ManagerAccountCollection",
        "GET, HEAD, POST",
    ))
}

fn account_error(error: AccountError, user_name: &str) -> RedfishError {
    match error {
        AccountError::Exists(_) => RedfishError::new(
            StatusCode::CONFLICT,
            "ResourceAlreadyExists",
            &["ManagerAccount", "UserName", user_name],
        ),
        AccountError::BadUserName => {
            RedfishError::bad_request("PropertyValueFormatError", &[user_name, "UserName"])
        }
        AccountError::PasswordLength { .. } => {
            RedfishError::bad_request("PropertyValueFormatError", &["<hidden>", "Password"])
        }
        AccountError::TooMany => RedfishError::bad_request("CreateLimitReachedForResource", &[]),
        other => RedfishError::internal(other),
    }
}

fn role_of(value: &Value) -> Result<Role, RedfishError> {
    let id = body::string("RoleId", value)?;
    Role::from_id(id)
        .ok_or_else(|| RedfishError::bad_request("PropertyValueNotInList", &[id, "RoleId"]))
}

pub async fn create(State(state): State<AppState>, raw: Bytes) -> Result<Response, RedfishError> {
    let object = body::object(&raw)?;
    let user_name = body::string(
        "UserName",
        object
            .get("UserName")
            .ok_or_else(|| body::missing("UserName"))?,
    )?;
    let password = body::string(
        "Password",
        object
            .get("Password")
            .ok_or_else(|| body::missing("Password"))?,
    )?;
    let role = role_of(
        object
            .get("RoleId")
            .ok_or_else(|| body::missing("RoleId"))?,
    )?;
    let enabled = match object.get("Enabled") {
        Some(value) => body::boolean("Enabled", value)?,
        None => true,
    };
    let change_required = match object.get("PasswordChangeRequired") {
        Some(value) => body::boolean("PasswordChangeRequired", value)?,
        None => false,
    };
    if let Some(value) = object.get("AccountTypes") {
        check_account_types(value)?;
    }
    for name in object.keys() {
        if !matches!(
            name.as_str(),
            "UserName"
                | "Password"
                | "RoleId"
                | "Enabled"
                | "PasswordChangeRequired"
                | "AccountTypes"
        ) && !body::is_annotation(name)
        {
            return Err(RedfishError::bad_request("PropertyUnknown", &[name]));
        }
    }
    let account = state
        .accounts
        .create(user_name, password, role, enabled, change_required)
        .await
        .map_err(|e| account_error(e, user_name))?;
    let location = format!("{ACCOUNTS}/{}", account.id);
    Ok(resource::created(&location, account_body(&state, &account)))
}

fn find(state: &AppState, id: &str) -> Result<Account, RedfishError> {
    state
        .accounts
        .get(id)
        .map_err(RedfishError::internal)?
        .ok_or_else(|| RedfishError::not_found("ManagerAccount", id))
}

pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, RedfishError> {
    let account = find(&state, &id)?;
    Ok(resource::get(
        &headers,
        account_body(&state, &account),
        "ManagerAccount",
        "GET, HEAD, PATCH, DELETE",
    ))
}

/// Serialises PATCHes of this resource type (see `patch`).
static ACCOUNT_CHANGES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn patch(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<Response, RedfishError> {
    // The If-Match check and the write are one step: concurrent PATCHes
    // carrying the same ETag must not all win (lost updates).
    let _serialised = ACCOUNT_CHANGES.lock().await;
    let mut account = find(&state, &id)?;
    let was_enabled_administrator = account.role == Role::Administrator && account.enabled;
    let current = resource::etag_of(&account_body(&state, &account));
    if resource::header_matches(&headers, header::IF_MATCH, &current) == Some(false) {
        return Err(RedfishError::new(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            &[],
        ));
    }
    let object = body::object(&raw)?;
    let is_self = principal.account_id == account.id;
    let mut problems = Vec::new();
    let mut changed = false;
    let mut password_changed = false;
    let mut sessions_invalid = false;
    for (name, value) in &object {
        if body::is_annotation(name) {
            continue;
        }
        // The registry may let a property through where the resource's
        // rule does not (ConfigureSelf for one's own Password).
        if !privileges::allows_property(principal.role, "ManagerAccount", name, "PATCH", is_self) {
            problems.push(RedfishError::forbidden());
            continue;
        }
        let result = match name.as_str() {
            "Password" => match body::string(name, value) {
                // A required change needs a new password, not the one the
                // administrator handed out.
                Ok(password)
                    if account.password_change_required
                        && state.accounts.is_password(&account, password).await =>
                {
                    Err(RedfishError::bad_request("PasswordReuseTooRecent", &[]))
                }
                Ok(password) => state
                    .accounts
                    .set_password(&mut account, password)
                    .await
                    .map(|()| {
                        account.password_change_required = false;
                        password_changed = true;
                    })
                    .map_err(|e| account_error(e, &account.user_name.clone())),
                Err(e) => Err(e),
            },
            "UserName" => match body::string(name, value) {
                Ok(new_name) if !crate::auth::accounts::valid_user_name(new_name) => Err(
                    RedfishError::bad_request("PropertyValueFormatError", &[new_name, name]),
                ),
                Ok(new_name) => match state
                    .accounts
                    .by_user_name(new_name)
                    .map_err(RedfishError::internal)?
                {
                    Some(other) if other.id != account.id => Err(RedfishError::new(
                        StatusCode::CONFLICT,
                        "ResourceAlreadyExists",
                        &["ManagerAccount", "UserName", new_name],
                    )),
                    _ => {
                        account.user_name = new_name.to_string();
                        sessions_invalid = true;
                        Ok(())
                    }
                },
                Err(e) => Err(e),
            },
            "RoleId" => role_of(value).map(|role| {
                account.role = role;
                sessions_invalid = true;
            }),
            "Enabled" => body::boolean(name, value).map(|enabled| {
                account.enabled = enabled;
                sessions_invalid |= !enabled;
            }),
            "Locked" => match body::boolean(name, value) {
                // Only unlocking is a client's to do.
                Ok(false) => {
                    state.accounts.unlock(&account.id);
                    Ok(())
                }
                Ok(true) => Err(RedfishError::bad_request(
                    "PropertyValueNotInList",
                    &["true", name],
                )),
                Err(e) => Err(e),
            },
            "PasswordChangeRequired" => body::boolean(name, value).map(|required| {
                account.password_change_required = required;
            }),
            // Only what every account has already: nothing to change.
            "AccountTypes" => check_account_types(value),
            "Id" | "Name" | "Links" | "Description" => {
                Err(RedfishError::bad_request("PropertyNotWritable", &[name]))
            }
            _ => Err(RedfishError::bad_request("PropertyUnknown", &[name])),
        };
        match result {
            Ok(()) => changed = true,
            Err(e) => problems.push(e),
        }
    }
    if !changed {
        return Err(
            merge(problems).unwrap_or_else(|| RedfishError::bad_request("NoOperation", &[]))
        );
    }
    let still_enabled_administrator = account.role == Role::Administrator && account.enabled;
    if was_enabled_administrator
        && !still_enabled_administrator
        && other_enabled_administrators(&state, &account.id)? == 0
    {
        // Without an enabled administrator nobody could manage accounts
        // again.
        let (property, value) = if account.enabled {
            ("RoleId", account.role.id().to_string())
        } else {
            ("Enabled", "false".to_string())
        };
        return Err(RedfishError::new(
            StatusCode::CONFLICT,
            "PropertyValueResourceConflict",
            &[property, &value, &format!("{ACCOUNTS}/{}", account.id)],
        )
        .with_detail("the last enabled Administrator keeps its role and stays enabled"));
    }
    state
        .accounts
        .save(&mut account)
        .await
        .map_err(RedfishError::internal)?;
    if sessions_invalid {
        state.end_account_access(&account.id, None);
    } else if password_changed {
        // Whoever held the old password is out; the caller keeps the
        // session it changed its own password with.
        let keep = principal.session_id.as_deref().filter(|_| is_self);
        state.end_account_access(&account.id, keep);
        state.sessions.clear_password_change(&account.id);
    }
    Ok(resource::updated(
        account_body(&state, &account),
        not_applied(problems),
    ))
}

pub async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, RedfishError> {
    let account = find(&state, &id)?;
    if account.id == principal.account_id {
        // Deleting oneself would leave the caller locked out mid-request.
        return Err(RedfishError::new(
            StatusCode::BAD_REQUEST,
            "ResourceCannotBeDeleted",
            &[],
        ));
    }
    if account.role == Role::Administrator
        && account.enabled
        && other_enabled_administrators(&state, &account.id)? == 0
    {
        // The last enabled administrator stays: without it nobody could
        // manage accounts again.
        return Err(RedfishError::new(
            StatusCode::BAD_REQUEST,
            "ResourceCannotBeDeleted",
            &[],
        ));
    }
    state
        .accounts
        .delete(&id)
        .await
        .map_err(RedfishError::internal)?;
    state.end_account_access(&id, None);
    state.accounts.unlock(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Enabled administrators other than account `id`.
fn other_enabled_administrators(state: &AppState, id: &str) -> Result<usize, RedfishError> {
    Ok(state
        .accounts
        .list()
        .map_err(RedfishError::internal)?
        .into_iter()
        .filter(|a| a.id != id && a.role == Role::Administrator && a.enabled)
        .count())
}

pub async fn roles(headers: HeaderMap) -> Response {
    let body = json!({
        "@odata.id": ROLES,
        "@odata.type": "#RoleCollection.RoleCollection",
        "Name": "Roles Collection",
        "Members@odata.count": Role::ALL.len(),
        "Members": resource::members(Role::ALL.iter().map(|r| format!("{ROLES}/{}", r.id()))),
    });
    resource::get(&headers, body, "RoleCollection", "GET, HEAD")
}

pub async fn role(Path(id): Path<String>, headers: HeaderMap) -> Response {
    let Some(role) = Role::from_id(&id) else {
        return RedfishError::not_found("Role", &id).into_response();
    };
    let body = json!({
        "@odata.id": format!("{ROLES}/{}", role.id()),
        "@odata.type": "#Role.v1_3_2.Role",
        "Id": role.id(),
        "Name": format!("{} Role", role.id()),
        "RoleId": role.id(),
        "IsPredefined": true,
        "AssignedPrivileges": role.privileges(),
        "OemPrivileges": [],
    });
    resource::get(&headers, body, "Role", "GET, HEAD")
}
