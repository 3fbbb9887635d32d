//! Compiles the gRPC contract in proto/ with protox, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/countersign/v1/types.proto",
        "proto/countersign/v1/teller.proto",
        "proto/countersign/v1/supervisor.proto",
        "proto/countersign/v1/audit.proto",
        "proto/countersign/v1/admin.proto",
        "proto/countersign/v1/review.proto",
        "proto/countersign/v1/session.proto",
    ];
    let fds = protox::compile(files, ["proto"])?;
    // The descriptor set, imports included, for gRPC server reflection.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("countersign_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    Ok(())
}
