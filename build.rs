//! Compiles the gRPC contract in `proto/` with protox, a pure-Rust protobuf compiler, so that building needs no
//! system `protoc`. The descriptor set is also written out for the reflection service.

use std::{env, path::PathBuf};

const PROTO_FILES: &[&str] = &[
    "proto/nhsmail/agent/v1/types.proto",
    "proto/nhsmail/agent/v1/connectivity.proto",
    "proto/nhsmail/agent/v1/messages.proto",
    "proto/nhsmail/agent/v1/status.proto",
    "proto/nhsmail/agent/v1/optouts.proto",
    "proto/nhsmail/agent/v1/inbox.proto",
    "proto/nhsmail/agent/v1/audit.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");

    let descriptors = protox::compile(PROTO_FILES, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    std::fs::write(out_dir.join("nhsmail_descriptor.bin"), prost::Message::encode_to_vec(&descriptors))?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
