//! The async runtime the `raftcd` binary (server, proxy, `raftcd bench`,
//! `raftcd escrow`) runs on: tokio's multi-thread runtime.
//!
//! `TOKIO_WORKER_THREADS` (tokio's own variable) sets its worker count, as
//! it would for tokio itself, but it is read here: tokio panics on a value
//! that is not a positive number, and a mistyped variable must be a clear
//! error instead. Unset, there is one worker per CPU. Fewer workers cost
//! less CPU per request where several members share a few cores (measured
//! in docs/benchmarks.md, session 18).

use std::io;

/// The variable tokio reads for its worker count.
pub const WORKER_THREADS: &str = "TOKIO_WORKER_THREADS";

/// A multi-thread runtime with every driver enabled, with the worker count
/// from [`WORKER_THREADS`] if set.
pub fn build() -> io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    let workers = match std::env::var_os(WORKER_THREADS) {
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        Some(v) => worker_count(&v.to_string_lossy())?,
    };
    builder.worker_threads(workers).build()
}

/// A worker count as `TOKIO_WORKER_THREADS` gives it.
fn worker_count(value: &str) -> io::Result<usize> {
    match value.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{WORKER_THREADS} must be a number of worker threads above 0, not {value:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_counts_are_positive_numbers() {
        assert_eq!(worker_count("1").unwrap(), 1);
        assert_eq!(worker_count(" 4 ").unwrap(), 4);
        for bad in ["", "0", "-1", "abc", "2x"] {
            let e = worker_count(bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            assert!(e.to_string().contains(WORKER_THREADS), "{e}");
        }
    }
}
