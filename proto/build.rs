//! Compiles `spiffe/workload.proto` with protox, so no `protoc` is needed to build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=spiffe/workload.proto");
    let descriptors = protox::compile(["spiffe/workload.proto"], ["."])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
