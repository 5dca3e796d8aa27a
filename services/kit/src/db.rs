//! Database connections shared by every service: SQLite (embedded default, a
//! file under the data dir) or PostgreSQL, chosen by the URL's scheme.

use std::{path::Path, sync::Arc, time::Duration};

use sea_orm::{ConnectOptions, Database, DatabaseConnection};
use sea_orm_migration::MigratorTrait;

use crate::Error;

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
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10))
        // Statements can carry identifiers; they never go to the log.
        .sqlx_logging(false);
    let db = Database::connect(options)
        .await
        .map_err(|e| Error::unavailable("database unreachable").context(redact_db(&e)))?;
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

/// A connection error says which kind of failure it was, never the URL
/// (which may hold a password).
fn redact_db(err: &sea_orm::DbErr) -> &'static str {
    match err {
        sea_orm::DbErr::Conn(_) => "connecting",
        _ => "opening the database",
    }
}
