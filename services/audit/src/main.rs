use sharedcare_audit::{SERVICE_NAME, config::AuditConfig, open};
use sharedcare_kit::{config::ProcessEnv, server::run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    run(
        SERVICE_NAME,
        AuditConfig::load(&ProcessEnv),
        |cfg| async move { open(&cfg).await },
    )
    .await
}
