//! Manager accounts: stored in sled, passwords hashed with argon2id,
//! locked out after repeated failures, and the first `admin` account
//! created at first start (password from `SHOAL_ADMIN_PASSWORD`, else
//! generated and written once to `<state>/initial-admin-password`).

use shoal_appliance::locks::Recover;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use serde::{Deserialize, Serialize};

use super::privileges::Role;
use crate::store::{Store, StoreError, Table};

/// Longest accepted user name.
pub const MAX_USER_NAME: usize = 64;
/// Most accounts the service holds.
pub const MAX_ACCOUNTS: usize = 64;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Account {
    /// The URI segment: stable across renames.
    pub id: String,
    pub user_name: String,
    pub role: Role,
    pub password_hash: String,
    pub enabled: bool,
    pub password_change_required: bool,
    /// Bumped on every change; the ETag derives from it.
    pub revision: u64,
}

/// AccountService policy, PATCHable, persisted.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Policy {
    pub min_password_length: usize,
    pub max_password_length: usize,
    pub lockout_threshold: u32,
    pub lockout_duration_s: u64,
    pub lockout_counter_reset_after_s: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            min_password_length: 8,
            max_password_length: 64,
            lockout_threshold: 5,
            lockout_duration_s: 60,
            lockout_counter_reset_after_s: 60,
        }
    }
}

const POLICY_KEY: &str = "account_policy";

/// Why a login failed. Callers answer all of them the same way (401), so
/// a client cannot tell a wrong password from a locked account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFailure {
    BadCredentials,
    LockedOut,
    Disabled,
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("password must be {min} to {max} characters")]
    PasswordLength { min: usize, max: usize },
    #[error("user name {0:?} is already used")]
    Exists(String),
    #[error("user name must be 1 to {MAX_USER_NAME} printable characters without ':' or '/'")]
    BadUserName,
    #[error("the service holds at most {MAX_ACCOUNTS} accounts")]
    TooMany,
    #[error("cannot hash the password: {0}")]
    Hash(String),
    #[error("cannot write {path}: {source}")]
    Secret {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

#[derive(Default)]
struct Failures {
    count: u32,
    last: Option<Instant>,
    locked_until: Option<Instant>,
}

impl Failures {
    /// Whether the entry still matters: locked, or its count not yet reset.
    fn is_live(&self, now: Instant, policy: &Policy) -> bool {
        let reset_after = Duration::from_secs(policy.lockout_counter_reset_after_s);
        self.locked_until.is_some_and(|until| now < until)
            || self
                .last
                .is_some_and(|last| now.duration_since(last) <= reset_after)
    }
}

/// Names that are no account, whose failed logins are remembered so that
/// such a name locks out like an account would (lockout does not tell
/// which names exist). Kept apart from the accounts' counters, so guessing
/// names can neither share nor evict a real account's counter; entries
/// expire, and beyond this many the stalest is dropped.
pub const MAX_UNKNOWN_NAMES: usize = 256;

/// Whose failures a login counts towards.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Subject {
    /// An account, by its ID (stable across renames).
    Account(String),
    /// A well-formed name no account has.
    Unknown(String),
}

/// Failed logins: one counter per account (at most `MAX_ACCOUNTS`), and a
/// bounded, expiring table for unknown names.
#[derive(Default)]
struct FailureTable {
    accounts: HashMap<String, Failures>,
    unknown: HashMap<String, Failures>,
}

impl FailureTable {
    fn get(&self, subject: &Subject) -> Option<&Failures> {
        match subject {
            Subject::Account(id) => self.accounts.get(id),
            Subject::Unknown(name) => self.unknown.get(name),
        }
    }

    fn remove(&mut self, subject: &Subject) {
        match subject {
            Subject::Account(id) => self.accounts.remove(id),
            Subject::Unknown(name) => self.unknown.remove(name),
        };
    }

    /// The entry of `subject`, made room for if it is a new unknown name.
    fn entry(&mut self, subject: &Subject, now: Instant, policy: &Policy) -> &mut Failures {
        match subject {
            Subject::Account(id) => self.accounts.entry(id.clone()).or_default(),
            Subject::Unknown(name) => {
                if !self.unknown.contains_key(name) && self.unknown.len() >= MAX_UNKNOWN_NAMES {
                    self.unknown.retain(|_, f| f.is_live(now, policy));
                    if self.unknown.len() >= MAX_UNKNOWN_NAMES {
                        let stalest = self
                            .unknown
                            .iter()
                            .min_by_key(|(_, f)| f.last)
                            .map(|(name, _)| name.clone());
                        if let Some(stalest) = stalest {
                            self.unknown.remove(&stalest);
                        }
                    }
                }
                self.unknown.entry(name.clone()).or_default()
            }
        }
    }
}

