//! Generates the gRPC code from `proto/` with protox, a pure-Rust protobuf compiler, so that
//! building needs no `protoc` binary.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = [
        "pgquorum/v1/raft.proto",
        "pgquorum/v1/peer.proto",
        "pgquorum/v1/status.proto",
    ];
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
