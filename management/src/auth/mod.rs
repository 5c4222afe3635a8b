//! Authentication (HTTP Basic over HTTPS, or a session's `X-Auth-Token`)
//! and authorization (the privilege registry) for every guarded route.

pub mod accounts;
pub mod privileges;
pub mod sessions;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use crate::redfish::message::RedfishError;
use crate::state::AppState;
use accounts::LoginFailure;
use privileges::Role;

/// Who is calling, as the handlers see it.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_name: String,
    pub account_id: String,
    pub role: Role,
    /// Present when the caller used a session token.
    pub session_id: Option<String>,
    pub password_change_required: bool,
}

/// The outcome of authenticating a request before it reached its route,
/// kept in the request's extensions so that the route's guard does not
/// authenticate again (one argon2 run per request, not one per layer or
/// per `$expand`ed member). Only the service inserts it; nothing a client
/// sends becomes an extension.
#[derive(Debug, Clone)]
pub enum Authentication {
    Proven(Principal),
    Refused,
}

/// Whether the request carries credentials at all.
pub fn has_credentials(headers: &HeaderMap) -> bool {
    headers.contains_key("x-auth-token") || headers.contains_key(header::AUTHORIZATION)
}

/// The request's caller: from an earlier [`Authentication`] if there was
/// one, else from its headers.
pub fn caller<'a>(
    state: &'a AppState,
    request: &Request,
) -> impl Future<Output = Result<Principal, RedfishError>> + Send + 'a {
    // Taken from the request before the future: a request (its body) is
    // not Sync, so a future holding it would not be Send.
    let earlier = request.extensions().get::<Authentication>().cloned();
    let headers = earlier.is_none().then(|| request.headers().clone());
    let connection = request
        .extensions()
        .get::<ConnectionAuthenticated>()
        .cloned();
    async move {
        let outcome = match (earlier, headers) {
            (Some(Authentication::Proven(principal)), _) => Ok(principal),
            (Some(Authentication::Refused), _) => Err(RedfishError::unauthorized()),
            (None, headers) => authenticate(state, &headers.unwrap_or_default()).await,
        };
        if let (Ok(_), Some(connection)) = (&outcome, connection) {
            connection.mark();
        }
        outcome
    }
}

/// Put into every request's extensions by the HTTP layer: marks the
/// request's connection authenticated the moment its caller is proven, so
/// a long first request (a volume being made) is not cut by the deadline
/// for connections on which nobody has authenticated.
#[derive(Clone)]
pub struct ConnectionAuthenticated(std::sync::Arc<dyn Fn() + Send + Sync>);

impl ConnectionAuthenticated {
    pub fn new(mark: impl Fn() + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(mark))
    }

    pub fn mark(&self) {
        (self.0)()
    }
}

impl Principal {
    pub fn may(&self, entity: &str, method: &Method, is_self: bool) -> bool {
        privileges::allows(self.role, entity, method.as_str(), is_self)
    }
}

/// Authenticates the request from its `X-Auth-Token` or `Authorization:
/// Basic` header.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Principal, RedfishError> {
    if let Some(token) = headers.get("x-auth-token") {
        let token = token.to_str().map_err(|_| RedfishError::unauthorized())?;
        let session = state
            .sessions
            .authenticate(token)
            .ok_or_else(RedfishError::unauthorized)?;
        return Ok(Principal {
            user_name: session.user_name,
            account_id: session.account_id,
            role: session.role,
            session_id: Some(session.id),
            password_change_required: session.password_change_required,
        });
    }
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .ok_or_else(RedfishError::unauthorized)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic.trim())
        .map_err(|_| RedfishError::unauthorized())?;
    let decoded = String::from_utf8(decoded).map_err(|_| RedfishError::unauthorized())?;
    let (user_name, password) = decoded
        .split_once(':')
        .ok_or_else(RedfishError::unauthorized)?;
    let account = state
        .accounts
        .login(user_name, password)
        .await
        .map_err(|failure| {
            if failure == LoginFailure::LockedOut {
                tracing::info!(user = user_name, "login refused: account locked out");
            }
            RedfishError::unauthorized()
        })?;
    Ok(Principal {
        user_name: account.user_name,
        account_id: account.id,
        role: account.role,
        session_id: None,
        password_change_required: account.password_change_required,
    })
}

/// The last path segment: the member id of an account or session URI.
fn last_segment(path: &str) -> &str {
    path.trim_end_matches('/').rsplit('/').next().unwrap_or("")
}

/// Middleware for a route serving resources of type `entity`: 401 without
/// valid credentials, 403 without the registry's privileges.
pub async fn authorize(
    State((state, entity)): State<(AppState, &'static str)>,
    mut request: Request,
    next: Next,
) -> Response {
    let principal = match caller(&state, &request).await {
        Ok(principal) => principal,
        Err(error) => return error.into_response(),
    };
    let path = request.uri().path().to_string();
    let is_self = match entity {
        "ManagerAccount" => last_segment(&path) == principal.account_id,
        "Session" => principal.session_id.as_deref() == Some(last_segment(&path)),
        _ => false,
    };
    let method = request.method().clone();
    // HEAD is answered like GET (same privileges where the registry differs
    // only by omission).
    let checked = if method == Method::HEAD {
        Method::GET
    } else {
        method.clone()
    };
    if principal.password_change_required {
        let own_account = entity == "ManagerAccount" && is_self;
        let own_session = entity == "Session" && is_self && method == Method::DELETE;
        if !(own_account && matches!(checked, Method::GET | Method::PATCH) || own_session) {
            let uri = format!(
                "/redfish/v1/AccountService/Accounts/{}",
                principal.account_id
            );
            return RedfishError::new(
                axum::http::StatusCode::FORBIDDEN,
                "PasswordChangeRequired",
                &[&uri],
            )
            .into_response();
        }
    }
    // A PATCH of one's own account is let through to the handler, which
    // checks each property (the registry lets ConfigureSelf change only
    // the password).
    let self_patch = entity == "ManagerAccount" && is_self && checked == Method::PATCH;
    if !principal.may(entity, &checked, is_self) && !self_patch {
        return RedfishError::forbidden().into_response();
    }
    // Nothing can be recorded while the state file system is full; say so
    // before a handler fails half way. Sessions live in memory only.
    let records = !matches!(checked, Method::GET | Method::HEAD) && entity != "Session";
    if records && let Some(why) = state.store.read_only_reason() {
        return crate::redfish::message::state_file_system_full(&why).into_response();
    }
    request.extensions_mut().insert(principal.clone());
    let mut response = next.run(request).await;
    // The write that found the file system full (and turned the store
    // read-only) answers as every later one will, not as an internal error.
    if records
        && response.status() == axum::http::StatusCode::INTERNAL_SERVER_ERROR
        && let Some(why) = state.store.read_only_reason()
    {
        response = crate::redfish::message::state_file_system_full(&why).into_response();
    }
    // Tells the transport the connection is authenticated, and `$expand`
    // whose credentials its member fetches may reuse.
    response.extensions_mut().insert(principal);
    response
}
