//! `framework_get_reactors`: each reactor's CPU, busy and idle time.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use shoal_appliance::jsonrpc::{Router, RpcError};

use super::{Context, method};
use crate::bdev::stats::TICK_RATE;

pub fn register(router: Router, context: &Arc<Context>) -> Router {
    method(router, "framework_get_reactors", context, get_reactors)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

async fn get_reactors(context: Arc<Context>, _: NoParams) -> Result<Value, RpcError> {
    let reactors: Vec<Value> = context
        .reactors
        .iter()
        .map(|r| {
            json!({
                "lcore": r.cpu().unwrap_or(r.index() as usize),
                "pinned": r.cpu().is_some(),
                "busy": r.stats().busy_ns(),
                "idle": r.stats().idle_ns(),
                "in_interrupt": true,
                "messages": r.stats().messages(),
                "lw_threads": [{"name": format!("reactor_{}", r.index()), "id": r.index()}],
            })
        })
        .collect();
    Ok(json!({"tick_rate": TICK_RATE, "cluster": context.cluster, "reactors": reactors}))
}
