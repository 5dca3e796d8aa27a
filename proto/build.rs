//! Compiles proto/ with protox (pure Rust), so no one needs protoc installed.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "sharedcare/common/v1/common.proto",
    "sharedcare/identity/v1/identity.proto",
    "sharedcare/consent/v1/consent.proto",
    "sharedcare/records/v1/records.proto",
    "sharedcare/records/storage/v1/storage.proto",
    "sharedcare/audit/v1/audit.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let descriptors = protox::compile(PROTOS, ["."])?;
    // Served by the reflection service.
    fs::write(
        out_dir.join("sharedcare_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
