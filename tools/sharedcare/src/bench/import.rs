//! `bench --import-dir DIR`: `sharedcare import` of a bulk export, timed,
//! beside its yardstick — a raw SQLite insert loop of the same rows (one
//! transaction per row with its outbox row, as `sqlite-insert` does) — and
//! the ratio of the two, in one run.

use std::path::Path;

use anyhow::anyhow;

use super::{rpc::RawInsert, scenario};
use crate::{
    commands::{
        care::KindArg,
        transfer::{self, ImportArgs},
    },
    connect::Services,
    output::out,
};

pub async fn compare(services: &Services, data_dir: &Path, dir: &Path) -> anyhow::Result<()> {
    let (ods, importer) = scenario::importer(services, data_dir).await?;
    let imported = transfer::import(
        &importer,
        ImportArgs {
            dir: dir.to_owned(),
            ods: ods.to_owned(),
            kind: KindArg::RegisteredGp,
            id_map: None,
            concurrency: 32,
        },
    )
    .await?;
    let rows = transfer::record_lines(dir)?;
    let raw = RawInsert::open(
        data_dir,
        "raw-import",
        Vec::new(),
        sharedcare_proto::audit::v1::AuditEvent::default(),
    )
    .await?;
    let started = std::time::Instant::now();
    for (resource_type, text) in &rows {
        // As large as records stores it sealed (nonce and tag included).
        let mut body = text.clone().into_bytes();
        body.extend_from_slice(&[0; 28]);
        raw.insert_row(resource_type, &body)
            .await
            .map_err(|e| anyhow!("raw insert: {e}"))?;
    }
    let raw_seconds = started.elapsed().as_secs_f64().max(1e-3);
    let import_rate = imported.resources as f64 / imported.seconds.max(1e-3);
    let raw_rate = rows.len() as f64 / raw_seconds;
    out!(
        "import: {} resources in {:.1} s = {import_rate:.0}/s; raw SQLite insert loop of the same {} rows: {raw_seconds:.1} s = {raw_rate:.0}/s; ratio {:.2}",
        imported.resources,
        imported.seconds,
        rows.len(),
        import_rate / raw_rate
    );
    Ok(())
}
