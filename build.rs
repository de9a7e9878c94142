//! Compiles the etcd v3 API protos and raftcd's peer protocol in `proto/` with protox (pure Rust, so
//! building raftcd needs no system `protoc`) and generates tonic/prost code, plus serde
//! implementations (pbjson) of the etcd types in grpc-gateway's JSON for the JSON gateway.

use prost::Message;

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
    let encoded = fds.encode_to_vec();
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .bytes(".")
        .compile_fds(fds)?;
    // etcd's gateway marshals with jsonpb `OrigName: true`: proto field
    // names, 64-bit integers as strings, bytes as base64, enums by name,
    // defaults left out; unknown fields in requests are ignored.
    pbjson_build::Builder::new()
        .register_descriptors(&encoded)?
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .build(&[
            ".mvccpb",
            ".authpb",
            ".etcdserverpb",
            ".v3lockpb",
            ".v3electionpb",
        ])?;
    Ok(())
}
