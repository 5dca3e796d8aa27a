//! Serving several services in one process: one stop signal for all of
//! them (Ctrl-C, SIGTERM, or any one failing), and a record of which failed.

use std::{collections::HashMap, future::Future, sync::Arc};

use sharedcare_kit::{
    Error,
    config::ServerConfig,
    server::{ServiceSpec, serve, shutdown_signal},
};
use tokio::{net::TcpListener, sync::watch, task::JoinSet, time::Instant};

type Outcome = (&'static str, Result<(), Error>);

/// How long services may drain after a stop before `dev` exits anyway.
pub const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

pub struct Supervisor {
    stop: Arc<watch::Sender<bool>>,
    tasks: JoinSet<Outcome>,
    names: HashMap<tokio::task::Id, &'static str>,
}

impl Supervisor {
    /// A supervisor that stops everything on Ctrl-C or SIGTERM.
    pub fn new() -> Self {
        let (stop, _) = watch::channel(false);
        let stop = Arc::new(stop);
        let on_signal = stop.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            eprintln!("sharedcare dev: stopping all services");
            on_signal.send_replace(true);
        });
        Supervisor {
            stop,
            tasks: JoinSet::new(),
            names: HashMap::new(),
        }
    }

    /// Serves `spec` on `listener` until everything is asked to stop.
    pub fn serve(
        &mut self,
        name: &'static str,
        spec: ServiceSpec,
        server: ServerConfig,
        listener: TcpListener,
    ) {
        let stopped = self.stopped();
        let handle = self.tasks.spawn(async move {
            let result = serve(spec, &server, listener, stopped).await;
            (name, result)
        });
        self.names.insert(handle.id(), name);
    }

    /// Asks every service to stop.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Resolves once a stop is asked for.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    /// Waits until every service has stopped; the ones that failed (or
    /// stopped without being asked), in the order they did. Once a stop is
    /// asked for, services get [`STOP_GRACE`] to drain: a client that
    /// keeps a connection open must not keep `dev` running.
    pub async fn wait(mut self) -> Vec<&'static str> {
        let mut failed = Vec::new();
        let mut stop_asked = self.stop.subscribe();
        let mut deadline: Option<Instant> = None;
        loop {
            let event = tokio::select! {
                joined = self.tasks.join_next_with_id() => Event::Joined(joined),
                _ = stop_asked.wait_for(|stop| *stop), if deadline.is_none() => Event::Stopping,
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)),
                    if deadline.is_some() => Event::GraceOver,
            };
            match event {
                Event::Joined(None) => break,
                Event::Joined(Some(joined)) => {
                    if let Some(name) = self.finished(joined) {
                        failed.push(name);
                        self.stop();
                    }
                }
                Event::Stopping => deadline = Some(Instant::now() + STOP_GRACE),
                Event::GraceOver => {
                    let mut left: Vec<&str> = self.names.values().copied().collect();
                    left.sort_unstable();
                    eprintln!(
                        "sharedcare dev: {} still draining after {} s (a client holds a \
                         connection open); stopping anyway",
                        left.join(", "),
                        STOP_GRACE.as_secs()
                    );
                    self.tasks.abort_all();
                    break;
                }
            }
        }
        failed
    }

    /// Reports a service that ended; its name if that was a failure.
    fn finished(
        &mut self,
        joined: Result<(tokio::task::Id, Outcome), tokio::task::JoinError>,
    ) -> Option<&'static str> {
        match joined {
            Ok((id, (name, result))) => {
                self.names.remove(&id);
                match result {
                    Ok(()) if self.stopping() => None,
                    Ok(()) => {
                        eprintln!(
                            "sharedcare dev: {name} stopped unexpectedly; stopping the others"
                        );
                        Some(name)
                    }
                    Err(e) => {
                        tracing::error!(service = name, error = %e, "service failed");
                        eprintln!("sharedcare dev: {name} failed: {e}; stopping the others");
                        Some(name)
                    }
                }
            }
            Err(e) => {
                let name = self.names.remove(&e.id()).unwrap_or("a service");
                eprintln!("sharedcare dev: {name} ended abnormally: {e}; stopping the others");
                Some(name)
            }
        }
    }
}

/// What `wait` woke up for.
enum Event {
    Joined(Option<Result<(tokio::task::Id, Outcome), tokio::task::JoinError>>),
    Stopping,
    GraceOver,
}
