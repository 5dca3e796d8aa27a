//! The platform as the real binaries, one process per service, on fixed
//! loopback ports (a free block in 20000–29999, below the ephemeral range,
//! so that no outgoing connection takes a port while its service is down),
//! each configured from its environment exactly as a deployment would
//! configure it ([`Layout`]). A service can be killed (SIGKILL: no drain,
//! no flush) and started again on the same port with the same environment.
//!
//! The binaries are those cargo built beside this test: `cargo test
//! --workspace` builds every package's binaries.

use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{Backend, Clients, Layout, Service, Urls};

/// Longest a service may take from being started to reporting SERVING.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a service may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// The path of `name`, a binary of this workspace, beside the running test
/// executable (`target/<profile>/deps/<test>` → `target/<profile>/<name>`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable sits in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "the `{name}` binary is not at {}: `cargo test --workspace` builds every binary \
         of the workspace; with `-p sharedcare-tests` alone, run `cargo build --bins` first",
        path.display()
    );
    path
}

/// A base port with it and the `count - 1` after it free on loopback now,
/// in 20000–29999.
pub fn free_port_block(count: u16) -> u16 {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    for _ in 0..200 {
        let base = rng.gen_range(20_000..30_000 - count);
        let free = (base..base + count)
            .all(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no block of {count} free ports in 127.0.0.1:20000-29999");
}

/// Sends `signal` (a name `kill` knows: TERM, INT, QUIT) to `pid`.
pub fn signal(pid: u32, signal: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -{signal} {pid} failed");
}

/// One service's process, started and restarted with the same environment.
pub struct ServiceProcess {
    pub service: Service,
    pub port: u16,
    env: HashMap<String, String>,
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl ServiceProcess {
    /// Spawns the binary, its output appended to its log.
    fn spawn(&mut self) {
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the service's log");
        writeln!(log, "=== start {} ===", self.starts).expect("write the service's log");
        let stderr = log.try_clone().expect("clone the log handle");
        let child = Command::new(binary(&self.service.binary()))
            // Only what the layout says: the test's own SHAREDCARE_*
            // variables are not configuration keys.
            .env_clear()
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.service.binary()));
        self.child = Some(child);
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How it exited, if it has.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("poll the service's process"))
    }

    /// SIGKILL, and reaped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reap the killed service");
        }
    }

    /// SIGTERM, waiting (bounded) for it to exit; killed if it does not.
    fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if child.try_wait().ok().flatten().is_none() {
            signal(child.id(), "TERM");
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.wait();
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The four services as processes.
pub struct Processes {
    layout: Layout,
    base_port: u16,
    services: Vec<ServiceProcess>,
    clients: Clients,
}

impl std::ops::Deref for Processes {
    type Target = Clients;

    fn deref(&self) -> &Clients {
        &self.clients
    }
}

fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

fn channel(port: u16) -> Channel {
    Endpoint::from_shared(url(port))
        .expect("loopback url")
        .connect_timeout(Duration::from_secs(1))
        .connect_lazy()
}

impl Processes {
    /// The four services on `backend`, each SERVING.
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(Layout::new(backend, None)).await
    }

    /// As `start`, configured by `layout` (plaintext only).
    pub async fn start_with(layout: Layout) -> Self {
        assert!(
            layout.pki().is_none(),
            "services as processes serve plaintext"
        );
        let base_port = free_port_block(4);
        let port = |s: Service| base_port + s.port_offset();
        let urls = Urls {
            identity: url(port(Service::Identity)),
            consent: url(port(Service::Consent)),
            audit: url(port(Service::Audit)),
        };
        let logs = layout.data_dir().join("logs");
        std::fs::create_dir_all(&logs).expect("logs dir");
        let services = Service::ALL
            .into_iter()
            .map(|service| {
                let mut env = layout.env(service, &urls);
                env.insert(
                    "SHAREDCARE_SERVER__LISTEN".into(),
                    format!("127.0.0.1:{}", port(service)),
                );
                ServiceProcess {
                    service,
                    port: port(service),
                    env,
                    log: logs.join(format!("{}.log", service.name())),
                    child: None,
                    starts: 0,
                }
            })
            .collect();
        let clients = Clients {
            identity: channel(port(Service::Identity)),
            consent: channel(port(Service::Consent)),
            records: channel(port(Service::Records)),
            audit: channel(port(Service::Audit)),
        };
        let mut platform = Processes {
            layout,
            base_port,
            services,
            clients,
        };
        // identity first: the others take its keys and tokens.
        for service in [
            Service::Identity,
            Service::Audit,
            Service::Consent,
            Service::Records,
        ] {
            platform.start_service(service).await;
        }
        platform
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// identity's port; consent, records and audit follow (`sharedcare
    /// --base-port`).
    pub fn base_port(&self) -> u16 {
        self.base_port
    }

    pub fn url(&self, service: Service) -> String {
        url(self.base_port + service.port_offset())
    }

    pub fn process(&self, service: Service) -> &ServiceProcess {
        self.services
            .iter()
            .find(|p| p.service == service)
            .expect("every service has a process")
    }

    fn process_mut(&mut self, service: Service) -> &mut ServiceProcess {
        self.services
            .iter_mut()
            .find(|p| p.service == service)
            .expect("every service has a process")
    }

    /// Each service's process id.
    pub fn pids(&self) -> Vec<(Service, u32)> {
        self.services
            .iter()
            .map(|p| (p.service, p.pid().expect("running")))
            .collect()
    }

    /// SIGKILL to `service`.
    pub fn kill(&mut self, service: Service) {
        self.process_mut(service).kill();
    }

    /// Starts `service` (again) and waits until its health service reports
    /// SERVING; how long that took.
    pub async fn start_service(&mut self, service: Service) -> Duration {
        let started = Instant::now();
        self.process_mut(service).spawn();
        let mut health = HealthClient::new(channel(self.base_port + service.port_offset()));
        loop {
            let check = tokio::time::timeout(
                Duration::from_secs(1),
                health.check(HealthCheckRequest {
                    service: String::new(),
                }),
            )
            .await;
            if let Ok(Ok(answer)) = check
                && answer.into_inner().status == ServingStatus::Serving as i32
            {
                return started.elapsed();
            }
            if let Some(status) = self.process_mut(service).exited() {
                panic!(
                    "{service} exited ({status}) before it was SERVING\n{}",
                    self.logs()
                );
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "{service} was not SERVING within {START_TIMEOUT:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every service's process still runs (none exited by itself).
    pub fn check_running(&mut self) -> Result<(), String> {
        let exited: Vec<String> = self
            .services
            .iter_mut()
            .filter_map(|p| p.exited().map(|status| format!("{} ({status})", p.service)))
            .collect();
        match exited.is_empty() {
            true => Ok(()),
            false => Err(format!("exited by themselves: {}", exited.join(", "))),
        }
    }

    /// The end of each service's log, for a failure's message.
    pub fn logs(&self) -> String {
        self.services
            .iter()
            .map(|p| format!("--- {} log (last lines) ---\n{}", p.service, p.log_tail(40)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops every service (SIGTERM), then removes the data dir and drops
    /// a database made for the test.
    pub async fn stop(mut self) {
        for process in self.services.iter_mut().rev() {
            process.terminate();
        }
        self.services.clear();
        let layout = self.layout;
        layout.cleanup().await;
    }
}

/// A file for a process's output.
pub fn output_file(path: &Path) -> File {
    File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()))
}
