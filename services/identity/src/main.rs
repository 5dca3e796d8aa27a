use sharedcare_identity::{SERVICE_NAME, config::IdentityConfig, open};
use sharedcare_kit::{config::ProcessEnv, server::run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    run(
        SERVICE_NAME,
        IdentityConfig::load(&ProcessEnv),
        |cfg| async move { open(&cfg).await },
    )
    .await
}
