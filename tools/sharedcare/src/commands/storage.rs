//! `sharedcare storage-server`: the reference implementation of records'
//! storage protocol (`sharedcare.records.storage.v1`) on SQLite or
//! PostgreSQL, for records configured with `database.backend = "remote"`.
//! A provider runs its own implementation, in any language, in its place.
//!
//! It holds only what records sends it: resources sealed by records (it
//! never sees a key) and their index fields. It has no authentication of
//! its own: run it where only records can reach it (a private network, or
//! mTLS in front of it).

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context;
use clap::Args;
use sharedcare_records::store::{SqlStore, storage_server::storage_service};

use crate::output::out;

#[derive(Debug, Args)]
pub struct StorageServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50060")]
    pub listen: SocketAddr,
    /// Database URL (`sqlite://...` or `postgres://...`) [default: a SQLite
    /// file in --data-dir].
    #[arg(long, env = "SHAREDCARE_STORAGE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Directory for the default SQLite file.
    #[arg(long, default_value = "storage-data")]
    pub data_dir: PathBuf,
}

pub async fn run(args: StorageServerArgs) -> anyhow::Result<()> {
    let url = match args.database_url {
        Some(url) => url,
        None => sharedcare_kit::db::sqlite_url(&args.data_dir.join("record-storage.db")),
    };
    let store = SqlStore::connect(&url, 8)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))
        .context("opening the storage database")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    out!(
        "records storage (sharedcare.records.storage.v1) on {}",
        listener.local_addr()?
    );
    tonic::transport::Server::builder()
        .add_service(storage_service(store))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        )
        .await
        .context("serving")?;
    Ok(())
}
