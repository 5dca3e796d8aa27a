//! `<data-dir>/bootstrap.toml`: the platform's own credentials for `dev`.
//!
//! Written on first start (mode 0600) in the format identity's bootstrap
//! reads: the platform organisation, the `admin` client and the clients of
//! the services that call others as themselves (`records`, `consent`), each
//! with a fresh 256-bit secret. Later starts reuse it; a file from an older
//! version that lacks a service's client gets that client appended, with a
//! fresh secret. `demo` reads the admin secret from it.

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
pub const CONSENT_CLIENT_ID: &str = "consent";

/// The platform services that call others as themselves: each needs a
/// client in the file. records asks consent and writes to audit; consent
/// audits its own changes and asks identity about organisations.
const SERVICE_CLIENTS: [&str; 2] = [RECORDS_CLIENT_ID, CONSENT_CLIENT_ID];

/// The secrets `dev` and `demo` need from the file.
#[derive(Debug, Clone)]
pub struct PlatformCredentials {
    pub path: PathBuf,
    pub admin_secret: String,
    pub records_secret: String,
    pub consent_secret: String,
    /// What this start did to the file.
    pub origin: Origin,
}

/// What `dev` did with the file on this start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Wrote it, with fresh secrets.
    Created,
    /// Used it as it was.
    Reused,
    /// Used it, after appending these service clients it lacked (a file
    /// written by an older version).
    Extended(Vec<&'static str>),
}

/// The file under `data_dir`: written with fresh secrets if missing, and
/// completed with any service client it lacks.
pub fn ensure(data_dir: &Path) -> anyhow::Result<PlatformCredentials> {
    let path = data_dir.join(FILE_NAME);
    let origin = if path.exists() {
        let missing = missing_service_clients(&path)?;
        if missing.is_empty() {
            Origin::Reused
        } else {
            append_service_clients(&path, &missing)?;
            Origin::Extended(missing)
        }
    } else {
        let mut text = header();
        for client_id in SERVICE_CLIENTS {
            text.push_str(&service_principal(client_id, &fresh_secret()));
        }
        write_private(&path, &text)?;
        Origin::Created
    };
    let mut credentials = read(&path)?;
    credentials.origin = origin;
    Ok(credentials)
}

/// Reads the admin and service secrets from an existing file.
pub fn read(path: &Path) -> anyhow::Result<PlatformCredentials> {
    let file = parse(path)?;
    let secret_of = |client_id: &str| {
        file.principals
            .iter()
            .find(|p| p.client_id == client_id)
            .map(|p| p.client_secret.clone())
            .ok_or_else(|| {
                anyhow!(
                    "{} has no principal with client_id \"{client_id}\": start `sharedcare dev` \
                     with this data dir to add it",
                    path.display()
                )
            })
    };
    Ok(PlatformCredentials {
        path: path.to_owned(),
        admin_secret: secret_of(ADMIN_CLIENT_ID)?,
        records_secret: secret_of(RECORDS_CLIENT_ID)?,
        consent_secret: secret_of(CONSENT_CLIENT_ID)?,
        origin: Origin::Reused,
    })
}

/// The file as identity reads it.
fn parse(path: &Path) -> anyhow::Result<BootstrapFile> {
    if !path.is_file() {
        return Err(anyhow!(
            "{} does not exist: start `sharedcare dev` with this data dir first",
            path.display()
        ));
    }
    BootstrapFile::read(path).map_err(|e| anyhow!("reading {}: {}", path.display(), e.message))
}

/// The service clients the file lacks, in [`SERVICE_CLIENTS`] order.
fn missing_service_clients(path: &Path) -> anyhow::Result<Vec<&'static str>> {
    let file = parse(path)?;
    Ok(SERVICE_CLIENTS
        .into_iter()
        .filter(|id| !file.principals.iter().any(|p| p.client_id == *id))
        .collect())
}

/// Appends a principal with a fresh secret for each of `client_ids`. The
/// new text is written beside the file, checked by identity's reader, then
/// renamed over it: the file is either as it was or complete.
fn append_service_clients(path: &Path, client_ids: &[&str]) -> anyhow::Result<()> {
    let mut text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str("\n# Added by a later `sharedcare dev`: service clients this file lacked.\n");
    for client_id in client_ids {
        text.push_str(&service_principal(client_id, &fresh_secret()));
    }
    let staged = path.with_extension("toml.new");
    let _ = std::fs::remove_file(&staged);
    write_private(&staged, &text)?;
    let checked = parse(&staged).and_then(|file| {
        client_ids
            .iter()
            .all(|id| file.principals.iter().any(|p| p.client_id == *id))
            .then_some(())
            .ok_or_else(|| anyhow!("the appended principals were not read back"))
    });
    if let Err(e) = checked {
        let _ = std::fs::remove_file(&staged);
        return Err(e.context(format!(
            "adding the {} client(s) to {}: edit the file by hand, or move it away to start afresh",
            client_ids.join(", "),
            path.display()
        )));
    }
    std::fs::rename(&staged, path)
        .with_context(|| format!("replacing {} with {}", path.display(), staged.display()))
}

