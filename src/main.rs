//! The `raftcd` binary: a thin wrapper over [`raftcd::Node`] that takes
//! etcd's flags and environment variables.

use clap::Parser;
use raftcd::config::{Flags, SnapshotCommand, SubCommand};
use raftcd::Node;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let flags = Flags::parse();
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
    let config = match flags.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("raftcd: error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("raftcd: error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let node = match Node::start(config).await {
            Ok(n) => n,
            Err(e) => {
                eprintln!("raftcd: error: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        let refused = tokio::select! {
            _ = wait_for_signal() => None,
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

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
