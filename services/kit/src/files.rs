//! Writing local secrets (generated keys) readable by this user only.

use std::{io::Write, path::Path};

use crate::Error;

/// Creates `path` (and its directory) with mode 0600; fails if it exists.
pub fn write_private(path: &Path, contents: &str) -> Result<(), Error> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::internal("creating the data dir", e))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| Error::internal("writing a key to the data dir", e))?;
    file.write_all(contents.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| Error::internal("writing a key to the data dir", e))
}
