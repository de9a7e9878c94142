//! The command line (`cli::Flags`): argv vectors from the input (arguments
//! split at NUL bytes, any bytes, not only UTF-8; an argument `\x01 i rest`
//! is the `i`-th flag or subcommand name clap knows, `=rest` appended) go
//! through the same clap parsing and validation the binary runs before it
//! starts anything:
//! `Flags::try_parse_from`, then `Flags::into_config` (URLs, the initial
//! cluster, durations, TLS flags, a replica table, a data dir's start
//! file, `Config::validate`) or, for a subcommand, the checks it makes on
//! its values before touching anything (`certs`: the expiry; `storage
//! init`: the start file; `escrow recover`: addresses, numbers, the
//! signature and its signer). Nothing is started, bound or written.
//!
//! It runs in a scratch directory holding a replica table `t.toml` (ids 1
//! and 2) and a data dir `s.raftcd` with a start file, so relative paths
//! in the flags can find them; arguments naming `dev`, `proc` or `sys` are
//! skipped (reading `/dev/zero` as a replica table is not a bug), and the
//! `ETCD_*` variables are cleared.
#![no_main]
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::sync::{Once, OnceLock};

use clap::{CommandFactory, Parser};
use libfuzzer_sys::fuzz_target;
use raftcd::cli::{CertsCommand, EscrowCommand, Flags, StorageCommand, SubCommand};
use raftcd::init::StartFile;

const TABLE: &str = r#"token = "t"
[[replica]]
id = 1
name = "r1"
client_url = "http://127.0.0.1:2379"
peer_url = "http://127.0.0.1:2380"
[[replica]]
id = 2
name = "r2"
client_url = "http://127.0.0.1:3379"
peer_url = "http://127.0.0.1:3380"
run_node = false
"#;

const START: &str = r#"name = "s"
token = "t"
client_url = "http://127.0.0.1:4379"
peer_url = "http://127.0.0.1:4380"
initial_cluster = "s=http://127.0.0.1:4380"
"#;

fn sandbox() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let dir = std::env::temp_dir().join(format!("raftcd-fuzz-cli-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("s.raftcd")).expect("scratch dir");
        std::fs::write(dir.join("t.toml"), TABLE).expect("table");
        std::fs::write(
            dir.join("s.raftcd").join(raftcd::storage::START_FILE),
            START,
        )
        .expect("start file");
        std::env::set_current_dir(&dir).expect("cd");
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD_") {
                std::env::remove_var(k);
            }
        }
    });
}

fn forbidden(arg: &[u8]) -> bool {
    [&b"dev"[..], b"proc", b"sys"]
        .iter()
        .any(|w| arg.windows(w.len()).any(|x| x == *w))
}

/// Every flag (`--long`) and subcommand name clap knows, subcommands'
/// own flags included.
fn names() -> &'static [Vec<u8>] {
    static NAMES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    NAMES.get_or_init(|| {
        fn walk(cmd: &clap::Command, out: &mut Vec<Vec<u8>>) {
            for a in cmd.get_arguments() {
                if let Some(long) = a.get_long() {
                    out.push(format!("--{long}").into_bytes());
                }
            }
            for sub in cmd.get_subcommands() {
                out.push(sub.get_name().as_bytes().to_vec());
                walk(sub, out);
            }
        }
        let mut out = Vec::new();
        walk(&Flags::command(), &mut out);
        out
    })
}

/// One argument: the chunk as it is, or for a chunk `\x01 i rest...` the
/// `i`-th known name, with `=rest` if there is a rest.
fn arg(chunk: &[u8]) -> Vec<u8> {
    match chunk {
        [1, i, rest @ ..] => {
            let names = names();
            let mut a = names[usize::from(*i) % names.len()].clone();
            if !rest.is_empty() {
                a.push(b'=');
                a.extend_from_slice(rest);
            }
            a
        }
        _ => chunk.to_vec(),
    }
}

fuzz_target!(|data: &[u8]| {
    sandbox();
    let args: Vec<Vec<u8>> = if data.is_empty() {
        Vec::new()
    } else {
        data.split(|b| *b == 0).map(arg).collect()
    };
    if args.len() > 64 || args.iter().any(|a| forbidden(a)) {
        return;
    }
    let argv =
        std::iter::once(OsString::from("raftcd")).chain(args.into_iter().map(OsString::from_vec));
    let Ok(flags) = Flags::try_parse_from(argv) else {
        return;
    };
    match &flags.command {
        None => {
            if let Ok(config) = flags.into_config() {
                config.validate().expect("into_config validates");
            }
        }
        Some(SubCommand::Certs(cmd)) => {
            let common = match cmd {
                CertsCommand::Init { common }
                | CertsCommand::Server { common, .. }
                | CertsCommand::Peer { common, .. }
                | CertsCommand::Client { common, .. } => common,
            };
            let _ = raftcd::certs::parse_duration(&common.expiry);
        }
        Some(SubCommand::Storage(StorageCommand::Init {
            name,
            token,
            client_url,
            peer_url,
            initial_cluster,
            ..
        })) => {
            let file = StartFile {
                name: name.clone(),
                token: token.clone(),
                client_url: client_url.clone(),
                peer_url: peer_url.clone(),
                initial_cluster: initial_cluster.clone(),
            };
            let _ = file.check();
        }
        Some(SubCommand::Escrow(EscrowCommand::Recover {
            id,
            nonce,
            amount,
            signature,
        })) => {
            use raftcd::escrow::payment::{parse_address, parse_signature, parse_u256, Payment};
            let payment = (|| {
                Ok::<_, raftcd::escrow::payment::PaymentError>(Payment {
                    mpe_contract: parse_address("--mpe-contract", &id.mpe_contract)?,
                    channel_id: parse_u256("--channel-id", &id.channel_id)?,
                    nonce: parse_u256("--nonce", nonce)?,
                    amount: parse_u256("--amount", amount)?,
                    signature: parse_signature(signature)?,
                })
            })();
            if let Ok(p) = payment {
                let _ = p.signer();
            }
        }
        Some(_) => {}
    }
});
