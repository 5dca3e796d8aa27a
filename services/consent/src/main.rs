use sharedcare_consent::{SERVICE_NAME, config::ConsentConfig, open};
use sharedcare_kit::{config::ProcessEnv, server::run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    run(
        SERVICE_NAME,
        ConsentConfig::load(&ProcessEnv),
        |cfg| async move { open(&cfg).await },
    )
    .await
}
