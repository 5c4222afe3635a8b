//! Long operations as Redfish tasks: each runs in the background, reports
//! its progress, and ends with the response its task monitor then returns
//! (what the request would have answered, had it waited). Tasks are kept
//! in sled on every change of state, so a finished task's outcome survives
//! restarts; one still running when the service stopped is marked aborted
//! at the next start.

use shoal_appliance::locks::Recover;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::events::Events;
use crate::redfish::message::{RedfishError, registry_message};
use crate::store::{Store, StoreError, Table};

/// The URI of task `id`.
pub fn uri(id: u64) -> String {
    format!("/redfish/v1/TaskService/Tasks/{id}")
}

/// Most tasks kept; beyond it the oldest finished ones are dropped
/// (`CompletedTaskOverWritePolicy: Oldest`).
pub const MAX_TASKS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskState {
    Running,
    Completed,
    Exception,
}

impl TaskState {
    pub fn redfish(self) -> &'static str {
        match self {
            Self::Running => "Running",
            Self::Completed => "Completed",
            Self::Exception => "Exception",
        }
    }
}

/// What the task monitor answers once the task has ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub status: u16,
    /// The resource the operation created, if any (`Location`).
    pub location: Option<String>,
    pub body: Value,
    /// What the operation found, in a sentence: the Task's `Description`.
    #[serde(default)]
    pub summary: Option<String>,
    /// Registry messages about what went less than well: the task then
    /// completed with warnings (`TaskCompletedWarning`, these messages in
    /// its `Messages`).
    #[serde(default)]
    pub warnings: Vec<Value>,
}

impl Outcome {
    /// The operation's response, with no summary and no warnings.
    pub fn response(status: u16, location: Option<String>, body: Value) -> Self {
        Self {
            status,
            location,
            body,
            summary: None,
            warnings: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: u64,
    pub name: String,
    pub state: TaskState,
    pub percent: u8,
    /// Seconds since the Unix epoch.
    pub start: u64,
    pub end: Option<u64>,
    /// TaskEvent (and, on failure, Base) messages, oldest first.
    pub messages: Vec<Value>,
    pub http_operation: String,
    pub target_uri: String,
    pub outcome: Option<Outcome>,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Every task the service knows, by ID.
#[derive(Clone)]
pub struct Tasks {
    store: Store,
    tasks: Arc<Mutex<BTreeMap<u64, Task>>>,
    /// Where task state changes are announced (TaskEvent messages).
    events: Arc<Events>,
}

impl Tasks {
    /// Loads the stored tasks; those a previous life left running are
    /// marked aborted.
    pub async fn load(store: Store, events: Arc<Events>) -> Result<Self, StoreError> {
        let mut tasks: BTreeMap<u64, Task> = store
            .list::<Task>(Table::Tasks)?
            .into_iter()
            .map(|t| (t.id, t))
            .collect();
        for task in tasks.values_mut() {
            if task.state == TaskState::Running {
                task.state = TaskState::Exception;
                task.end = Some(now_s());
                let id = task.id.to_string();
                task.messages
                    .push(registry_message("TaskEvent", "TaskAborted", &[&id]));
                let error = RedfishError::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "OperationFailed",
                    &[],
                )
                .with_detail("the management service stopped while the task ran");
                task.outcome = Some(Outcome::response(error.status.as_u16(), None, error.body()));
                store.put(Table::Tasks, &id, &task).await?;
            }
        }
        Ok(Self {
            store,
            tasks: Arc::new(Mutex::new(tasks)),
            events,
        })
    }

    pub fn get(&self, id: u64) -> Option<Task> {
        self.tasks.locked().get(&id).cloned()
    }

    pub fn list(&self) -> Vec<Task> {
        self.tasks.locked().values().cloned().collect()
    }

    /// Records a new running task for `operation` on `target_uri`.
    pub async fn start(
        &self,
        name: &str,
        operation: &str,
        target_uri: &str,
    ) -> Result<TaskHandle, StoreError> {
        let id = self.store.next_id("task").await?;
        let task = Task {
            id,
            name: name.to_string(),
            state: TaskState::Running,
            percent: 0,
            start: now_s(),
            end: None,
            messages: vec![registry_message(
                "TaskEvent",
                "TaskStarted",
                &[&id.to_string()],
            )],
            http_operation: operation.to_string(),
            target_uri: target_uri.to_string(),
            outcome: None,
        };
        self.store.put(Table::Tasks, &id.to_string(), &task).await?;
        self.announce(&task, &task.messages[0]);
        let dropped = {
            let mut tasks = self.tasks.locked();
            tasks.insert(id, task);
            let finished: Vec<u64> = tasks
                .values()
                .filter(|t| t.state != TaskState::Running)
                .map(|t| t.id)
                .collect();
            let excess = tasks.len().saturating_sub(MAX_TASKS);
            let dropped: Vec<u64> = finished.into_iter().take(excess).collect();
            for old in &dropped {
                tasks.remove(old);
            }
            dropped
        };
        for old in dropped {
            self.store.remove(Table::Tasks, &old.to_string()).await?;
        }
        Ok(TaskHandle {
            tasks: self.clone(),
            id,
        })
    }

    /// Progress of running task `id` in percent (kept in memory; the state
    /// is stored when the task ends).
    pub fn progress(&self, id: u64, percent: u8) {
        self.update(id, |t| t.percent = percent.min(99));
    }

    /// Publishes a TaskEvent message about `task`.
    fn announce(&self, task: &Task, message: &Value) {
        self.events
            .publish_message("TaskEvent", message.clone(), Some((&uri(task.id), "Task")));
    }

    fn update(&self, id: u64, change: impl FnOnce(&mut Task)) -> Option<Task> {
        let mut tasks = self.tasks.locked();
        let task = tasks.get_mut(&id)?;
        change(task);
        Some(task.clone())
    }
}

/// The running task's side: progress and the end.
pub struct TaskHandle {
    tasks: Tasks,
    pub id: u64,
}

impl TaskHandle {
    /// Progress in percent (kept in memory; the state is stored at the end).
    pub fn progress(&self, percent: u8) {
        self.tasks.progress(self.id, percent);
    }

    /// Ends the task with what its monitor will answer: success (status,
    /// location, body) or a Redfish error.
    pub async fn finish(self, result: Result<Outcome, RedfishError>) -> Result<Task, StoreError> {
        let id = self.id.to_string();
        let task = self.tasks.update(self.id, |task| {
            task.end = Some(now_s());
            match result {
                Ok(outcome) => {
                    task.state = TaskState::Completed;
                    task.percent = 100;
                    let ended = if outcome.warnings.is_empty() {
                        "TaskCompletedOK"
                    } else {
                        "TaskCompletedWarning"
                    };
                    task.messages
                        .push(registry_message("TaskEvent", ended, &[&id]));
                    task.messages.extend(outcome.warnings.iter().cloned());
                    task.outcome = Some(outcome);
                }
                Err(error) => {
                    task.state = TaskState::Exception;
                    task.messages
                        .push(registry_message("TaskEvent", "TaskAborted", &[&id]));
                    task.messages.extend(error.messages.iter().cloned());
                    task.outcome =
                        Some(Outcome::response(error.status.as_u16(), None, error.body()));
                }
            }
        });
        let task = task.expect("a running task is never dropped");
        self.tasks.store.put(Table::Tasks, &id, &task).await?;
        // The TaskEvent message that says how it ended (not the errors).
        if let Some(ended) = task.messages.iter().rev().find(|m| {
            m["MessageId"]
                .as_str()
                .is_some_and(|id| id.starts_with("TaskEvent."))
        }) {
            self.tasks.announce(&task, ended);
        }
        Ok(task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_end_once_and_outlive_the_service() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let tasks = Tasks::load(store, Arc::default()).await.unwrap();
            let done = tasks.start("done", "POST", "/x").await.unwrap();
            done.progress(40);
            let id = done.id;
            assert_eq!(tasks.get(id).unwrap().percent, 40);
            let outcome =
                Outcome::response(201, Some("/x/1".into()), serde_json::json!({"Id": "1"}));
            let task = done.finish(Ok(outcome.clone())).await.unwrap();
            assert_eq!(
                (task.state, task.percent, task.outcome),
                (TaskState::Completed, 100, Some(outcome))
            );
            // Left running when the service "stops".
            tasks.start("interrupted", "POST", "/y").await.unwrap();
        }
        let store = (0..100)
            .find_map(|_| {
                Store::open(dir.path()).ok().or_else(|| {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    None
                })
            })
            .unwrap();
        let tasks = Tasks::load(store, Arc::default()).await.unwrap();
        let all = tasks.list();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].state, TaskState::Completed);
        assert_eq!(all[1].state, TaskState::Exception);
        assert_eq!(all[1].outcome.as_ref().unwrap().status, 500);
    }