/// 32 random bytes from the OS, as 64 hex characters.
pub fn fresh_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The file's text up to the service clients: the platform organisation
/// and the admin client. Every value is a fixed ASCII word or hex, so no
/// TOML escaping is needed.
fn header() -> String {
    let admin_secret = fresh_secret();
    format!(
        r#"# Written by `sharedcare dev` on first start; later starts reuse it.
# identity applies it at start: the platform organisation, the admin
# client and the clients of the services that call others as themselves.
# Keep it private (mode 0600).

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
"#
    )
}

/// One platform service's client (kind and role `service`).
fn service_principal(client_id: &str, secret: &str) -> String {
    format!(
        r#"
[[principals]]
client_id = "{client_id}"
client_secret = "{secret}"
kind = "service"
display_name = "{client_id} service"
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
        assert_eq!(first.origin, Origin::Created);
        assert_eq!(first.admin_secret.len(), 64);
        assert!(first.admin_secret.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(first.admin_secret, first.records_secret);
        assert_ne!(first.records_secret, first.consent_secret);

        let again = ensure(dir.path()).expect("reused");
        assert_eq!(again.origin, Origin::Reused);
        assert_eq!(again.admin_secret, first.admin_secret);
        assert_eq!(again.records_secret, first.records_secret);
        assert_eq!(again.consent_secret, first.consent_secret);
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_private() {
        let dir = tempfile::tempdir().expect("temp dir");
        let credentials = ensure(dir.path()).expect("written");
        assert_eq!(mode(&credentials.path), 0o600);
    }

    #[test]
    fn identity_reads_what_we_write() {
        let dir = tempfile::tempdir().expect("temp dir");
        let credentials = ensure(dir.path()).expect("written");
        let file = BootstrapFile::read(&credentials.path).expect("identity's format");
        assert_eq!(file.organisations.len(), 1);
        assert_eq!(file.organisations[0].ods_code, PLATFORM_ODS_CODE);
        assert_eq!(file.organisations[0].name, PLATFORM_NAME);
        for (client_id, name) in [
            (RECORDS_CLIENT_ID, "records service"),
            (CONSENT_CLIENT_ID, "consent service"),
        ] {
            let service = file
                .principals
                .iter()
                .find(|p| p.client_id == client_id)
                .expect("service principal");
            assert_eq!(
                (service.kind.as_str(), service.role.as_str()),
                ("service", "service")
            );
            assert_eq!(service.display_name, name);
            assert_eq!(service.organisation, PLATFORM_ODS_CODE);
        }
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

    /// The file an older `sharedcare dev` wrote: no consent client, and no
    /// newline at the end.
    fn older_file(records_secret: &str) -> String {
        format!(
            r#"[[organisations]]
ods_code = "X26"
name = "sharedcare platform"

[[principals]]
client_id = "admin"
client_secret = "{admin}"
kind = "admin"
display_name = "platform admin"
organisation = "X26"
role = "admin"

[[principals]]
client_id = "records"
client_secret = "{records_secret}"
kind = "service"
display_name = "records service"
organisation = "X26"
role = "service""#,
            admin = "a".repeat(64)
        )
    }

    #[test]
    fn an_older_file_gets_the_missing_consent_client_and_keeps_the_rest() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(FILE_NAME);
        let records_secret = "b".repeat(64);
        write_private(&path, &older_file(&records_secret)).expect("older file");

        let credentials = ensure(dir.path()).expect("completed");
        assert_eq!(
            credentials.origin,
            Origin::Extended(vec![CONSENT_CLIENT_ID])
        );
        assert_eq!(credentials.admin_secret, "a".repeat(64));
        assert_eq!(credentials.records_secret, records_secret);
        assert_eq!(credentials.consent_secret.len(), 64);
        assert_ne!(credentials.consent_secret, records_secret);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with(&older_file(&records_secret)), "{text}");
        assert!(!dir.path().join("bootstrap.toml.new").exists());
        #[cfg(unix)]
        assert_eq!(mode(&path), 0o600);

        let again = ensure(dir.path()).expect("reused");
        assert_eq!(again.origin, Origin::Reused);
        assert_eq!(again.consent_secret, credentials.consent_secret);
    }

    #[test]
    fn a_file_that_cannot_be_completed_is_left_as_it_was() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(FILE_NAME);
        // An inline array cannot be extended by appending `[[principals]]`.
        let inline = format!(
            "organisations = [{{ ods_code = \"X26\", name = \"p\" }}]\n\
             principals = [{{ client_id = \"admin\", client_secret = \"{}\", kind = \"admin\", \
             display_name = \"a\", organisation = \"X26\", role = \"admin\" }}]\n",
            "a".repeat(64)
        );
        write_private(&path, &inline).expect("inline file");
        let err = ensure(dir.path()).expect_err("cannot append");
        assert!(
            err.to_string()
                .contains("adding the records, consent client(s)"),
            "{err:#}"
        );
        assert_eq!(std::fs::read_to_string(&path).expect("read"), inline);
        assert!(!dir.path().join("bootstrap.toml.new").exists());
    }

    #[test]
    fn a_missing_file_says_how_to_make_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = read(&dir.path().join(FILE_NAME)).expect_err("missing");
        assert!(err.to_string().contains("sharedcare dev"), "{err}");
    }
}
