//! What `dev` tells the developer once all four services listen.

use std::path::Path;

use crate::{
    bootstrap::{ADMIN_CLIENT_ID, Origin, PlatformCredentials},
    ports::{DEFAULT_BASE_PORT, Ports},
};

/// Where each service listens, the data dir, the admin credentials and how
/// to use them.
/// With `metrics`, where each service's Prometheus metrics are too.
pub fn render(
    ports: Ports,
    metrics: Option<Ports>,
    data_dir: &Path,
    credentials: &PlatformCredentials,
) -> String {
    let service = |name: &str, port: u16, metrics_port: Option<u16>| {
        let url = Ports::url(port);
        match metrics_port {
            Some(m) => format!("  {name:<10} {url:<24} metrics {}/metrics", Ports::url(m)),
            None => format!("  {name:<10} {url}"),
        }
    };
    let port_flag = if ports.identity == DEFAULT_BASE_PORT {
        String::new()
    } else {
        format!(" --base-port {}", ports.identity)
    };
    let secret = &credentials.admin_secret;
    let token_command = format!(
        "sharedcare{port_flag} token --client-id {ADMIN_CLIENT_ID} --client-secret {secret}"
    );
    let bootstrap_note = match &credentials.origin {
        Origin::Created => "written now with fresh secrets".to_owned(),
        Origin::Reused => "reused from an earlier start".to_owned(),
        Origin::Extended(added) => format!(
            "reused from an earlier start; added the {} client(s) it lacked",
            added.join(", ")
        ),
    };
    let lines = [
        String::new(),
        "sharedcare dev: all four services are serving (Ctrl-C stops them all)".to_owned(),
        String::new(),
        service("identity", ports.identity, metrics.map(|m| m.identity)),
        service("consent", ports.consent, metrics.map(|m| m.consent)),
        service("records", ports.records, metrics.map(|m| m.records)),
        service("audit", ports.audit, metrics.map(|m| m.audit)),
        String::new(),
        format!(
            "  data dir   {}  (one SQLite file per service)",
            data_dir.display()
        ),
        format!(
            "  bootstrap  {}  ({bootstrap_note})",
            credentials.path.display()
        ),
        String::new(),
        "Admin client:".to_owned(),
        format!("  client id      {ADMIN_CLIENT_ID}"),
        format!("  client secret  {secret}"),
        String::new(),
        "Get an admin token (it administers organisations and principals; it reads no clinical data):"
            .to_owned(),
        format!("  {token_command}"),
        "Make the other commands use it:".to_owned(),
        format!("  export SHAREDCARE_TOKEN=$({token_command})"),
        "See the platform's story, narrated step by step (add --step to pause between steps):"
            .to_owned(),
        format!(
            "  sharedcare{port_flag} demo --data-dir {}",
            data_dir.display()
        ),
        "Verify the tamper-evident audit log (with a platform auditor's token; see the README):"
            .to_owned(),
        format!(
            "  sharedcare{port_flag} audit verify --public-key-file {}",
            data_dir.join(sharedcare_audit::VERIFIER_KEY_FILE).display()
        ),
        String::new(),
    ];
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_banner_says_where_and_how() {
        let credentials = PlatformCredentials {
            path: "/tmp/d/bootstrap.toml".into(),
            admin_secret: "ab".repeat(32),
            records_secret: "cd".repeat(32),
            consent_secret: "ef".repeat(32),
            origin: Origin::Extended(vec!["consent"]),
        };
        let text = render(
            Ports::from_base(41000),
            None,
            Path::new("/tmp/d"),
            &credentials,
        );
        assert!(
            text.contains("  identity   http://127.0.0.1:41000"),
            "{text}"
        );
        assert!(
            text.contains("  audit      http://127.0.0.1:41003"),
            "{text}"
        );
        assert!(text.contains(&"ab".repeat(32)));
        assert!(
            !text.contains(&"cd".repeat(32)),
            "records' secret stays in the file"
        );
        assert!(
            !text.contains(&"ef".repeat(32)),
            "consent's secret stays in the file"
        );
        assert!(
            text.contains("added the consent client(s) it lacked"),
            "{text}"
        );
        assert!(
            text.contains(
                "sharedcare --base-port 41000 audit verify --public-key-file /tmp/d/audit-log.vkey"
            ),
            "{text}"
        );
        assert!(text.contains(&format!(
            "export SHAREDCARE_TOKEN=$(sharedcare --base-port 41000 token --client-id admin --client-secret {})",
            "ab".repeat(32)
        )));
    }

    #[test]
    fn the_banner_says_where_metrics_are_when_served() {
        let credentials = PlatformCredentials {
            path: "/tmp/d/bootstrap.toml".into(),
            admin_secret: "ab".repeat(32),
            records_secret: "cd".repeat(32),
            consent_secret: "ef".repeat(32),
            origin: Origin::Created,
        };
        let text = render(
            Ports::from_base(41000),
            Some(Ports::from_base(9464)),
            Path::new("/tmp/d"),
            &credentials,
        );
        assert!(
            text.contains(
                "  identity   http://127.0.0.1:41000   metrics http://127.0.0.1:9464/metrics"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "  audit      http://127.0.0.1:41003   metrics http://127.0.0.1:9467/metrics"
            ),
            "{text}"
        );
    }
}