/// Password hashes computed at once. Each argon2 run holds 7 MiB and a
/// core for tens of milliseconds; a burst of logins or HTTP Basic requests queues here
/// instead of multiplying that.
pub const HASHES_AT_ONCE: usize = 2;

pub struct Accounts {
    store: Store,
    failures: Mutex<FailureTable>,
    hashing: tokio::sync::Semaphore,
}

/// argon2id with m = 7 MiB, t = 5, p = 1: one of the equivalent
/// configurations OWASP's password storage guidance lists, the one that
/// holds the least memory (argon2's default, 19 MiB with t = 2, would more
/// than double the service's footprint during a login). Verification reads
/// the parameters from the stored hash, so hashes made with other
/// parameters keep working.
fn hasher() -> Argon2<'static> {
    const M_COST_KIB: u32 = 7 * 1024;
    const T_COST: u32 = 5;
    let params = argon2::Params::new(M_COST_KIB, T_COST, 1, None).expect("valid argon2 parameters");
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

fn hash(password: &str) -> Result<String, AccountError> {
    hasher()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|parsed| {
        hasher()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A password nobody chose: 20 characters from a 58-letter alphabet
/// without look-alikes (I, O, l, o), about 117 bits.
fn generate_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0123456789";
    let random = uuid::Uuid::new_v4().as_u128() ^ (uuid::Uuid::new_v4().as_u128() << 7);
    let mut n = random;
    (0..20)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u128) as usize] as char;
            n /= ALPHABET.len() as u128;
            c
        })
        .collect()
}

pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_USER_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && c != ':' && c != '/')
}

