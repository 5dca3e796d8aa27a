//! Database connections shared by every service: SQLite (embedded default, a
//! file under the data dir) or PostgreSQL, chosen by the URL's scheme.

use std::{path::Path, time::Duration};

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

/// A connection error says which kind of failure it was, never the URL
/// (which may hold a password).
fn redact_db(err: &sea_orm::DbErr) -> &'static str {
    match err {
        sea_orm::DbErr::Conn(_) => "connecting",
        _ => "opening the database",
    }
}
