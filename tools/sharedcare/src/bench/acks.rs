//! `--acks FILE`: one JSON line per acknowledged CreateRecord or GetRecord,
//! naming the record as the server answered it — patient, record id,
//! version and the SHA-256 of its resource JSON — so that whoever crashes
//! the platform under load can check afterwards that everything
//! acknowledged is still there, as it was. Every answered call counts
//! (warm-up and the first call on each connection too), and each line is
//! written whole as its answer arrives, so the file stays true even if the
//! bench itself is stopped abruptly.
//!
//! ```text
//! {"rpc":"CreateRecord","patient_id":"…","record_id":"…","version":1,"sha256":"…"}
//! ```

use std::{
    fs::File,
    io::{LineWriter, Write},
    path::Path,
    sync::Mutex,
};

use anyhow::{Context, anyhow};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sharedcare_proto::records::v1::Record;

/// The acknowledgement log a run writes to.
pub struct Acks {
    file: Mutex<Writer>,
}

struct Writer {
    out: LineWriter<File>,
    /// The first write that failed: reported at the end, once.
    failed: Option<std::io::Error>,
}

#[derive(Serialize)]
struct Line<'a> {
    rpc: &'a str,
    patient_id: &'a str,
    record_id: &'a str,
    version: i64,
    sha256: String,
}

impl Acks {
    /// Creates (or empties) the file.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file = File::create(path)
            .with_context(|| format!("creating the acknowledgement log {}", path.display()))?;
        Ok(Acks {
            file: Mutex::new(Writer {
                out: LineWriter::new(file),
                failed: None,
            }),
        })
    }

    /// Notes that `method` (a full gRPC method name) answered `record`.
    pub fn acknowledged(&self, method: &str, record: &Record) {
        let line = Line {
            rpc: method.rsplit('/').next().unwrap_or(method),
            patient_id: &record.patient_id,
            record_id: &record.record_id,
            version: record.version,
            sha256: hex::encode(Sha256::digest(record.resource_json.as_bytes())),
        };
        let Ok(mut line) = serde_json::to_vec(&line) else {
            return;
        };
        line.push(b'\n');
        if let Ok(mut writer) = self.file.lock()
            && writer.failed.is_none()
            && let Err(e) = writer.out.write_all(&line)
        {
            writer.failed = Some(e);
        }
    }

    /// Flushes the file; the first write that failed, if one did.
    pub fn finish(&self) -> anyhow::Result<()> {
        let mut writer = self
            .file
            .lock()
            .map_err(|_| anyhow!("the acknowledgement log's lock was poisoned"))?;
        if let Some(e) = writer.failed.take() {
            return Err(e).context("writing the acknowledgement log");
        }
        writer
            .out
            .flush()
            .context("writing the acknowledgement log")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_acknowledged_record() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("acks.jsonl");
        let acks = Acks::create(&path).expect("created");
        let record = Record {
            record_id: "r1".into(),
            patient_id: "p1".into(),
            version: 2,
            resource_json: "{}".into(),
            ..Record::default()
        };
        acks.acknowledged("sharedcare.records.v1.RecordsService/GetRecord", &record);
        // Whole lines reach the file as they are written.
        let written = std::fs::read_to_string(&path).expect("read");
        let line: serde_json::Value = serde_json::from_str(written.trim_end()).expect("json");
        assert_eq!(line["rpc"], "GetRecord");
        assert_eq!(line["record_id"], "r1");
        assert_eq!(line["version"], 2);
        assert_eq!(
            line["sha256"],
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        acks.finish().expect("flushed");
    }
}
