//! What the `memory` storage backends share: state behind one lock and, for
//! a service whose changes are audited, the order that keeps them audited.
//!
//! A SQL store writes a change and its audit event in one transaction. A
//! memory backend has no transaction to share with its outbox (a SQLite
//! database under the data dir, so that events outlive the process and the
//! relay delivers them as it does everywhere else), so [`AuditedState`]
//! makes the event durable first and changes the state after: a change is
//! never unaudited. The change is checked before its event is written and
//! audited changes take turns, so an event is written only for a change
//! that is then made.

use std::sync::{Mutex, MutexGuard};

use sea_orm::{DatabaseConnection, TransactionTrait};
use sharedcare_proto::audit::v1::AuditEvent;

use crate::{Error, db::WriteGate, outbox};

/// A memory backend's state behind one lock.
#[derive(Default)]
pub struct MemoryState<S> {
    state: Mutex<S>,
}

impl<S> MemoryState<S> {
    pub fn new(state: S) -> Self {
        MemoryState {
            state: Mutex::new(state),
        }
    }

    /// The state; INTERNAL if a writer panicked while holding it (it may
    /// have left a change half made).
    pub fn lock(&self) -> Result<MutexGuard<'_, S>, Error> {
        self.state
            .lock()
            .map_err(|_| Error::internal("the memory store", "a writer panicked"))
    }
}

/// A memory backend's state whose changes are audited in the service's
/// outbox table.
pub struct AuditedState<S> {
    state: MemoryState<S>,
    outbox: DatabaseConnection,
    table: &'static str,
    /// Audited changes take turns, with each other and with the outbox's
    /// relay: what a change's check saw still holds when it is applied.
    writes: WriteGate,
}

impl<S> AuditedState<S> {
    /// `outbox` must hold `table` (the service's migrations create it).
    pub fn new(state: S, outbox: DatabaseConnection, table: &'static str) -> Self {
        AuditedState {
            state: MemoryState::new(state),
            outbox,
            table,
            writes: WriteGate::closed(),
        }
    }

    /// The state, for reads and for changes that are not audited.
    pub fn lock(&self) -> Result<MutexGuard<'_, S>, Error> {
        self.state.lock()
    }

    /// The outbox's database, for the relay.
    pub fn connection(&self) -> DatabaseConnection {
        self.outbox.clone()
    }

    /// The turn the relay's writes must take with this state's changes.
    pub fn write_gate(&self) -> WriteGate {
        self.writes.clone()
    }

    /// One audited change. `check` sees the state as `apply` will find it:
    /// an error refuses the change and `Some(answer)` means there is nothing
    /// to change (neither is audited). Otherwise `audit` is made durable in
    /// the outbox (failing, as a duplicate event id does, changes nothing)
    /// and then `apply` makes the change.
    pub async fn change<T>(
        &self,
        audit: &AuditEvent,
        check: impl FnOnce(&S) -> Result<Option<T>, Error>,
        apply: impl FnOnce(&mut S) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.change_all(std::slice::from_ref(audit), check, apply)
            .await
    }

    /// As [`change`](Self::change), for a change that touches several
    /// patients: every event is made durable, in one transaction, first.
    pub async fn change_all<T>(
        &self,
        audits: &[AuditEvent],
        check: impl FnOnce(&S) -> Result<Option<T>, Error>,
        apply: impl FnOnce(&mut S) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let _turn = self.writes.turn().await;
        let answer = {
            let state = self.lock()?;
            check(&state)?
        };
        if let Some(answer) = answer {
            return Ok(answer);
        }
        let context = "recording an audit event in the outbox";
        let txn = self
            .outbox
            .begin()
            .await
            .map_err(|e| Error::internal(context, e))?;
        for audit in audits {
            outbox::insert_in(&txn, self.table, audit).await?;
        }
        txn.commit()
            .await
            .map_err(|e| Error::internal(context, e))?;
        let mut state = self.lock()?;
        apply(&mut state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::create_table;
    use sea_orm::ConnectionTrait;

    const TABLE: &str = "test_audit_outbox";

    async fn state() -> (AuditedState<Vec<u32>>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = crate::db::sqlite_url(&dir.path().join("outbox.db"));
        let db = sea_orm::Database::connect(url.as_str())
            .await
            .expect("sqlite");
        db.execute(&create_table(TABLE)).await.expect("table");
        (AuditedState::new(Vec::new(), db, TABLE), dir)
    }

    async fn audited(state: &AuditedState<Vec<u32>>) -> usize {
        let select = sea_orm::sea_query::Query::select()
            .column(sea_orm::sea_query::Alias::new("event_id"))
            .from(sea_orm::sea_query::Alias::new(TABLE))
            .to_owned();
        state.outbox.query_all(&select).await.expect("rows").len()
    }

    fn event(id: &str) -> AuditEvent {
        AuditEvent {
            event_id: id.to_owned(),
            ..AuditEvent::default()
        }
    }

    async fn push(state: &AuditedState<Vec<u32>>, event_id: &str, n: u32) -> Result<u32, Error> {
        state
            .change(
                &event(event_id),
                |s| {
                    if s.contains(&n) {
                        return Err(Error::already_exists("taken"));
                    }
                    Ok((n == 0).then_some(0))
                },
                |s| {
                    s.push(n);
                    Ok(n)
                },
            )
            .await
    }

    #[tokio::test]
    async fn only_a_change_that_is_made_is_audited_and_only_once_audited() {
        let (state, _dir) = state().await;
        assert_eq!(push(&state, "e1", 1).await.expect("changed"), 1);
        // Refused by the check, answered by it: neither is audited.
        assert!(push(&state, "e2", 1).await.is_err());
        assert_eq!(push(&state, "e3", 0).await.expect("answered"), 0);
        // The event cannot be stored (its id is taken): nothing changes.
        assert!(push(&state, "e1", 2).await.is_err());
        assert_eq!(*state.lock().expect("lock"), vec![1]);
        assert_eq!(audited(&state).await, 1);
        // ...and the check's refusals left the event ids free.
        assert_eq!(push(&state, "e2", 2).await.expect("changed"), 2);
        assert_eq!(push(&state, "e3", 3).await.expect("changed"), 3);
        assert_eq!(audited(&state).await, 3);
    }
}
