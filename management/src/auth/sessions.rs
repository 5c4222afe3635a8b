//! Redfish sessions: `X-Auth-Token`s handed out by POST to the Sessions
//! collection, expiring after `SessionTimeout` seconds idle. The table is
//! bounded, and so is each account's share of it; a login beyond either
//! limit first evicts expired sessions and is refused if none expired.
//! Each session has an `ended` token, cancelled when it is removed for
//! whatever reason, which ends what was opened with it (SSE streams).
//! Sessions live in memory only: a restarted service asks clients to log
//! in again.

use shoal_appliance::locks::Recover;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use super::privileges::Role;

/// Sessions one account may hold at once: one user (or one leaked
/// password) cannot fill the table every other user logs in through.
pub const MAX_SESSIONS_PER_ACCOUNT: usize = 16;

/// Why a login got no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRefused {
    TableFull,
    AccountLimit,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub token: String,
    pub user_name: String,
    pub account_id: String,
    pub role: Role,
    pub password_change_required: bool,
    pub created: SystemTime,
    /// Cancelled when the session ends (logout, expiry, account change).
    pub ended: CancellationToken,
    last_used: Instant,
}

/// Removes the sessions `remove` picks, ending each.
fn remove_where(table: &mut HashMap<String, Session>, mut remove: impl FnMut(&Session) -> bool) {
    table.retain(|_, session| {
        let gone = remove(session);
        if gone {
            session.ended.cancel();
        }
        !gone
    });
}

pub struct Sessions {
    timeout: Mutex<Duration>,
    limit: usize,
    /// By token.
    table: Mutex<HashMap<String, Session>>,
    next_id: Mutex<u64>,
}

/// 256 bits from the OS random source, hex encoded.
fn new_token() -> String {
    let a = uuid::Uuid::new_v4().as_u128();
    let b = uuid::Uuid::new_v4().as_u128();
    format!("{a:032x}{b:032x}")
}

impl Sessions {
    pub fn new(timeout: Duration, limit: usize) -> Self {
        Self {
            timeout: Mutex::new(timeout),
            limit,
            table: Mutex::new(HashMap::new()),
            next_id: Mutex::new(0),
        }
    }

    pub fn timeout(&self) -> Duration {
        *self.timeout.locked()
    }

    pub fn set_timeout(&self, timeout: Duration) {
        *self.timeout.locked() = timeout;
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Opens a session, unless the table, or the account's share of it,
    /// is full of live sessions.
    pub fn open(
        &self,
        user_name: &str,
        account_id: &str,
        role: Role,
        password_change_required: bool,
    ) -> Result<Session, SessionRefused> {
        let timeout = self.timeout();
        let mut table = self.table.locked();
        let now = Instant::now();
        let held = |table: &HashMap<String, Session>| {
            table
                .values()
                .filter(|s| s.account_id == account_id)
                .count()
        };
        if table.len() >= self.limit || held(&table) >= MAX_SESSIONS_PER_ACCOUNT {
            remove_where(&mut table, |s| now.duration_since(s.last_used) >= timeout);
            if table.len() >= self.limit {
                return Err(SessionRefused::TableFull);
            }
            if held(&table) >= MAX_SESSIONS_PER_ACCOUNT {
                return Err(SessionRefused::AccountLimit);
            }
        }
        let id = {
            let mut next = self.next_id.locked();
            *next += 1;
            next.to_string()
        };
        let session = Session {
            id,
            token: new_token(),
            user_name: user_name.to_string(),
            account_id: account_id.to_string(),
            role,
            password_change_required,
            created: SystemTime::now(),
            ended: CancellationToken::new(),
            last_used: now,
        };
        table.insert(session.token.clone(), session.clone());
        Ok(session)
    }

    /// The live session for `token`, touched; expired ones are removed.
    pub fn authenticate(&self, token: &str) -> Option<Session> {
        let timeout = self.timeout();
        let mut table = self.table.locked();
        let now = Instant::now();
        let session = table.get_mut(token)?;
        if now.duration_since(session.last_used) >= timeout {
            if let Some(expired) = table.remove(token) {
                expired.ended.cancel();
            }
            return None;
        }
        session.last_used = now;
        Some(session.clone())
    }

    pub fn get(&self, id: &str) -> Option<Session> {
        self.list().into_iter().find(|s| s.id == id)
    }

    /// Live sessions, oldest first.
    pub fn list(&self) -> Vec<Session> {
        let timeout = self.timeout();
        let mut table = self.table.locked();
        let now = Instant::now();
        remove_where(&mut table, |s| now.duration_since(s.last_used) >= timeout);
        let mut sessions: Vec<Session> = table.values().cloned().collect();
        sessions.sort_by_key(|s| s.id.parse::<u64>().unwrap_or(u64::MAX));
        sessions
    }

    pub fn close(&self, id: &str) -> bool {
        let mut table = self.table.locked();
        let before = table.len();
        remove_where(&mut table, |s| s.id == id);
        table.len() != before
    }

    /// Ends every session of an account (deleted, disabled or re-roled),
    /// except `keep` (the caller's own, after it changed its password).
    pub fn close_account(&self, account_id: &str, keep: Option<&str>) {
        let mut table = self.table.locked();
        remove_where(&mut table, |s| {
            s.account_id == account_id && Some(s.id.as_str()) != keep
        });
    }

    /// The password was changed: the session may do everything again.
    pub fn clear_password_change(&self, account_id: &str) {
        for session in self.table.locked().values_mut() {
            if session.account_id == account_id {
                session.password_change_required = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_the_table_is_bounded() {
        let sessions = Sessions::new(Duration::from_millis(50), 2);
        let a = sessions.open("a", "1", Role::ReadOnly, false).unwrap();
        let _b = sessions.open("b", "2", Role::ReadOnly, false).unwrap();
        assert_eq!(
            sessions.open("c", "3", Role::ReadOnly, false).unwrap_err(),
            SessionRefused::TableFull
        );
        assert_eq!(sessions.authenticate(&a.token).unwrap().user_name, "a");
        assert_ne!(a.token.len(), 0);
        std::thread::sleep(Duration::from_millis(60));
        assert!(sessions.authenticate(&a.token).is_none(), "expired");
        assert!(a.ended.is_cancelled(), "an expired session has ended");
        assert!(
            sessions.open("c", "3", Role::ReadOnly, false).is_ok(),
            "expired ones make room"
        );
        assert_eq!(sessions.list().len(), 1);
    }

    #[test]
    fn one_account_holds_a_bounded_share_and_closing_ends_sessions() {
        let sessions = Sessions::new(Duration::from_secs(60), 64);
        let held: Vec<Session> = (0..MAX_SESSIONS_PER_ACCOUNT)
            .map(|_| sessions.open("a", "1", Role::ReadOnly, false).unwrap())
            .collect();
        assert_eq!(
            sessions.open("a", "1", Role::ReadOnly, false).unwrap_err(),
            SessionRefused::AccountLimit
        );
        assert!(sessions.open("b", "2", Role::ReadOnly, false).is_ok());
        sessions.close_account("1", Some(&held[0].id));
        assert!(!held[0].ended.is_cancelled(), "kept");
        assert!(held[1..].iter().all(|s| s.ended.is_cancelled()));
        assert_eq!(sessions.list().len(), 2);
    }
}
