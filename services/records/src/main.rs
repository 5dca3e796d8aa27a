use sharedcare_kit::{config::ProcessEnv, server::run};
use sharedcare_records::{SERVICE_NAME, config::RecordsConfig, open};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    run(
        SERVICE_NAME,
        RecordsConfig::load(&ProcessEnv),
        |cfg| async move { open(&cfg).await },
    )
    .await
}
