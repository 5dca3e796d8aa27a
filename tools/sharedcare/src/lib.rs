//! The pure parts of the `sharedcare` command line that other crates use
//! too: how `import` reads a line of a bulk export (the fuzz crate feeds
//! it arbitrary bytes). The binary is `main.rs`.

pub mod ndjson;
