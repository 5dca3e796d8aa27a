//! The sharedcare service kit: what all four services share, so none of them
//! copies it. Config, telemetry, the auth layer, server bootstrap, errors,
//! outgoing clients, TLS, database connections, group commit and test
//! spawning.

pub mod access;
pub mod admission;
pub mod auth;
pub mod client;
pub mod config;
pub mod crypto;
pub mod db;
pub mod decisions;
pub mod error;
pub mod files;
pub mod group;
pub mod ids;
pub mod keys;
pub mod memory;
pub mod merges;
pub mod metrics;
pub mod outbox;
pub mod paging;
pub mod peers;
pub mod proto_time;
pub mod server;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod vocab;

pub use error::{Error, Result};

// Every service, the CLI and the tests link the kit, so this is their one
// allocator. Under load glibc's malloc spent a fifth of an authorised read's
// CPU in its own bookkeeping (profiled with perf); mimalloc's thread-local
// heaps suit many small, short-lived allocations across tokio's threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
