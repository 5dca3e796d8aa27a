//! A PostgreSQL server of the test's own, to stop and start under load:
//! `initdb` into a temp dir, `postgres` as a child process on a free
//! loopback port (its socket in the data dir too). PostgreSQL refuses to
//! run as root: as root, its programs run as the `postgres` user
//! (`setpriv`, which execs, so the child is the postmaster itself and
//! signals reach it).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::processes::{free_port_block, output_file, signal};

/// Longest the server may take to accept connections, or to stop.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Whom the server runs as when the test runs as root.
const SYSTEM_USER: &str = "postgres";

pub struct PrivatePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_user: Option<&'static str>,
    child: Option<Child>,
    starts: u32,
}

/// The directory of `postgres` and `initdb`: `pg_config --bindir`, else
/// the newest `/usr/lib/postgresql/<version>/bin`; `None` if neither has
/// them.
pub fn server_bin_dir() -> Option<PathBuf> {
    let has_server = |dir: &Path| dir.join("postgres").is_file() && dir.join("initdb").is_file();
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(dir) = from_pg_config.filter(|d| has_server(d)) {
        return Some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| has_server(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl PrivatePostgres {
    /// A new cluster (trust authentication, superuser `postgres`), started.
    pub async fn start(bin: PathBuf) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let as_user = running_as_root().then_some(SYSTEM_USER);
        if let Some(user) = as_user {
            let owned = Command::new("chown")
                .args([
                    &format!("{user}:"),
                    dir.path().to_str().expect("utf-8 path"),
                ])
                .status()
                .expect("run chown");
            assert!(owned.success(), "chown the cluster's dir to {user}");
        }
        let mut server = PrivatePostgres {
            bin,
            port: free_port_block(1),
            dir,
            as_user,
            child: None,
            starts: 0,
        };
        let initdb = server
            .command("initdb")
            .args(["-D", &server.data().display().to_string()])
            .args(["-U", "postgres", "--auth=trust", "--no-sync"])
            .stdout(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            initdb.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        server.start_again().await;
        server
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        match self.as_user {
            Some(user) => {
                let mut command = Command::new("setpriv");
                command
                    .args([
                        &format!("--reuid={user}"),
                        &format!("--regid={user}"),
                        "--init-groups",
                        "--",
                    ])
                    .arg(program);
                command
            }
            None => Command::new(program),
        }
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (on the same port and data as before) and waits
    /// until it accepts connections; how long that took.
    pub async fn start_again(&mut self) -> Duration {
        let started = Instant::now();
        self.starts += 1;
        let log = self.dir.path().join(format!("server-{}.log", self.starts));
        let child = self
            .command("postgres")
            .args(["-D", &self.data().display().to_string()])
            .args(["-p", &self.port.to_string()])
            .args(["-k", &self.dir.path().display().to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(output_file(&log))
            .stderr(output_file(&log.with_extension("err")))
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        loop {
            let mut options = sea_orm::ConnectOptions::new(self.url());
            options
                .max_connections(1)
                .connect_timeout(Duration::from_secs(1))
                .acquire_timeout(Duration::from_secs(1))
                .sqlx_logging(false);
            if let Ok(db) = sea_orm::Database::connect(options).await {
                db.close().await.ok();
                return started.elapsed();
            }
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait().expect("poll postgres")
            {
                panic!("postgres exited ({status}): {}", self.log());
            }
            assert!(
                started.elapsed() < TIMEOUT,
                "postgres did not accept connections within {TIMEOUT:?}: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Immediate shutdown (SIGQUIT): every connection dropped at once, no
    /// checkpoint (the next start recovers from the WAL), as a crash would
    /// leave it. Waits until the server has exited.
    pub async fn stop_immediately(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(child.id(), "QUIT");
        let started = Instant::now();
        while child.try_wait().expect("poll postgres").is_none() {
            assert!(
                started.elapsed() < TIMEOUT,
                "postgres did not stop within {TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn log(&self) -> String {
        let log = self.dir.path().join(format!("server-{}.err", self.starts));
        std::fs::read_to_string(log).unwrap_or_default()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Immediate shutdown ends the server's own processes too.
            let _ = Command::new("kill")
                .args(["-QUIT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}