    #[tokio::test]
    async fn a_task_with_warnings_completes_with_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let tasks = Tasks::load(Store::open(dir.path()).unwrap(), Arc::default())
            .await
            .unwrap();
        let task = tasks.start("checked", "POST", "/w").await.unwrap();
        let warning = crate::redfish::message::message("UndeterminedFault", &["w"]);
        let outcome = Outcome {
            summary: Some("3 blocks differ".into()),
            warnings: vec![warning.clone()],
            ..Outcome::response(200, None, serde_json::json!({}))
        };
        let task = task.finish(Ok(outcome)).await.unwrap();
        assert_eq!(task.state, TaskState::Completed);
        let ids: Vec<&str> = task
            .messages
            .iter()
            .map(|m| m["MessageId"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            [
                "TaskEvent.1.0.TaskStarted",
                "TaskEvent.1.0.TaskCompletedWarning",
                "Base.1.22.UndeterminedFault"
            ]
        );
        let body = crate::resources::task_service::body_of(&task);
        assert_eq!(body["TaskStatus"], "Warning");
        assert_eq!(body["Description"], "3 blocks differ");
    }

    #[tokio::test]
    async fn only_finished_tasks_make_room() {
        let dir = tempfile::tempdir().unwrap();
        let tasks = Tasks::load(Store::open(dir.path()).unwrap(), Arc::default())
            .await
            .unwrap();
        let running = tasks.start("long", "POST", "/z").await.unwrap();
        for _ in 0..MAX_TASKS + 5 {
            let task = tasks.start("short", "POST", "/z").await.unwrap();
            task.finish(Err(RedfishError::not_found("Volume", "9")))
                .await
                .unwrap();
        }
        let all = tasks.list();
        assert_eq!(all.len(), MAX_TASKS);
        assert!(all.iter().any(|t| t.id == running.id));
    }
}
