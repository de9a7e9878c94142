//! The `raftcd` binary: a thin wrapper over [`raftcd::Node`] that takes
//! etcd's flags and environment variables.

use clap::Parser;
use raftcd::cli::{
    CertsCommand, EscrowCommand, Flags, SnapshotCommand, StorageCommand, SubCommand,
};
use raftcd::Node;
use tracing_subscriber::EnvFilter;

/// The binary's allocator (a program embedding the library picks its own).
/// A write is allocated on one thread and freed on others (request task,
/// log flusher, state machine), glibc's slow path; with mimalloc a member
/// uses 10-25% less CPU per write (docs/benchmarks.md, session 19).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let flags = match Flags::try_parse() {
        Ok(f) => f,
        Err(e) => return flag_error(e),
    };
    // openraft is chatty at info; its warnings and errors still show.
    let directives = format!("{},openraft=warn", flags.log_level);
    let filter =
        EnvFilter::try_new(directives).unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    if let Some(SubCommand::Snapshot(SnapshotCommand::Restore {
        file,
        restore_data_dir,
    })) = &flags.command
    {
        return match raftcd::backup::restore(file, restore_data_dir) {
            Ok(rev) => {
                println!(
                    "restored {} at revision {rev} into {}",
                    file.display(),
                    restore_data_dir.display()
                );
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("raftcd: error: snapshot restore: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if let Some(SubCommand::Certs(cmd)) = &flags.command {
        return certs(cmd);
    }
    if let Some(SubCommand::Storage(cmd)) = &flags.command {
        return storage(cmd);
    }
    if let Some(SubCommand::Escrow(cmd)) = &flags.command {
        return escrow(cmd);
    }
    if let Some(SubCommand::Bench(cmd)) = &flags.command {
        return raftcd::bench::main(cmd);
    }
    let config = match flags.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("raftcd: error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match raftcd::runtime::build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("raftcd: error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if !config.forward_to.is_empty() {
        return rt.block_on(proxy(config));
    }
    rt.block_on(async move {
        let node = match Node::start(config).await {
            Ok(n) => n,
            Err(e) => {
                eprintln!("raftcd: error: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        let refused = tokio::select! {
            _ = wait_for_signal(&node) => None,
            reason = node.refused() => Some(reason),
        };
        if let Some(reason) = &refused {
            tracing::error!(%reason, "stopping");
            eprintln!("raftcd: error: {reason}");
        }
        tracing::info!("shutting down");
        match node.shutdown().await {
            Ok(()) if refused.is_some() => std::process::ExitCode::FAILURE,
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("raftcd: error during shutdown: {e}");
                std::process::ExitCode::FAILURE
            }
        }
    })
}

/// A command line clap refuses. `raftcd bench` says it in one line (its
/// users script it); everything else prints clap's full message.
fn flag_error(e: clap::Error) -> std::process::ExitCode {
    use clap::error::ErrorKind;
    let is_help = matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    // `bench` as a subcommand: not the value of a flag (`--name bench`).
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.iter().enumerate().any(|(i, a)| {
        a == "bench" && (i == 0 || !args[i - 1].starts_with('-') || args[i - 1].contains('='))
    });
    if is_help || !bench {
        e.exit();
    }
    let rendered = e.render().to_string();
    let line: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more"))
        .collect();
    let line = line.join(" ");
    let line = line.strip_prefix("error: ").unwrap_or(&line);
    eprintln!("raftcd: error: bench: {line} (see raftcd bench --help)");
    std::process::ExitCode::from(2)
}

/// `raftcd certs ...`: make the files, print their names.
fn certs(cmd: &CertsCommand) -> std::process::ExitCode {
    use raftcd::certs::{self, Kind};
    let run = || -> Result<Vec<std::path::PathBuf>, certs::CertsError> {
        match cmd {
            CertsCommand::Init { common } => {
                certs::init(&common.dir, certs::parse_duration(&common.expiry)?)
            }
            CertsCommand::Server { hosts, common } => certs::issue(
                &common.dir,
                Kind::Server,
                "server",
                hosts,
                certs::parse_duration(&common.expiry)?,
            ),
            CertsCommand::Peer {
                name,
                hosts,
                common,
            } => certs::issue(
                &common.dir,
                Kind::Peer,
                name,
                hosts,
                certs::parse_duration(&common.expiry)?,
            ),
            CertsCommand::Client { name, common } => certs::issue(
                &common.dir,
                Kind::Client,
                name,
                &[],
                certs::parse_duration(&common.expiry)?,
            ),
        }
    };
    match run() {
        Ok(files) => {
            for f in files {
                println!("wrote {}", f.display());
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("raftcd: error: certs: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A replica without a member: serve its client API for the members
/// until SIGINT or SIGTERM.
async fn proxy(config: raftcd::Config) -> std::process::ExitCode {
    let proxy = match raftcd::proxy::Proxy::start(&config, &config.forward_to).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("raftcd: error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = recv(&mut term) => {}
    }
    tracing::info!("shutting down");
    proxy.shutdown().await;
    std::process::ExitCode::SUCCESS
}

/// `raftcd escrow ...`: `recover` offline, the others over the service.
fn escrow(cmd: &EscrowCommand) -> std::process::ExitCode {
    use raftcd::escrow::payment::{parse_address, parse_signature, parse_u256, Payment};
    use raftcd::escrow::remote::{run, Op};
    use raftcd::pb::escrowpb;
    let id = |i: &raftcd::cli::EscrowChannelId| escrowpb::ChannelId {
        mpe_contract: i.mpe_contract.clone(),
        channel_id: i.channel_id.clone(),
    };
    let (conn, op) = match cmd {
        EscrowCommand::Recover {
            id:
                raftcd::cli::EscrowChannelId {
                    mpe_contract,
                    channel_id,
                },
            nonce,
            amount,
            signature,
        } => {
            let recovered = (|| {
                let payment = Payment {
                    mpe_contract: parse_address("--mpe-contract", mpe_contract)?,
                    channel_id: parse_u256("--channel-id", channel_id)?,
                    nonce: parse_u256("--nonce", nonce)?,
                    amount: parse_u256("--amount", amount)?,
                    signature: parse_signature(signature)?,
                };
                payment.signer()
            })();
            return match recovered {
                Ok(signer) => {
                    println!("{}", signer.to_checksum(None));
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("raftcd: error: escrow recover: {e}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
        EscrowCommand::OpenChannel {
            conn,
            id: i,
            nonce,
            sender,
            signer,
            recipient,
            group_id,
            value,
            expiration,
        } => (
            conn,
            Op::Open(escrowpb::Channel {
                mpe_contract: i.mpe_contract.clone(),
                channel_id: i.channel_id.clone(),
                nonce: nonce.clone(),
                sender: sender.clone(),
                signer: signer.clone(),
                recipient: recipient.clone(),
                group_id: group_id.clone(),
                value: value.clone(),
                expiration: expiration.clone(),
                ..Default::default()
            }),
        ),
        EscrowCommand::Pay {
            conn,
            id: i,
            nonce,
            amount,
            signature,
            block,
        } => (
            conn,
            Op::Pay(escrowpb::PaymentRequest {
                mpe_contract: i.mpe_contract.clone(),
                channel_id: i.channel_id.clone(),
                nonce: nonce.clone(),
                amount: amount.clone(),
                signature: signature.clone(),
                current_block: block.clone(),
            }),
        ),
        EscrowCommand::Channel { conn, id: i } => (conn, Op::Get(id(i))),
        EscrowCommand::StartClaim { conn, id: i } => (conn, Op::StartClaim(id(i))),
        EscrowCommand::Claims {
            conn,
            mpe_contract,
            channel_id,
        } => (
            conn,
            Op::Claims(escrowpb::ListClaimsRequest {
                mpe_contract: mpe_contract.clone(),
                channel_id: channel_id.clone().unwrap_or_default(),
            }),
        ),
        EscrowCommand::Settle { conn, id: i, nonce } => (
            conn,
            Op::Settle(escrowpb::SettleClaimRequest {
                mpe_contract: i.mpe_contract.clone(),
                channel_id: i.channel_id.clone(),
                nonce: nonce.clone(),
            }),
        ),
    };
    let json_out = match conn.write_out.as_str() {
        "json" => true,
        "simple" => false,
        other => {
            eprintln!("raftcd: error: -w must be simple or json, not {other:?}");
            return std::process::ExitCode::from(1);
        }
    };
    let rt = match raftcd::runtime::build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("raftcd: error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let printed = rt.block_on(run(&conn.endpoints, op, json_out));
    if printed.reply {
        println!("{}", printed.text);
    } else {
        eprintln!("raftcd: {}", printed.text);
    }
    std::process::ExitCode::from(printed.code)
}

/// `raftcd storage init`: write the data dir, say how to start it.
fn storage(cmd: &StorageCommand) -> std::process::ExitCode {
    let StorageCommand::Init {
        name,
        token,
        client_url,
        peer_url,
        initial_cluster,
        init_data_dir,
    } = cmd;
    let file = raftcd::init::StartFile {
        name: name.clone(),
        token: token.clone(),
        client_url: client_url.clone(),
        peer_url: peer_url.clone(),
        initial_cluster: initial_cluster.clone(),
    };
    let dir = init_data_dir
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from(format!("{name}.raftcd")));
    match raftcd::init::init(&dir, &file) {
        Ok(path) => {
            println!("wrote {}", path.display());
            println!("start the member with:");
            println!("  raftcd --data-dir {}", dir.display());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("raftcd: error: storage init: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Wait for SIGINT or SIGTERM; SIGHUP re-reads the TLS certificates.
async fn wait_for_signal(node: &Node) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut term = signal(SignalKind::terminate()).ok();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = recv(&mut term) => return,
            _ = recv(&mut hup) => match node.reload_tls() {
                Ok(()) => tracing::info!("SIGHUP: certificates reloaded"),
                Err(e) => tracing::warn!(error = %e, "SIGHUP: cannot reload certificates; keeping the previous ones"),
            },
        }
    }
}

/// The next delivery of `sig`; never, if it could not be installed.
async fn recv(sig: &mut Option<tokio::signal::unix::Signal>) {
    match sig {
        Some(s) => {
            if s.recv().await.is_none() {
                // The signal driver is gone: never again.
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}