impl Accounts {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            failures: Mutex::new(FailureTable::default()),
            hashing: tokio::sync::Semaphore::new(HASHES_AT_ONCE),
        }
    }

    /// Runs an argon2 computation on the blocking pool, at most
    /// `HASHES_AT_ONCE` at a time.
    async fn hashing<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AccountError> {
        let _slot = self
            .hashing
            .acquire()
            .await
            .map_err(|e| AccountError::Hash(e.to_string()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| AccountError::Hash(e.to_string()))
    }

    pub fn policy(&self) -> Result<Policy, StoreError> {
        Ok(self
            .store
            .get(Table::Settings, POLICY_KEY)?
            .unwrap_or_default())
    }

    pub async fn set_policy(&self, policy: &Policy) -> Result<(), StoreError> {
        self.store.put(Table::Settings, POLICY_KEY, policy).await
    }

    pub fn list(&self) -> Result<Vec<Account>, StoreError> {
        let mut accounts: Vec<Account> = self.store.list(Table::Accounts)?;
        accounts.sort_by_key(|a| a.id.parse::<u64>().unwrap_or(u64::MAX));
        Ok(accounts)
    }

    pub fn get(&self, id: &str) -> Result<Option<Account>, StoreError> {
        self.store.get(Table::Accounts, id)
    }

    pub fn by_user_name(&self, user_name: &str) -> Result<Option<Account>, StoreError> {
        Ok(self.list()?.into_iter().find(|a| a.user_name == user_name))
    }

    /// Creates `admin` if there is no account at all. Returns where the
    /// generated password was written, if one was generated.
    pub async fn bootstrap(
        &self,
        state_dir: &Path,
    ) -> Result<Option<std::path::PathBuf>, AccountError> {
        if !self.list()?.is_empty() {
            return Ok(None);
        }
        let (password, written) = match std::env::var("SHOAL_ADMIN_PASSWORD") {
            Ok(password) if !password.is_empty() => (password, None),
            _ => {
                let password = generate_password();
                let path = state_dir.join("initial-admin-password");
                write_secret(&path, &password).map_err(|source| AccountError::Secret {
                    path: path.clone(),
                    source,
                })?;
                (password, Some(path))
            }
        };
        self.create("admin", &password, Role::Administrator, true, false)
            .await?;
        Ok(written)
    }

    pub async fn create(
        &self,
        user_name: &str,
        password: &str,
        role: Role,
        enabled: bool,
        password_change_required: bool,
    ) -> Result<Account, AccountError> {
        if !valid_user_name(user_name) {
            return Err(AccountError::BadUserName);
        }
        self.check_password(password)?;
        let accounts = self.list()?;
        if accounts.iter().any(|a| a.user_name == user_name) {
            return Err(AccountError::Exists(user_name.to_string()));
        }
        if accounts.len() >= MAX_ACCOUNTS {
            return Err(AccountError::TooMany);
        }
        let next_id = accounts
            .iter()
            .filter_map(|a| a.id.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        let password = password.to_string();
        let password_hash = self.hashing(move || hash(&password)).await??;
        let account = Account {
            id: next_id.to_string(),
            user_name: user_name.to_string(),
            role,
            password_hash,
            enabled,
            password_change_required,
            revision: 1,
        };
        self.store
            .put(Table::Accounts, &account.id, &account)
            .await?;
        Ok(account)
    }

    pub fn check_password(&self, password: &str) -> Result<(), AccountError> {
        let policy = self.policy()?;
        let length = password.chars().count();
        if length < policy.min_password_length || length > policy.max_password_length {
            return Err(AccountError::PasswordLength {
                min: policy.min_password_length,
                max: policy.max_password_length,
            });
        }
        Ok(())
    }

    /// Hashes a new password for `account` (the caller saves it).
    pub async fn set_password(
        &self,
        account: &mut Account,
        password: &str,
    ) -> Result<(), AccountError> {
        self.check_password(password)?;
        let password = password.to_string();
        account.password_hash = self.hashing(move || hash(&password)).await??;
        Ok(())
    }

    /// Whether `password` is `account`'s current password (no lockout
    /// counting: the caller is already authenticated).
    pub async fn is_password(&self, account: &Account, password: &str) -> bool {
        let candidate = password.to_string();
        let stored = account.password_hash.clone();
        self.hashing(move || verify(&candidate, &stored))
            .await
            .unwrap_or(false)
    }

    pub async fn save(&self, account: &mut Account) -> Result<(), StoreError> {
        account.revision += 1;
        self.store.put(Table::Accounts, &account.id, account).await
    }

    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        self.store.remove(Table::Accounts, id).await
    }

    /// Checks a user name and password, counting failures towards lockout.
    pub async fn login(&self, user_name: &str, password: &str) -> Result<Account, LoginFailure> {
        // No account has such a name: refused before any table or hash.
        if !valid_user_name(user_name) {
            return Err(LoginFailure::BadCredentials);
        }
        let policy = self.policy().unwrap_or_default();
        let now = Instant::now();
        let account = self.by_user_name(user_name).ok().flatten();
        let subject = match &account {
            Some(account) => Subject::Account(account.id.clone()),
            None => Subject::Unknown(user_name.to_string()),
        };
        if self.is_locked(&subject, now) {
            return Err(LoginFailure::LockedOut);
        }
        let candidate = password.to_string();
        let stored = account.as_ref().map(|a| a.password_hash.clone());
        // Verify even for unknown users, so timing does not reveal names.
        let ok = self
            .hashing(move || match stored {
                Some(stored) => verify(&candidate, &stored),
                None => {
                    let _ = verify(&candidate, dummy_hash());
                    false
                }
            })
            .await
            .unwrap_or(false);
        match account {
            Some(account) if ok => {
                self.failures.locked().remove(&subject);
                if account.enabled {
                    Ok(account)
                } else {
                    Err(LoginFailure::Disabled)
                }
            }
            _ => {
                self.record_failure(&subject, user_name, now, &policy);
                Err(LoginFailure::BadCredentials)
            }
        }
    }

    fn is_locked(&self, subject: &Subject, now: Instant) -> bool {
        let failures = self.failures.locked();
        failures
            .get(subject)
            .and_then(|f| f.locked_until)
            .is_some_and(|until| now < until)
    }

    fn record_failure(&self, subject: &Subject, user_name: &str, now: Instant, policy: &Policy) {
        if policy.lockout_threshold == 0 {
            return;
        }
        let mut failures = self.failures.locked();
        let entry = failures.entry(subject, now, policy);
        if !entry.is_live(now, policy) {
            *entry = Failures::default();
        }
        entry.count += 1;
        entry.last = Some(now);
        if entry.count >= policy.lockout_threshold {
            entry.locked_until = Some(now + Duration::from_secs(policy.lockout_duration_s));
            entry.count = 0;
            if matches!(subject, Subject::Account(_)) {
                tracing::warn!(
                    user = user_name,
                    "account locked out after repeated login failures"
                );
            }
        }
    }

    /// Whether account `id` is locked out now (for the `Locked` property).
    pub fn locked(&self, id: &str) -> bool {
        self.is_locked(&Subject::Account(id.to_string()), Instant::now())
    }

    /// Clears account `id`'s lockout (PATCH `Locked: false`, or the
    /// account is gone).
    pub fn unlock(&self, id: &str) {
        self.failures
            .locked()
            .remove(&Subject::Account(id.to_string()));
    }

    /// Unknown names remembered now (bounded by `MAX_UNKNOWN_NAMES`).
    pub fn unknown_names_tracked(&self) -> usize {
        self.failures.locked().unknown.len()
    }
}

