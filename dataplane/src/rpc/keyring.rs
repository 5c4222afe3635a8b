//! Key methods in the shape of SPDK's keyring: `keyring_file_add_key`,
//! `keyring_file_remove_key`, `keyring_get_keys`. Keys are DH-HMAC-CHAP
//! secrets read from files only their owner may read; the methods take
//! and return key names and paths, never a secret.

use std::path::PathBuf;
use std::sync::Arc;

use nix::errno::Errno;
use serde::Deserialize;
use serde_json::{Value, json};
use shoal_appliance::jsonrpc::{Router, RpcError};

use super::{Context, method};
use crate::nvmf::auth::keyring::KeyringError;

pub fn register(router: Router, context: &Arc<Context>) -> Router {
    let router = method(router, "keyring_file_add_key", context, add_key);
    let router = method(router, "keyring_file_remove_key", context, remove_key);
    method(router, "keyring_get_keys", context, get_keys)
}

fn error(e: KeyringError) -> RpcError {
    match e {
        KeyringError::Exists(_) => RpcError::errno(Errno::EEXIST, e.to_string()),
        KeyringError::NotFound(_) => RpcError::errno(Errno::ENOKEY, e.to_string()),
        KeyringError::Full => RpcError::errno(Errno::ENOSPC, e.to_string()),
        KeyringError::Name(_) | KeyringError::File(_) => RpcError::invalid_params(e.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddKey {
    name: String,
    path: PathBuf,
}

async fn add_key(context: Arc<Context>, p: AddKey) -> Result<Value, RpcError> {
    context
        .nvmf
        .keyring
        .add_file(&p.name, &p.path)
        .map_err(error)?;
    tracing::info!(name = p.name, path = %p.path.display(), "key added");
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveKey {
    name: String,
}

/// Hosts whose entries name a removed key are refused at their next
/// Connect (never let in without authentication).
async fn remove_key(context: Arc<Context>, p: RemoveKey) -> Result<Value, RpcError> {
    context.nvmf.keyring.remove(&p.name).map_err(error)?;
    tracing::info!(name = p.name, "key removed");
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

async fn get_keys(context: Arc<Context>, _: NoParams) -> Result<Value, RpcError> {
    Ok(context.nvmf.keyring.describe())
}
