//! Compiles `proto/*.proto` without a system `protoc`: `protox` (pure Rust) produces the descriptor
//! set, and madsim-tonic-build emits both the real and the simulated gRPC stubs from it.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let protos = ["cache.proto", "raft.proto", "health.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={}", proto_dir.join(proto).display());
    }
    let descriptors = protox::compile(protos, [&proto_dir])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("hyperion_descriptor.bin");
    std::fs::write(
        &descriptor_path,
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_build::configure()
        // Log entries and snapshots are shared (`bytes::Bytes`) from the network buffer to the
        // Raft core and back, not copied per message.
        .bytes([
            ".hyperion.raft.v1.Entry.command",
            ".hyperion.raft.v1.Snapshot.data",
        ])
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .compile_protos(&protos.map(|p| proto_dir.join(p)), &[proto_dir])?;
    Ok(())
}