/// A hash of a password nobody knows, verified against when the user name
/// is unknown so that the answer takes as long as for a real account.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash(&generate_password()).unwrap_or_default())
}

fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(file, "{secret}")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn accounts() -> (tempfile::TempDir, Accounts) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        (dir, Accounts::new(store))
    }

    #[tokio::test]
    async fn login_checks_the_hash_and_locks_out() {
        let (_dir, accounts) = accounts().await;
        let policy = Policy {
            lockout_threshold: 3,
            ..Policy::default()
        };
        accounts.set_policy(&policy).await.unwrap();
        accounts
            .create("alice", "correct horse", Role::Operator, true, false)
            .await
            .unwrap();
        assert_eq!(
            accounts.login("alice", "correct horse").await.unwrap().role,
            Role::Operator
        );
        for _ in 0..3 {
            assert_eq!(
                accounts.login("alice", "wrong").await,
                Err(LoginFailure::BadCredentials)
            );
        }
        assert_eq!(
            accounts.login("alice", "correct horse").await,
            Err(LoginFailure::LockedOut),
            "locked even with the right password"
        );
        let alice = accounts.by_user_name("alice").unwrap().unwrap();
        assert!(accounts.locked(&alice.id));
        accounts.unlock(&alice.id);
        assert!(accounts.login("alice", "correct horse").await.is_ok());
        assert_eq!(
            accounts.login("nobody", "x").await,
            Err(LoginFailure::BadCredentials)
        );
    }

    #[tokio::test]
    async fn unknown_names_neither_share_nor_evict_an_account_counter() {
        let (_dir, accounts) = accounts().await;
        let policy = Policy {
            lockout_threshold: 2,
            ..Policy::default()
        };
        accounts.set_policy(&policy).await.unwrap();
        accounts
            .create("alice", "correct horse", Role::Operator, true, false)
            .await
            .unwrap();
        for n in 0..MAX_UNKNOWN_NAMES + 20 {
            let _ = accounts.login(&format!("junk{n}"), "x").await;
        }
        assert_eq!(accounts.unknown_names_tracked(), MAX_UNKNOWN_NAMES);
        for _ in 0..2 {
            let _ = accounts.login("alice", "wrong").await;
        }
        assert_eq!(
            accounts.login("alice", "correct horse").await,
            Err(LoginFailure::LockedOut)
        );
        let long = "x".repeat(MAX_USER_NAME + 1);
        assert_eq!(
            accounts.login(&long, "x").await,
            Err(LoginFailure::BadCredentials)
        );
        assert!(
            !accounts
                .failures
                .lock()
                .unwrap()
                .unknown
                .contains_key(&long)
        );
    }

    #[tokio::test]
    async fn policy_and_names_are_enforced() {
        let (_dir, accounts) = accounts().await;
        assert!(matches!(
            accounts
                .create("bob", "short", Role::ReadOnly, true, false)
                .await,
            Err(AccountError::PasswordLength { .. })
        ));
        assert!(matches!(
            accounts
                .create("a:b", "long enough", Role::ReadOnly, true, false)
                .await,
            Err(AccountError::BadUserName)
        ));
        accounts
            .create("bob", "long enough", Role::ReadOnly, true, false)
            .await
            .unwrap();
        assert!(matches!(
            accounts
                .create("bob", "long enough", Role::ReadOnly, true, false)
                .await,
            Err(AccountError::Exists(_))
        ));
    }

    #[tokio::test]
    async fn bootstrap_writes_a_generated_password_once() {
        let (dir, accounts) = accounts().await;
        let written = accounts.bootstrap(dir.path()).await.unwrap().unwrap();
        let password = std::fs::read_to_string(&written).unwrap();
        let admin = accounts.login("admin", password.trim()).await.unwrap();
        assert_eq!(admin.role, Role::Administrator);
        assert_eq!(accounts.bootstrap(dir.path()).await.unwrap(), None);
    }
}
