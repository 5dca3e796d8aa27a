//! `sharedcare records ...`: maintenance of records' own storage, run with
//! records' configuration (the same `SHAREDCARE_*` variables and config file
//! the service reads), beside the running service.

use std::path::PathBuf;

use clap::Subcommand;
use sharedcare_kit::config::ProcessEnv;
use sharedcare_records::config::RecordsConfig;

use crate::output::out;

#[derive(Debug, Subcommand)]
pub enum RecordsCommand {
    /// After a key rotation (the new key-encryption key current, the old one
    /// in records.previous_key_encryption_keys_file), re-wrap every stored
    /// version's data key under the current key, online. Safe to re-run;
    /// afterwards the old key can be retired.
    Rewrap {
        /// For `sharedcare dev`: its data directory (records' database and
        /// key live there).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

pub async fn run(command: RecordsCommand) -> anyhow::Result<()> {
    let RecordsCommand::Rewrap { data_dir } = command;
    let mut env: std::collections::HashMap<String, String> =
        sharedcare_kit::config::EnvSource::vars(&ProcessEnv);
    if let Some(dir) = data_dir {
        let dir = dir
            .to_str()
            .ok_or_else(|| anyhow::anyhow!("--data-dir must be UTF-8"))?
            .to_owned();
        env.insert("SHAREDCARE_DATABASE__DATA_DIR".into(), dir);
    }
    // records' config asks for its client credentials; re-wrapping calls no
    // other service, so any will do when none are configured.
    env.entry("SHAREDCARE_AUTH__CLIENT_ID".into())
        .or_insert_with(|| "records".into());
    if !env.contains_key("SHAREDCARE_AUTH__CLIENT_SECRET__VALUE")
        && !env.contains_key("SHAREDCARE_AUTH__CLIENT_SECRET__FILE")
    {
        env.insert(
            "SHAREDCARE_AUTH__CLIENT_SECRET__VALUE".into(),
            "unused".into(),
        );
    }
    let cfg = RecordsConfig::load(&env)?;
    let done = sharedcare_records::rewrap_keys(&cfg, |p| {
        eprintln!(
            "{} versions examined, {} re-wrapped",
            p.examined, p.rewrapped
        );
    })
    .await
    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    out!(
        "re-wrapped {} of {} stored versions under the current key-encryption key",
        done.rewrapped,
        done.examined
    );
    Ok(())
}
