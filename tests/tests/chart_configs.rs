//! The services read what the Helm chart renders: every configuration file
//! the chart's tests render (charts/tests/golden/<value set>/<service>.toml,
//! kept identical to the rendering by `test_rendered_configs_are_the_golden_files_the_services_load`)
//! loads and validates through the service's own loader, strictly: a key a
//! service does not know (misspelt, or renamed on one side only), a value it
//! refuses, or a section it cannot read, fails here.

use std::{collections::HashMap, path::Path};

use sharedcare_kit::{
    config::{CONFIG_FILE_VAR, ConfigError},
    tls::test_pki::TestPki,
};

/// Where the chart mounts secrets and files in the pod.
const MOUNTS: &str = "/etc/sharedcare/";

/// `file` with the pod's mount points moved under `root`, where every file
/// it names exists with stand-in content (the loaders read them; whether a
/// key is a good key is for the service's start, tested elsewhere).
fn relocated(file: &Path, root: &Path, pki: &TestPki) -> std::path::PathBuf {
    let text = std::fs::read_to_string(file).expect("golden file");
    pki.issue("service");
    let read = |path: std::path::PathBuf| std::fs::read_to_string(path).expect("pki file");
    let prefix = format!("{}/", root.display());
    for quoted in text.split('"').filter(|s| s.starts_with(MOUNTS)) {
        let target = root.join(&quoted[MOUNTS.len()..]);
        std::fs::create_dir_all(target.parent().expect("a parent")).expect("mkdir");
        let content = if quoted.ends_with("tls/ca.crt") {
            read(pki.ca_file())
        } else if quoted.ends_with("tls/tls.crt") {
            read(pki.cert_file("service"))
        } else if quoted.ends_with("tls/tls.key") {
            read(pki.key_file("service"))
        } else if quoted.ends_with("classification.toml") {
            std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../services/records/classification.toml"),
            )
            .expect("classification map")
        } else if quoted.contains("key-encryption-key") || quoted.ends_with("nhs-index-key") {
            // 32 bytes, base64.
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".to_owned()
        } else {
            "stand-in".to_owned()
        };
        std::fs::write(&target, content).expect("write");
    }
    let moved = root.join("config.toml");
    std::fs::write(&moved, text.replace(MOUNTS, &prefix)).expect("write");
    moved
}

fn load(service: &str, file: &Path) -> Result<(), ConfigError> {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::new();
    let file = relocated(file, root.path(), &pki);
    let env: HashMap<String, String> = HashMap::from([(
        CONFIG_FILE_VAR.to_owned(),
        file.to_string_lossy().into_owned(),
    )]);
    match service {
        "identity" => sharedcare_identity::config::IdentityConfig::load_strict(&env).map(drop),
        "consent" => sharedcare_consent::config::ConsentConfig::load_strict(&env).map(drop),
        "records" => sharedcare_records::config::RecordsConfig::load_strict(&env).map(drop),
        "audit" => sharedcare_audit::config::AuditConfig::load_strict(&env).map(drop),
        other => panic!("no service {other}"),
    }
}

#[test]
fn every_rendered_configuration_loads_in_its_service() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/tests/golden");
    let mut loaded = 0;
    for set in std::fs::read_dir(&golden).expect("charts/tests/golden") {
        let set = set.expect("entry").path();
        for service in ["identity", "consent", "records", "audit"] {
            let file = set.join(format!("{service}.toml"));
            assert!(file.exists(), "{} is missing", file.display());
            if let Err(e) = load(service, &file) {
                panic!("{} does not load in {service}: {e}", file.display());
            }
            loaded += 1;
        }
    }
    assert!(loaded >= 16, "{loaded} files");
}

#[test]
fn a_key_no_service_knows_is_named() {
    let golden =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/tests/golden/default/consent.toml");
    let root = tempfile::tempdir().expect("tempdir");
    let misspelt = root.path().join("consent.toml");
    let text = std::fs::read_to_string(golden)
        .expect("golden file")
        .replace("grant_minutes", "grant_minute");
    std::fs::write(&misspelt, text).expect("write");
    let err = load("consent", &misspelt).expect_err("an unknown key");
    assert!(
        err.to_string().contains("consent.break_glass.grant_minute"),
        "{err}"
    );
}
