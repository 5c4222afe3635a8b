//! TaskService, its Tasks, and the task monitors long operations answer
//! with: `202 Accepted` and `Location: /redfish/v1/TaskService/TaskMonitors/<id>`
//! while the task runs, then the operation's own response.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::time;
use crate::redfish::message::RedfishError;
use crate::redfish::resource;
use crate::state::AppState;
use crate::tasks::{MAX_TASKS, Outcome, Task, TaskState};

const SERVICE: &str = "/redfish/v1/TaskService";
const TASKS: &str = "/redfish/v1/TaskService/Tasks";
const MONITORS: &str = "/redfish/v1/TaskService/TaskMonitors";

pub fn task_uri(id: u64) -> String {
    crate::tasks::uri(id)
}

pub fn monitor_uri(id: u64) -> String {
    format!("{MONITORS}/{id}")
}

pub async fn get_service(headers: HeaderMap) -> Response {
    let body = json!({
        "@odata.id": SERVICE,
        "@odata.type": "#TaskService.v1_3_0.TaskService",
        "Id": "TaskService",
        "Name": "Task Service",
        "ServiceEnabled": true,
        "Status": {"State": "Enabled", "Health": "OK"},
        "DateTime": time::rfc3339(std::time::SystemTime::now()),
        "CompletedTaskOverWritePolicy": "Oldest",
        "LifeCycleEventOnTaskStateChange": true,
        "Tasks": {"@odata.id": TASKS},
    });
    resource::get(&headers, body, "TaskService", "GET, HEAD")
}

pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let members: Vec<String> = state.tasks.list().iter().map(|t| task_uri(t.id)).collect();
    let body = json!({
        "@odata.id": TASKS,
        "@odata.type": "#TaskCollection.TaskCollection",
        "Name": "Task Collection",
        "Description": format!("The last {MAX_TASKS} tasks at most"),
        "Members@odata.count": members.len(),
        "Members": resource::members(members),
    });
    resource::get(&headers, body, "TaskCollection", "GET, HEAD")
}

/// The Task resource of `task`.
pub fn body_of(task: &Task) -> Value {
    let status = match (task.state, task.outcome.as_ref()) {
        (TaskState::Exception, _) => "Critical",
        (_, Some(outcome)) if !outcome.warnings.is_empty() => "Warning",
        _ => "OK",
    };
    let mut body = json!({
        "@odata.id": task_uri(task.id),
        "@odata.type": "#Task.v1_7_4.Task",
        "Id": task.id.to_string(),
        "Name": task.name,
        "TaskState": task.state.redfish(),
        "TaskStatus": status,
        "PercentComplete": task.percent,
        "StartTime": time::rfc3339(time::from_unix(task.start)),
        "TaskMonitor": monitor_uri(task.id),
        "Messages": task.messages,
        "Payload": {"HttpOperation": task.http_operation, "TargetUri": task.target_uri},
    });
    if let Some(end) = task.end {
        body["EndTime"] = json!(time::rfc3339(time::from_unix(end)));
    }
    if let Some(summary) = task.outcome.as_ref().and_then(|o| o.summary.as_ref()) {
        body["Description"] = json!(summary);
    }
    if let Some(location) = task.outcome.as_ref().and_then(|o| o.location.as_ref()) {
        body["Links"] = json!({"CreatedResources": [{"@odata.id": location}]});
    }
    body
}

fn find(state: &AppState, id: &str) -> Result<Task, RedfishError> {
    id.parse()
        .ok()
        .and_then(|id| state.tasks.get(id))
        .ok_or_else(|| RedfishError::not_found("Task", id))
}

pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, RedfishError> {
    let task = find(&state, &id)?;
    Ok(resource::get(&headers, body_of(&task), "Task", "GET, HEAD"))
}

/// Runs `work` as a task named `name` for `operation` on `target_uri`, in
/// the background, and answers 202 with the task monitor. `work` gets the
/// task's ID (for progress) and ends with what the monitor will answer.
pub async fn spawn<Work, Done>(
    state: &AppState,
    name: &str,
    operation: &str,
    target_uri: &str,
    work: Work,
) -> Result<Response, RedfishError>
where
    Work: FnOnce(u64) -> Done + Send + 'static,
    Done: std::future::Future<Output = Result<Outcome, RedfishError>> + Send + 'static,
{
    let task = state
        .tasks
        .start(name, operation, target_uri)
        .await
        .map_err(RedfishError::internal)?;
    let started = state.tasks.get(task.id).expect("just started");
    tokio::spawn(async move {
        let outcome = work(task.id).await;
        if let Err(e) = task.finish(outcome).await {
            tracing::error!("cannot record the end of a task: {e}");
        }
    });
    Ok(accepted(&started))
}

/// The answer to the request that started `task`: 202 and its monitor.
pub fn accepted(task: &Task) -> Response {
    let mut response = (StatusCode::ACCEPTED, axum::Json(body_of(task))).into_response();
    if let Ok(location) = HeaderValue::from_str(&monitor_uri(task.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// The task monitor: 202 while the task runs, then the operation's
/// response (its status, body and `Location`).
pub async fn monitor(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, RedfishError> {
    let task = find(&state, &id)?;
    let Some(outcome) = &task.outcome else {
        return Ok(accepted(&task));
    };
    let status = StatusCode::from_u16(outcome.status).unwrap_or(StatusCode::OK);
    let mut response = (status, axum::Json(outcome.body.clone())).into_response();
    if let Some(location) = &outcome.location
        && let Ok(value) = HeaderValue::from_str(location)
    {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}
