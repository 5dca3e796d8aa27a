//! Database connections shared by every service: SQLite (embedded default, a
//! file under the data dir) or PostgreSQL, chosen by the URL's scheme.

use std::{path::Path, sync::Arc, time::Duration};

use sea_orm::{ConnAcquireErr, ConnectOptions, Database, DatabaseConnection, DbErr, RuntimeErr};
use sea_orm_migration::MigratorTrait;

use crate::Error;

/// Longest a statement waits for a connection: a free one from the pool,
/// or a new one while the database cannot be reached (sqlx retries a
/// refused connection until then). Past it the caller hears UNAVAILABLE
/// (see [`unreachable`]): a database that is down or restarting is said to
/// be so promptly — before the caller's own deadline, and before the
/// server's request timeout — rather than every request hanging on it; a
/// pool so busy that no connection comes free in this long is overloaded,
/// and saying so is right too. A blip shorter than this is ridden out.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a service starting up waits for its database to accept
/// connections (one that starts beside its database is not refused by it).
const STARTUP_PATIENCE: Duration = Duration::from_secs(10);

/// The sqlx URL of a SQLite file, created if missing.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

/// Connects and brings the schema up to date with the service's migrator.
pub async fn connect<M: MigratorTrait>(
    url: &str,
    max_connections: u32,
) -> Result<DatabaseConnection, Error> {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .map(|rest| rest.split('?').next().unwrap_or(rest))
        && let Some(dir) = Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::internal("creating the data directory", e))?;
    }
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(max_connections)
        .connect_timeout(ACQUIRE_TIMEOUT)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // Statements can carry identifiers; they never go to the log.
        .sqlx_logging(false);
    let started = std::time::Instant::now();
    let db = loop {
        match Database::connect(options.clone()).await {
            Ok(db) => break db,
            Err(e) if unreachable(&e) && started.elapsed() < STARTUP_PATIENCE => {}
            Err(e) => {
                return Err(Error::unavailable("database unreachable").context(redact_db(&e)));
            }
        }
    };
    if db.get_database_backend() == sea_orm::DatabaseBackend::Sqlite {
        // WAL lets readers run beside the one writer (sqlx already sets a
        // busy timeout, so writers wait their turn).
        use sea_orm::ConnectionTrait;
        db.execute_unprepared("PRAGMA journal_mode=WAL").await?;
    }
    M::up(&db, None)
        .await
        .map_err(|e| Error::internal("running migrations", e))?;
    Ok(db)
}

/// Queues a process's own writers to a SQLite database, in order.
///
/// SQLite lets one writer in at a time and makes the others poll: its busy
/// handler sleeps and retries (1 ms, 2 ms, 5 ms, ... up to 100 ms), so under
/// concurrent writes most of a write's time was that sleeping, and its tail
/// latency the longest sleeps. Writers that take their turn here wait in a
/// queue instead and are woken the moment the last one commits. PostgreSQL
/// takes concurrent writers itself: there the gate is open.
#[derive(Clone, Default)]
pub struct WriteGate(Option<Arc<tokio::sync::Mutex<()>>>);

impl WriteGate {
    /// Closed (queuing) for SQLite, open for anything else.
    pub fn for_db(db: &DatabaseConnection) -> Self {
        match db.get_database_backend() {
            sea_orm::DatabaseBackend::Sqlite => WriteGate(Some(Arc::default())),
            _ => WriteGate(None),
        }
    }

    /// Always queuing, whatever the database: for writers that must take
    /// turns among themselves too (a memory backend's audited changes).
    pub fn closed() -> Self {
        WriteGate(Some(Arc::default()))
    }

    /// Waits for this writer's turn; hold what it returns until the write
    /// transaction has committed or rolled back.
    pub async fn turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.0 {
            Some(gate) => Some(gate.lock().await),
            None => None,
        }
    }
}

/// Whether `err` says the database could not be reached — down,
/// restarting, the connection lost, or no connection to be had within
/// [`ACQUIRE_TIMEOUT`] — rather than that a statement failed: the caller
/// may try again, and hears UNAVAILABLE (`Error::internal` asks this of a
/// database error).
pub fn unreachable(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(ConnAcquireErr::Timeout | ConnAcquireErr::ConnectionClosed) => {
            true
        }
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => sqlx_unreachable(e),
        _ => false,
    }
}

fn sqlx_unreachable(err: &sea_orm::sqlx::Error) -> bool {
    use sea_orm::sqlx::Error;
    match err {
        Error::Io(_) | Error::PoolTimedOut | Error::PoolClosed | Error::WorkerCrashed => true,
        // SQLSTATE class 08 (connection exception); 57P01-57P03: the
        // server is shutting down, was shut down, or is starting up.
        Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

/// A connection error says which kind of failure it was, never the URL
/// (which may hold a password).
fn redact_db(err: &sea_orm::DbErr) -> &'static str {
    match err {
        sea_orm::DbErr::Conn(_) => "connecting",
        _ => "opening the database",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sea_orm::{ConnectionTrait, sqlx};

    use super::*;
    use crate::error::Code;

    fn query_failed(err: sqlx::Error) -> DbErr {
        DbErr::Query(RuntimeErr::SqlxError(Arc::new(err)))
    }

    #[test]
    fn a_lost_or_unobtainable_connection_is_unreachable_a_failed_statement_is_not() {
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        for unreachable_err in [
            DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
            DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
            query_failed(sqlx::Error::Io(reset)),
            DbErr::Exec(RuntimeErr::SqlxError(Arc::new(sqlx::Error::PoolTimedOut))),
            DbErr::Conn(RuntimeErr::SqlxError(Arc::new(sqlx::Error::PoolClosed))),
        ] {
            assert!(unreachable(&unreachable_err), "{unreachable_err:?}");
        }
        for failed in [
            query_failed(sqlx::Error::RowNotFound),
            DbErr::RecordNotFound("x".into()),
            DbErr::Custom("x".into()),
        ] {
            assert!(!unreachable(&failed), "{failed:?}");
        }
    }

    /// Regression: a PostgreSQL restart under load made every service
    /// answer INTERNAL ("appending to the audit log" with the connection
    /// reset); a database that cannot be reached is UNAVAILABLE, with the
    /// cause kept out of the message.
    #[tokio::test]
    async fn a_database_that_cannot_be_reached_is_unavailable_a_bad_statement_internal() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Database::connect(sqlite_url(&dir.path().join("t.db")).as_str())
            .await
            .expect("sqlite");
        let bad = db
            .execute_unprepared("SELECT * FROM no_such_table")
            .await
            .expect_err("no such table");
        let err = Error::internal("reading", bad);
        assert_eq!(
            (err.code, err.message.as_str()),
            (Code::Internal, "reading")
        );

        db.clone().close().await.expect("closed");
        let gone = db
            .execute_unprepared("SELECT 1")
            .await
            .expect_err("the pool is closed");
        let err = Error::internal("reading", gone);
        assert_eq!(err.code, Code::Unavailable, "{err:?}");
        assert_eq!(
            err.message,
            "reading: the database cannot be reached; try again"
        );
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }
}
