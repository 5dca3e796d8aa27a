//! `<data-dir>/bootstrap.toml`: the platform's own credentials for `dev`.
//!
//! Written on first start (mode 0600) in the format identity's bootstrap
//! reads: the platform organisation, the `admin` client and the `records`
//! service client, each with a fresh 256-bit secret. Later starts reuse it;
//! `demo` reads the admin secret from it.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context, anyhow};
use rand::RngCore;
use sharedcare_identity::bootstrap::BootstrapFile;

pub const FILE_NAME: &str = "bootstrap.toml";
pub const PLATFORM_ODS_CODE: &str = "X26";
pub const PLATFORM_NAME: &str = "sharedcare platform";
pub const ADMIN_CLIENT_ID: &str = "admin";
pub const RECORDS_CLIENT_ID: &str = "records";

/// The secrets `dev` and `demo` need from the file.
#[derive(Debug, Clone)]
pub struct PlatformCredentials {
    pub path: PathBuf,
    pub admin_secret: String,
    pub records_secret: String,
    /// Whether this start wrote the file.
    pub created: bool,
}

/// The file under `data_dir`, written with fresh secrets if missing.
pub fn ensure(data_dir: &Path) -> anyhow::Result<PlatformCredentials> {
    let path = data_dir.join(FILE_NAME);
    let created = if path.exists() {
        false
    } else {
        write_private(&path, &render(&fresh_secret(), &fresh_secret()))?;
        true
    };
    let mut credentials = read(&path)?;
    credentials.created = created;
    Ok(credentials)
}

/// Reads the admin and records secrets from an existing file.
pub fn read(path: &Path) -> anyhow::Result<PlatformCredentials> {
    if !path.is_file() {
        return Err(anyhow!(
            "{} does not exist: start `sharedcare dev` with this data dir first",
            path.display()
        ));
    }
    let file = BootstrapFile::read(path)
        .map_err(|e| anyhow!("reading {}: {}", path.display(), e.message))?;
    let secret_of = |client_id: &str| {
        file.principals
            .iter()
            .find(|p| p.client_id == client_id)
            .map(|p| p.client_secret.clone())
            .ok_or_else(|| {
                anyhow!(
                    "{} has no principal with client_id \"{client_id}\"",
                    path.display()
                )
            })
    };
    Ok(PlatformCredentials {
        path: path.to_owned(),
        admin_secret: secret_of(ADMIN_CLIENT_ID)?,
        records_secret: secret_of(RECORDS_CLIENT_ID)?,
        created: false,
    })
}

/// 32 random bytes from the OS, as 64 hex characters.
pub fn fresh_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The file's text. Every value is a fixed ASCII word or hex, so no TOML
/// escaping is needed.
fn render(admin_secret: &str, records_secret: &str) -> String {
    format!(
        r#"# Written by `sharedcare dev` on first start; later starts reuse it.
# identity applies it at start: the platform organisation, the admin
# client and the records service's client. Keep it private (mode 0600).

[[organisations]]
ods_code = "{PLATFORM_ODS_CODE}"
name = "{PLATFORM_NAME}"

[[principals]]
client_id = "{ADMIN_CLIENT_ID}"
client_secret = "{admin_secret}"
kind = "admin"
display_name = "platform admin"
organisation = "{PLATFORM_ODS_CODE}"
role = "admin"

[[principals]]
client_id = "{RECORDS_CLIENT_ID}"
client_secret = "{records_secret}"
kind = "service"
display_name = "records service"
organisation = "{PLATFORM_ODS_CODE}"
role = "service"
"#
    )
}

/// Creates `path` readable and writable by this user only.
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_writes_fresh_secrets_and_later_starts_reuse_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = ensure(dir.path()).expect("written");
        assert!(first.created);
        assert_eq!(first.admin_secret.len(), 64);
        assert!(first.admin_secret.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(first.admin_secret, first.records_secret);

        let again = ensure(dir.path()).expect("reused");
        assert!(!again.created);
        assert_eq!(again.admin_secret, first.admin_secret);
        assert_eq!(again.records_secret, first.records_secret);
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let credentials = ensure(dir.path()).expect("written");
        let mode = std::fs::metadata(&credentials.path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn identity_reads_what_we_write() {
        let dir = tempfile::tempdir().expect("temp dir");
        let credentials = ensure(dir.path()).expect("written");
        let file = BootstrapFile::read(&credentials.path).expect("identity's format");
        assert_eq!(file.organisations.len(), 1);
        assert_eq!(file.organisations[0].ods_code, PLATFORM_ODS_CODE);
        assert_eq!(file.organisations[0].name, PLATFORM_NAME);
        let records = file
            .principals
            .iter()
            .find(|p| p.client_id == RECORDS_CLIENT_ID)
            .expect("records principal");
        assert_eq!(
            (records.kind.as_str(), records.role.as_str()),
            ("service", "service")
        );
        assert_eq!(records.display_name, "records service");
        let admin = file
            .principals
            .iter()
            .find(|p| p.client_id == ADMIN_CLIENT_ID)
            .expect("admin principal");
        assert_eq!(
            (admin.kind.as_str(), admin.role.as_str()),
            ("admin", "admin")
        );
    }

    #[test]
    fn a_missing_file_says_how_to_make_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = read(&dir.path().join(FILE_NAME)).expect_err("missing");
        assert!(err.to_string().contains("sharedcare dev"), "{err}");
    }
}
