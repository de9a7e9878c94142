//! Compiles the etcd v3 API protos and raftcd's peer protocol in `proto/` with protox (pure Rust, so
//! building raftcd needs no system `protoc`) and generates tonic/prost code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "etcd/mvccpb/kv.proto",
        "etcd/authpb/auth.proto",
        "etcd/etcdserverpb/rpc.proto",
        "etcd/v3lockpb/v3lock.proto",
        "etcd/v3electionpb/v3election.proto",
        "raftcd/peer.proto",
        "raftcd/escrow.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed=proto/{p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
