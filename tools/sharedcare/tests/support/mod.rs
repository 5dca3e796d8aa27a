//! What the tests that start the real `sharedcare dev` share: four free
//! consecutive ports, the child process (killed if a test fails), its
//! health polled until SERVING, and SIGTERM.

#![allow(dead_code)]

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use tonic::transport::Endpoint;

pub const BIN: &str = env!("CARGO_BIN_EXE_sharedcare");

/// `principal create` arguments for a platform auditor (admin's X26).
pub const PLATFORM_AUDITOR: &[&str] = &[
    "--kind",
    "staff",
    "--ods",
    "X26",
    "--role",
    "platform-auditor",
    "--name",
    "Platform auditor",
];

/// Variables a developer's shell may hold that would point the client
/// commands somewhere else.
pub const CLIENT_VARS: &[&str] = &[
    "SHAREDCARE_BASE_PORT",
    "SHAREDCARE_IDENTITY_URL",
    "SHAREDCARE_CONSENT_URL",
    "SHAREDCARE_RECORDS_URL",
    "SHAREDCARE_AUDIT_URL",
    "SHAREDCARE_TOKEN",
];

/// A base port with it and the three after it free on loopback right now.
pub fn free_base_port() -> u16 {
    for _ in 0..100 {
        let first = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let base = first.local_addr().expect("local addr").port();
        if base > u16::MAX - 3 {
            continue;
        }
        let rest: Vec<TcpListener> = (1..4)
            .filter_map(|i| TcpListener::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if rest.len() == 3 {
            return base;
        }
    }
    panic!("could not find four consecutive free ports on 127.0.0.1");
}

/// `sharedcare dev` running as a child process; killed if the test fails.
pub struct Dev {
    child: Child,
    logs: PathBuf,
}

impl Dev {
    pub fn start(data_dir: &Path, logs: &Path, base_port: u16) -> Self {
        Self::start_with(data_dir, logs, base_port, &[])
    }

    /// As `start`, with more of dev's options.
    pub fn start_with(data_dir: &Path, logs: &Path, base_port: u16, extra: &[&str]) -> Self {
        Self::start_in(data_dir, logs, base_port, "warn", extra, &[])
    }

    /// As `start_with`, logging at `log_level`, with `env` set in dev's
    /// environment as a shell would (e.g. `OTEL_*`, `SHAREDCARE_*`).
    pub fn start_in(
        data_dir: &Path,
        logs: &Path,
        base_port: u16,
        log_level: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let stdout = std::fs::File::create(logs.join("dev.stdout")).expect("stdout log");
        let stderr = std::fs::File::create(logs.join("dev.stderr")).expect("stderr log");
        let child = Command::new(BIN)
            .args(["dev", "--data-dir"])
            .arg(data_dir)
            .args(["--base-port", &base_port.to_string()])
            .args(["--log-level", log_level, "--log-format", "json"])
            .args(extra)
            .env_remove("SHAREDCARE_CONFIG_FILE")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start sharedcare dev");
        Dev {
            child,
            logs: logs.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn output(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.logs.join(name)).unwrap_or_default();
        format!(
            "--- dev stdout ---\n{}\n--- dev stderr ---\n{}",
            read("dev.stdout"),
            read("dev.stderr")
        )
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("poll sharedcare dev")
    }

    /// Polls each service's health until SERVING, failing early (with dev's
    /// output) if dev exits, e.g. because a port was taken meanwhile. Runs
    /// on its own runtime, dropped on return so that no health connection
    /// stays open to hold up dev's graceful shutdown later.
    pub fn wait_until_serving(&mut self, base_port: u16) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(self.poll_health(base_port));
    }

    async fn poll_health(&mut self, base_port: u16) {
        for (offset, name) in ["identity", "consent", "records", "audit"]
            .into_iter()
            .enumerate()
        {
            let port = base_port + offset as u16;
            let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
                .expect("loopback url")
                .connect_lazy();
            let mut serving = false;
            for _ in 0..3 {
                if let Some(status) = self.exited() {
                    panic!(
                        "sharedcare dev exited ({status}) before {name} on port {port} was \
                         SERVING; if it says a port is in use, another process took it\n{}",
                        self.output()
                    );
                }
                if sharedcare_kit::client::wait_until_serving(channel.clone())
                    .await
                    .is_ok()
                {
                    serving = true;
                    break;
                }
            }
            assert!(
                serving,
                "{name} on port {port} never reported SERVING\n{}",
                self.output()
            );
        }
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "sharedcare dev did not exit within 30 s of SIGTERM\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs the CLI against dev with `token`; its standard output, after
/// checking that it succeeded.
pub fn cli(dev: &Dev, base_port: u16, token: Option<&str>, args: &[&str]) -> String {
    let mut command = Command::new(BIN);
    command
        .args(["--base-port", &base_port.to_string()])
        .args(args);
    for var in CLIENT_VARS {
        command.env_remove(var);
    }
    if let Some(token) = token {
        command.env("SHAREDCARE_TOKEN", token);
    }
    let output = command.output().expect("run sharedcare");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "sharedcare {args:?} failed ({})
{stdout}
{}
{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        dev.output()
    );
    stdout
}

pub fn field<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in\n{stdout}"))
}

/// A token for `client_id` from `sharedcare token`.
pub fn token(dev: &Dev, base_port: u16, client_id: &str, secret: &str) -> String {
    cli(
        dev,
        base_port,
        None,
        &["token", "--client-id", client_id, "--client-secret", secret],
    )
    .trim()
    .to_owned()
}

/// An admin token, with the secret dev wrote to the bootstrap file.
pub fn admin_token(dev: &Dev, data_dir: &Path, base_port: u16) -> String {
    let bootstrap = std::fs::read_to_string(data_dir.join("bootstrap.toml")).expect("bootstrap");
    let admin_secret = bootstrap
        .split("client_id = \"admin\"")
        .nth(1)
        .and_then(|rest| rest.split("client_secret = \"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .expect("the admin secret");
    token(dev, base_port, "admin", admin_secret)
}

/// Creates a principal (`principal create` with `args`) and returns a
/// token for it.
pub fn principal_token(dev: &Dev, base_port: u16, admin: &str, args: &[&str]) -> String {
    let created = cli(
        dev,
        base_port,
        Some(admin),
        &[&["principal", "create"], args].concat(),
    );
    token(
        dev,
        base_port,
        field(&created, "client_id:"),
        field(&created, "client_secret:"),
    )
}

/// `sharedcare audit verify` as `auditor`, with the verifier key dev keeps
/// and the last verified head in `state`; its output.
pub fn audit_verify(
    dev: &Dev,
    data_dir: &Path,
    base_port: u16,
    auditor: &str,
    state: &Path,
    extra: &[&str],
) -> String {
    let vkey = data_dir.join("audit-log.vkey");
    let args = [
        &[
            "audit",
            "verify",
            "--public-key-file",
            vkey.to_str().expect("path"),
            "--state-file",
            state.to_str().expect("path"),
        ],
        extra,
    ]
    .concat();
    cli(dev, base_port, Some(auditor), &args)
}

/// Runs `sharedcare <args>` (a `bench` with `--json`); its JSON report,
/// after checking it succeeded. `context` is added to a failure's message.
pub fn bench(args: &[&str], context: impl Fn() -> String) -> serde_json::Value {
    let mut command = Command::new(BIN);
    command.args(args);
    for var in CLIENT_VARS {
        command.env_remove(var);
    }
    let output = command.output().expect("run sharedcare bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench failed ({})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n{}",
        output.status,
        context()
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("the report is not JSON ({e}):\n{stdout}\n{stderr}"))
}

impl Drop for Dev {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
