//! Compiles `aforo/v1/*.proto` with protox (a pure-Rust protobuf compiler), so
//! building aforo needs no `protoc` on the machine. The encoded descriptor set
//! is kept for the gRPC reflection service.

use prost::Message;
use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "aforo/v1/event.proto",
    "aforo/v1/ingest.proto",
    "aforo/v1/catalog.proto",
    "aforo/v1/admin.proto",
    "aforo/v1/usage.proto",
    "aforo/v1/invoice.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out.join("aforo_descriptor.bin");
    std::fs::write(&descriptor_path, descriptors.encode_to_vec())?;
    tonic_prost_build::configure()
        .skip_protoc_run()
        .file_descriptor_set_path(&descriptor_path)
        .compile_protos(PROTOS, &["."])?;
    Ok(())
}
