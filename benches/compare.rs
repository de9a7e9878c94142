#![allow(clippy::unwrap_used)]
//! Side-by-side benchmark: raftcd against a real etcd 3.4 on the same machine.
//!
//! Run with `cargo bench --bench compare -- [--duration-secs N]
//! [--only raftcd|etcd] [--clients 1,64] [--no-history] [--history-revs N]
//! [--startup-runs N] [--json FILE]`.
//! Each server runs alone (one after the other) with a fresh temp data dir on
//! free loopback ports; the closed-loop load generator runs in this process
//! (`raftcd::bench`, the one behind `raftcd bench`: 8-byte keys, 256-byte
//! values, 10,000-key space, up to 8 gRPC connections shared by the
//! clients; etcd-client only for status, compaction and defragmentation),
//! the way the etcd 3.4.23 reference
//! numbers in `../shared/reference/` were taken. Before the load, each
//! server is started a few times more on fresh data dirs to time start to
//! first accepted write. See `docs/benchmarks.md`.
//!
//! Without `--bench` on its command line (that is, under `cargo test
//! --benches` or `--all-targets`) it does nothing, so test runs stay fast.

use std::error::Error;
use std::fmt::Write as _;
use std::fs::File;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use etcd_client::{Client, CompactionOptions, ConnectOptions};
use raftcd::bench::{self, Spec, Workload};
use raftcd::pb::etcdserverpb::kv_client::KvClient;
use raftcd::pb::etcdserverpb::PutRequest;
use serde_json::json;
use tonic::transport::{Channel, Endpoint};

/// The load generator allocates as `raftcd bench` (the `raftcd` binary,
/// which `benches/three_members.sh` runs) does. With glibc's allocator it
/// used ~25-26 µs of CPU per put at 64 clients against ~21-23 µs, CPU the
/// server under test (either one) lacks on a 2-core machine.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type BoxError = Box<dyn Error + Send + Sync>;
type Res<T> = Result<T, BoxError>;

const KEY_SPACE: usize = 10_000;
const KEY_SIZE: usize = 8;
const VALUE_SIZE: usize = 256;
const MAX_CONNS: usize = 8;
/// Clients used for the fill phases (as the reference's `prepare`).
const FILL_CLIENTS: usize = 64;
/// Keys of the shared-key compare-and-swap step.
const SHARED_KEYS: usize = 100;
/// Keys the history step piles its revisions on.
const HISTORY_KEYS: usize = 100;
/// The history fill stops after this long even if not all revisions are in.
const HISTORY_FILL_CAP: Duration = Duration::from_secs(180);
const DEFAULT_HISTORY_REVS: u64 = 400_000;
const ETCD_BIN: &str = "/usr/bin/etcd";
/// Starts of each server timed to its first accepted write.
const DEFAULT_STARTUP_RUNS: usize = 5;
/// How often the start-to-first-write probe tries a put.
const STARTUP_POLL: Duration = Duration::from_millis(5);
/// How long one probe attempt (connect, or put) may take.
const STARTUP_ATTEMPT: Duration = Duration::from_millis(200);
/// A start with no accepted write after this long fails the run.
const STARTUP_CAP: Duration = Duration::from_secs(30);
/// Starts again with new ports when one was taken before the server bound it.
const BIND_RETRIES: usize = 3;

const USAGE: &str = "usage: cargo bench --bench compare -- [--duration-secs N] \
[--only raftcd|etcd] [--clients 1,64] [--no-history] [--history-revs N] [--space N] \
[--startup-runs N] [--json FILE]";
/// Value size of the space step (the storage issue's workload).
const SPACE_VALUE_SIZE: usize = 1024;
/// The space fill stops after this long even if not all puts are in.
const SPACE_FILL_CAP: Duration = Duration::from_secs(900);

// ---------------------------------------------------------------- options

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Raftcd,
    Etcd,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Raftcd => "raftcd",
            Kind::Etcd => "etcd",
        }
    }
}

#[derive(Debug)]
struct Opts {
    duration: Duration,
    only: Option<Kind>,
    clients: Vec<usize>,
    history: bool,
    history_revs: u64,
    /// Only the space step, with this many puts.
    space: Option<u64>,
    /// Fresh starts per server timed to the first accepted write (0: none).
    startup_runs: usize,
    /// Also write the results as JSON to this file.
    json: Option<PathBuf>,
}

fn parse_args(args: &[String]) -> Res<Opts> {
    let mut o = Opts {
        duration: Duration::from_secs(5),
        only: None,
        clients: vec![1, 64],
        history: true,
        history_revs: DEFAULT_HISTORY_REVS,
        space: None,
        startup_runs: DEFAULT_STARTUP_RUNS,
        json: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (a.as_str(), None),
        };
        let mut value = || -> Res<String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}").into())
        };
        match flag {
            "--bench" => {}
            "--duration-secs" => {
                let v: f64 = value()?.parse()?;
                if !(v > 0.0 && v <= 3600.0) {
                    return Err(format!("--duration-secs must be in (0, 3600], not {v}").into());
                }
                o.duration = Duration::from_secs_f64(v);
            }
            "--only" => {
                o.only = Some(match value()?.as_str() {
                    "raftcd" => Kind::Raftcd,
                    "etcd" => Kind::Etcd,
                    other => return Err(format!("--only raftcd|etcd, not {other:?}").into()),
                })
            }
            "--clients" => {
                let mut list = Vec::new();
                for part in value()?.split(',').filter(|p| !p.trim().is_empty()) {
                    let n: usize = part.trim().parse()?;
                    if n == 0 || n > 4096 {
                        return Err(format!("--clients: {n} is not in 1..=4096").into());
                    }
                    list.push(n);
                }
                if list.is_empty() {
                    return Err("--clients needs at least one number".into());
                }
                o.clients = list;
            }
            "--no-history" => o.history = false,
            "--history-revs" => {
                o.history_revs = value()?.parse()?;
                if o.history_revs == 0 {
                    o.history = false;
                }
            }
            "--space" => {
                let n: u64 = value()?.parse()?;
                if n == 0 {
                    return Err("--space needs a number of puts above 0".into());
                }
                o.space = Some(n);
            }
            "--startup-runs" => {
                o.startup_runs = value()?.parse()?;
                if o.startup_runs > 100 {
                    return Err("--startup-runs: at most 100".into());
                }
            }
            "--json" => o.json = Some(PathBuf::from(value()?)),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
        }
    }
    Ok(o)
}

// ---------------------------------------------------------------- servers

/// A server process with its own temp data dir; killed on drop.
struct ServerProc {
    kind: Kind,
    child: Option<Child>,
    port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    /// Just before the process was spawned.
    spawned: Instant,
    _tmp: tempfile::TempDir,
}

/// Two distinct free loopback ports (both held until both are chosen).
fn free_ports() -> Res<(u16, u16)> {
    let a = TcpListener::bind("127.0.0.1:0")?;
    let b = TcpListener::bind("127.0.0.1:0")?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

/// A command with no inherited etcd configuration variables.
fn clean_command(bin: &str) -> Command {
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ETCD") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// The etcd to compare with: `$BENCH_ETCD_BIN` if set, else `/usr/bin/etcd`,
/// else `etcd` on `PATH`.
fn etcd_bin() -> Option<String> {
    if let Some(bin) = std::env::var_os("BENCH_ETCD_BIN") {
        let bin = PathBuf::from(bin);
        return bin.is_file().then(|| bin.display().to_string());
    }
    if Path::new(ETCD_BIN).is_file() {
        return Some(ETCD_BIN.to_string());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("etcd"))
            .find(|p| p.is_file())
            .map(|p| p.display().to_string())
    })
}

fn binary_version(bin: &str) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|| "unknown".into())
}

impl ServerProc {
    fn start(kind: Kind, bin: &str) -> Res<ServerProc> {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("compare-{}-", kind.name()))
            .tempdir()?;
        let data_dir = tmp.path().join("data");
        let log = tmp.path().join("server.log");
        let (port, peer_port) = free_ports()?;
        let client_url = format!("http://127.0.0.1:{port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut cmd = clean_command(bin);
        cmd.args(["--name", "default"])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("default={peer_url}")]);
        match kind {
            Kind::Raftcd => cmd.args(["--log-level", "warn"]),
            Kind::Etcd => cmd.args(["--logger", "zap", "--log-level", "warn"]),
        };
        let log_file = File::create(&log)?;
        cmd.stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let spawned = Instant::now();
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {bin}: {e}"))?;
        Ok(ServerProc {
            kind,
            child: Some(child),
            port,
            data_dir,
            log,
            spawned,
            _tmp: tmp,
        })
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// An error if the process has exited.
    fn check_running(&mut self) -> Res<()> {
        if let Some(c) = self.child.as_mut() {
            if let Some(status) = c.try_wait()? {
                return Err(format!(
                    "{} exited early with {status}; log:\n{}",
                    self.kind.name(),
                    self.log_tail()
                )
                .into());
            }
        }
        Ok(())
    }

    /// Whether the server failed to bind a port: `free_ports` released it
    /// and another socket on this machine took it before the server bound it.
    fn port_taken(&self) -> bool {
        std::fs::read_to_string(&self.log)
            .is_ok_and(|log| log.to_lowercase().contains("address already in use"))
    }

    /// Start and wait until the server answers, with new ports if one was
    /// taken (up to `BIND_RETRIES` times).
    async fn start_ready(kind: Kind, bin: &str) -> Res<ServerProc> {
        let mut retries = 0;
        loop {
            let mut server = ServerProc::start(kind, bin)?;
            match server.connect(1).await {
                Ok(_) => return Ok(server),
                Err(_) if retries < BIND_RETRIES && server.port_taken() => {
                    eprintln!(
                        "[{}] a port was taken before the server bound it; starting again",
                        kind.name()
                    );
                    server.stop();
                    retries += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Wait until the server answers a Status call; return 8 connections.
    async fn connect(&mut self, conns: usize) -> Res<Vec<Client>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.check_running()?;
            if let Ok(mut c) = Client::connect([self.endpoint()], Some(connect_options())).await {
                if c.status().await.is_ok() {
                    break;
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} not ready after 30 s; log:\n{}",
                    self.kind.name(),
                    self.log_tail()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut out = Vec::with_capacity(conns);
        for _ in 0..conns {
            out.push(Client::connect([self.endpoint()], Some(connect_options())).await?);
        }
        Ok(out)
    }

    /// Peak resident set size so far (VmHWM), in bytes.
    fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    /// SIGTERM, wait up to 20 s, then SIGKILL.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop on SIGTERM; killing it", self.kind.name());
        let _ = child.kill();
        let _ = child.wait();
    }
}

// ---------------------------------------------------------------- start to first write

/// One fresh start timed to its first accepted write.
#[derive(Debug, Clone, Copy)]
struct StartupRun {
    /// From spawning the process to the reply of the first accepted put.
    elapsed: Duration,
    /// Connection attempts that failed (nothing listening yet); not failures.
    refused: u64,
    /// Puts with no answer within `STARTUP_ATTEMPT` (etcd accepts
    /// connections before it serves them).
    timed_out: u64,
    /// Puts answered with an error.
    rejected: u64,
}

/// The start-to-first-write runs of one server.
#[derive(Debug, Clone, Default)]
struct Startup {
    runs: Vec<StartupRun>,
    failure: Option<String>,
}

impl Startup {
    fn sorted_ms(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.runs.iter().map(|r| ms(r.elapsed)).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    fn median_ms(&self) -> Option<f64> {
        let v = self.sorted_ms();
        let n = v.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(v[n / 2]),
            _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
        }
    }

    fn total(&self, f: impl Fn(&StartupRun) -> u64) -> u64 {
        self.runs.iter().map(f).sum()
    }
}

impl ServerProc {
    /// A put every `STARTUP_POLL` (a new connection while none answers)
    /// until one is accepted: the time from spawning the process.
    async fn first_write(&mut self) -> Res<StartupRun> {
        let endpoint = Endpoint::from_shared(self.endpoint())?
            .connect_timeout(STARTUP_ATTEMPT)
            .tcp_nodelay(true);
        let mut run = StartupRun {
            elapsed: Duration::ZERO,
            refused: 0,
            timed_out: 0,
            rejected: 0,
        };
        let mut kv: Option<KvClient<Channel>> = None;
        let mut last_error = String::new();
        loop {
            let attempt = Instant::now();
            self.check_running()?;
            if attempt.duration_since(self.spawned) > STARTUP_CAP {
                return Err(format!(
                    "{}: no write accepted {} s after the start (last error: {last_error}); log:\n{}",
                    self.kind.name(),
                    STARTUP_CAP.as_secs(),
                    self.log_tail()
                )
                .into());
            }
            let client = match kv.as_mut() {
                Some(c) => Some(c),
                None => match endpoint.connect().await {
                    Ok(ch) => Some(kv.insert(KvClient::new(ch))),
                    Err(e) => {
                        run.refused += 1;
                        last_error = format!("connect: {e}");
                        None
                    }
                },
            };
            if let Some(client) = client {
                let req = PutRequest {
                    key: Bytes::from_static(b"first-write"),
                    value: Bytes::from_static(b"x"),
                    ..Default::default()
                };
                match tokio::time::timeout(STARTUP_ATTEMPT, client.put(req)).await {
                    Ok(Ok(_)) => {
                        run.elapsed = self.spawned.elapsed();
                        return Ok(run);
                    }
                    Ok(Err(status)) => {
                        run.rejected += 1;
                        last_error = format!("put: {status}");
                        kv = None;
                    }
                    Err(_) => {
                        run.timed_out += 1;
                        last_error = "put: no answer".into();
                        kv = None;
                    }
                }
            }
            tokio::time::sleep_until((attempt + STARTUP_POLL).into()).await;
        }
    }
}

/// One fresh start timed to its first accepted write, then stopped; with
/// new ports if one was taken (up to `BIND_RETRIES` times).
async fn startup_once(kind: Kind, bin: &str) -> Res<StartupRun> {
    let mut retries = 0;
    loop {
        let mut server = ServerProc::start(kind, bin)?;
        let run = server.first_write().await;
        server.stop();
        match run {
            Err(_) if retries < BIND_RETRIES && server.port_taken() => {
                eprintln!(
                    "[{}] a port was taken before the server bound it; starting again",
                    kind.name()
                );
                retries += 1;
            }
            run => return run,
        }
    }
}

/// `runs` fresh starts of each server, alternating between the servers,
/// each timed to its first accepted write, then stopped.
async fn measure_startups(servers: &[(Kind, String)], runs: usize) -> Vec<Startup> {
    let mut out = vec![Startup::default(); servers.len()];
    if runs == 0 {
        return out;
    }
    // Run each binary once (`--version`) so that no start reads it from disk.
    for (_, bin) in servers {
        binary_version(bin);
    }
    for i in 0..runs {
        for ((kind, bin), st) in servers.iter().zip(out.iter_mut()) {
            if st.failure.is_some() {
                continue;
            }
            match startup_once(*kind, bin).await {
                Ok(r) => {
                    eprintln!(
                        "[{}] start to first write, run {}/{runs}: {:.1} ms ({} refused connects, {} timed-out puts, {} rejected puts)",
                        kind.name(),
                        i + 1,
                        ms(r.elapsed),
                        r.refused,
                        r.timed_out,
                        r.rejected
                    );
                    st.runs.push(r);
                }
                Err(e) => {
                    eprintln!("[{}] start to first write failed: {e}", kind.name());
                    st.failure = Some(e.to_string());
                }
            }
        }
    }
    out
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn connect_options() -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(30))
}

/// (bytes allocated on disk as `du` counts them, apparent bytes) under `dir`.
fn dir_size(dir: &Path) -> (u64, u64) {
    let mut disk = 0;
    let mut apparent = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                disk += m.blocks() * 512;
                apparent += m.len();
            }
        }
    }
    (disk, apparent)
}

// ---------------------------------------------------------------- load

/// One measured step.
#[derive(Debug, Clone)]
struct StepResult {
    /// Stable step name, to match a step across servers.
    id: &'static str,
    label: String,
    clients: usize,
    conns: usize,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
    note: String,
}

impl StepResult {
    fn ops_per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// When a step ends: after `duration`, or once `total` requests were sent.
#[derive(Debug, Clone, Copy)]
struct Limit {
    duration: Duration,
    total: Option<u64>,
}

impl Limit {
    fn time(duration: Duration) -> Self {
        Limit {
            duration,
            total: None,
        }
    }
}

/// What a step sends: the workload, the keys (`key_space` 8-digit keys
/// from `00000000`) and the value size; random keys unless `sequential`.
#[derive(Debug, Clone, Copy)]
struct Load {
    workload: Workload,
    key_space: u64,
    val_size: usize,
    sequential: bool,
}

impl Load {
    fn new(workload: Workload, key_space: usize, sequential: bool) -> Load {
        Load {
            workload,
            key_space: key_space as u64,
            val_size: VALUE_SIZE,
            sequential,
        }
    }
}

/// Run `clients` closed-loop clients over `min(clients, 8)` connections with
/// the load generator of `raftcd bench` (`raftcd::bench::run`).
async fn run_step(
    id: &'static str,
    label: &str,
    endpoint: &str,
    clients: usize,
    load: Load,
    limit: Limit,
) -> Res<StepResult> {
    let conns = clients.clamp(1, MAX_CONNS);
    let spec = Spec {
        workload: load.workload,
        endpoints: vec![endpoint.to_string()],
        tls: None,
        conns,
        clients,
        total: limit.total,
        duration: Some(limit.duration),
        key_size: KEY_SIZE,
        val_size: load.val_size,
        key_space: load.key_space,
        sequential_keys: load.sequential,
        progress: false,
    };
    let r = bench::run(&spec).await?;
    let ms = |v: f64| Duration::from_secs_f64(v / 1e3);
    Ok(StepResult {
        id,
        label: label.to_string(),
        clients,
        conns,
        ok: r.count,
        errors: r.errors,
        first_error: r.error_counts.first().map(|e| e.error.clone()),
        elapsed: Duration::from_secs_f64(r.elapsed_secs),
        p50: ms(r.latency_ms.p50),
        p99: ms(r.latency_ms.p99),
        max: ms(r.latency_ms.max),
        note: r
            .txn
            .map(|t| format!("cas ok {} / compare failed {}", t.succeeded, t.failed))
            .unwrap_or_default(),
    })
}

/// Compact at the current revision (waiting for it to be physical), then
/// defragment, as between the reference's phases.
async fn compact_defrag(kind: Kind, c: &Client) -> Res<()> {
    let mut c = c.clone();
    let t0 = Instant::now();
    let rev = c
        .status()
        .await?
        .header()
        .map(|h| h.revision())
        .unwrap_or(0);
    c.compact(rev, Some(CompactionOptions::new().with_physical()))
        .await?;
    c.defragment().await?;
    let db = c.status().await?.db_size();
    eprintln!(
        "[{}] compact+defrag at rev {rev}: {:.0} ms, db size {}",
        kind.name(),
        t0.elapsed().as_secs_f64() * 1e3,
        human_bytes(db.max(0) as u64)
    );
    Ok(())
}

// ---------------------------------------------------------------- one server

struct ServerReport {
    kind: Kind,
    version: String,
    steps: Vec<StepResult>,
    peak_rss: Option<u64>,
    /// Peak RSS before the history step (the standard load only).
    peak_rss_standard: Option<u64>,
    disk: Option<(u64, u64)>,
    failure: Option<String>,
    /// Start to first accepted write, timed before the load.
    startup: Startup,
}

fn log_step(kind: Kind, r: &StepResult) {
    eprintln!(
        "[{}] {:<28} clients={:<3} {:>9.0} ops/s  p50 {:>7.3} ms  p99 {:>7.3} ms  max {:>8.3} ms  errors {}{}{}",
        kind.name(),
        r.label,
        r.clients,
        r.ops_per_sec(),
        ms(r.p50),
        ms(r.p99),
        ms(r.max),
        r.errors,
        if r.note.is_empty() { "" } else { "  " },
        r.note
    );
    if let Some(e) = &r.first_error {
        eprintln!("[{}]   first error: {e}", kind.name());
    }
}

async fn bench_server(kind: Kind, bin: &str, o: &Opts, startup: Startup) -> ServerReport {
    let mut report = ServerReport {
        kind,
        version: binary_version(bin),
        steps: Vec::new(),
        peak_rss: None,
        peak_rss_standard: None,
        disk: None,
        failure: None,
        startup,
    };
    eprintln!("[{}] starting {bin} ({})", kind.name(), report.version);
    let mut server = match ServerProc::start_ready(kind, bin).await {
        Ok(s) => s,
        Err(e) => {
            report.failure = Some(e.to_string());
            return report;
        }
    };
    let phases = run_phases(
        &mut server,
        o,
        &mut report.steps,
        &mut report.peak_rss_standard,
    );
    if let Err(e) = phases.await {
        eprintln!("[{}] benchmark stopped: {e}", kind.name());
        report.failure = Some(e.to_string());
    }
    report.peak_rss = server.peak_rss();
    server.stop();
    // What the server itself complained about (slow storage steps and the
    // like), so stalls in the latency columns can be traced to a cause.
    if let Ok(log) = std::fs::read_to_string(&server.log) {
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("\"level\":\"warn\""))
            .collect();
        eprintln!(
            "[{}] {} warning lines in the server log",
            server.kind.name(),
            warnings.len()
        );
        for line in warnings.iter().take(20) {
            eprintln!("[{}]   {line}", server.kind.name());
        }
    }
    report.disk = Some(dir_size(&server.data_dir));
    report
}

async fn run_phases(
    server: &mut ServerProc,
    o: &Opts,
    steps: &mut Vec<StepResult>,
    standard_rss: &mut Option<u64>,
) -> Res<()> {
    let kind = server.kind;
    let conns = server.connect(1).await?;
    let ep = server.endpoint();
    let per_step = Limit::time(o.duration);
    let mut record = |r: StepResult| {
        log_step(kind, &r);
        steps.push(r);
    };

    if let Some(puts) = o.space {
        // The storage issue's workload: puts of 1 KiB values round-robin
        // onto 100 keys, then compaction and defragmentation; the data dir
        // is measured once the server stops.
        let load = Load {
            val_size: SPACE_VALUE_SIZE,
            ..Load::new(Workload::Put, HISTORY_KEYS, true)
        };
        let label =
            format!("space fill ({puts} puts of {SPACE_VALUE_SIZE} B on {HISTORY_KEYS} keys)");
        let limit = Limit {
            duration: SPACE_FILL_CAP,
            total: Some(puts),
        };
        record(run_step("space fill", &label, &ep, FILL_CLIENTS, load, limit).await?);
        compact_defrag(kind, &conns[0]).await?;
        return Ok(());
    }

    // Fill every key once (the reference's `prepare`).
    let label = format!("fill ({KEY_SPACE} keys)");
    let limit = Limit {
        duration: Duration::from_secs(3600),
        total: Some(KEY_SPACE as u64),
    };
    let fill = Load::new(Workload::Put, KEY_SPACE, true);
    record(run_step("fill", &label, &ep, FILL_CLIENTS, fill, limit).await?);

    for (serializable, name) in [(false, "get (linearizable)"), (true, "get (serializable)")] {
        let get = Load::new(Workload::Range { serializable }, KEY_SPACE, false);
        for &n in &o.clients {
            record(run_step(name, name, &ep, n, get, per_step).await?);
        }
    }
    compact_defrag(kind, &conns[0]).await?;

    let put = Load::new(Workload::Put, KEY_SPACE, false);
    for &n in &o.clients {
        record(run_step("put", "put", &ep, n, put, per_step).await?);
    }
    compact_defrag(kind, &conns[0]).await?;

    // Every client on the whole key space (each step first reads every
    // key's mod revision): few compares fail.
    let cas = Load::new(Workload::TxnCas { contended: true }, KEY_SPACE, false);
    for &n in &o.clients {
        let label = "txn compare-and-swap";
        record(run_step("cas", label, &ep, n, cas, per_step).await?);
    }
    // The same with 100 keys shared by all clients: most compares fail.
    let shared = Load::new(Workload::TxnCas { contended: true }, SHARED_KEYS, false);
    for &n in o.clients.iter().filter(|&&n| n > 1) {
        let label = format!("txn compare-and-swap, {SHARED_KEYS} shared keys");
        record(run_step("cas shared", &label, &ep, n, shared, per_step).await?);
    }
    compact_defrag(kind, &conns[0]).await?;
    *standard_rss = server.peak_rss();

    if !o.history {
        return Ok(());
    }
    // Pile revisions on a few keys (no compaction), then read them.
    let label = format!("history fill ({} revs)", o.history_revs);
    let limit = Limit {
        duration: HISTORY_FILL_CAP,
        total: Some(o.history_revs),
    };
    let hist = Load::new(Workload::Put, HISTORY_KEYS, true);
    let r = run_step("history fill", &label, &ep, FILL_CLIENTS, hist, limit).await?;
    let written = r.ok;
    record(r);
    if written < o.history_revs {
        eprintln!(
            "[{}] history fill wrote {written} of {} revisions within {} s",
            kind.name(),
            o.history_revs,
            HISTORY_FILL_CAP.as_secs()
        );
    }
    let label = format!("get under history ({written} revs)");
    let hist_get = Load::new(
        Workload::Range {
            serializable: false,
        },
        HISTORY_KEYS,
        false,
    );
    for &n in &o.clients {
        record(run_step("history get", &label, &ep, n, hist_get, per_step).await?);
    }
    Ok(())
}

// ---------------------------------------------------------------- output

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn human_bytes(b: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if b as f64 >= 1024.0 * MIB {
        format!("{:.2} GiB", b as f64 / (1024.0 * MIB))
    } else {
        format!("{:.1} MiB", b as f64 / MIB)
    }
}

fn server_table(r: &ServerReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "### {} ({})\n", r.kind.name(), r.version);
    if let Some(f) = &r.failure {
        let _ = writeln!(s, "**Run failed:** {}\n", f.lines().next().unwrap_or(""));
    }
    let _ = writeln!(
        s,
        "| step | clients | conns | ops/s | p50 ms | p99 ms | max ms | ops | errors | note |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for st in &r.steps {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {} | {} | {} |",
            st.label,
            st.clients,
            st.conns,
            st.ops_per_sec(),
            ms(st.p50),
            ms(st.p99),
            ms(st.max),
            st.ok,
            st.errors,
            st.note
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "- peak RSS (VmHWM): {}{}",
        r.peak_rss
            .map(human_bytes)
            .unwrap_or_else(|| "unknown".into()),
        match (
            r.peak_rss_standard,
            r.steps.iter().any(|st| st.id == "history fill")
        ) {
            (Some(b), true) => format!(" ({} before the history step)", human_bytes(b)),
            _ => String::new(),
        }
    );
    match r.disk {
        Some((disk, apparent)) => {
            let _ = writeln!(
                s,
                "- data dir after the run: {} on disk ({} apparent)",
                human_bytes(disk),
                human_bytes(apparent)
            );
        }
        None => {
            let _ = writeln!(s, "- data dir after the run: unknown");
        }
    }
    let st = &r.startup;
    if let Some(median) = st.median_ms() {
        let v = st.sorted_ms();
        let _ = writeln!(
            s,
            "- start to first accepted write (1 member, fresh data dir, {} starts): median {median:.1} ms, \
             min {:.1}, max {:.1} ({} refused connects, {} timed-out puts, {} rejected puts)",
            v.len(),
            v[0],
            v[v.len() - 1],
            st.total(|r| r.refused),
            st.total(|r| r.timed_out),
            st.total(|r| r.rejected)
        );
    }
    if let Some(f) = &st.failure {
        let _ = writeln!(
            s,
            "- start to first accepted write **failed**: {}",
            f.lines().next().unwrap_or("")
        );
    }
    s
}

fn fmt_ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "—".into()
    }
}

fn summary_table(raftcd: Option<&ServerReport>, etcd: Option<&ServerReport>) -> String {
    let not = "not measured";
    let mut s = String::new();
    let _ = writeln!(s, "### raftcd vs etcd\n");
    let _ = writeln!(
        s,
        "| step | clients | raftcd ops/s | etcd ops/s | raftcd / etcd | raftcd p50 / p99 ms | etcd p50 / p99 ms |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
    // Rows in the order of whichever server ran.
    let order: Vec<&StepResult> = raftcd
        .or(etcd)
        .map(|r| r.steps.iter().collect())
        .unwrap_or_default();
    let find = |r: Option<&ServerReport>, st: &StepResult| {
        r.and_then(|r| {
            r.steps
                .iter()
                .find(|x| x.id == st.id && x.clients == st.clients)
                .cloned()
        })
    };
    for st in order {
        let a = find(raftcd, st);
        let b = find(etcd, st);
        let ops = |x: &Option<StepResult>| {
            x.as_ref()
                .map(|x| format!("{:.0}", x.ops_per_sec()))
                .unwrap_or_else(|| not.into())
        };
        let lat = |x: &Option<StepResult>| {
            x.as_ref()
                .map(|x| format!("{:.3} / {:.3}", ms(x.p50), ms(x.p99)))
                .unwrap_or_else(|| not.into())
        };
        let ratio = match (&a, &b) {
            (Some(a), Some(b)) => fmt_ratio(a.ops_per_sec(), b.ops_per_sec()),
            _ => "—".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            st.label,
            st.clients,
            ops(&a),
            ops(&b),
            ratio,
            lat(&a),
            lat(&b)
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "| measure | raftcd | etcd | raftcd / etcd |");
    let _ = writeln!(s, "|---|---:|---:|---:|");
    let rss = |r: Option<&ServerReport>| r.and_then(|r| r.peak_rss);
    let rss_standard = |r: Option<&ServerReport>| r.and_then(|r| r.peak_rss_standard);
    let disk = |r: Option<&ServerReport>| r.and_then(|r| r.disk).map(|d| d.0);
    let history = [raftcd, etcd]
        .into_iter()
        .flatten()
        .any(|r| r.steps.iter().any(|st| st.id == "history fill"));
    let mut rows = vec![("peak RSS (VmHWM)", rss(raftcd), rss(etcd))];
    if history {
        rows.push((
            "peak RSS before the history step",
            rss_standard(raftcd),
            rss_standard(etcd),
        ));
    }
    rows.push(("data dir on disk after the run", disk(raftcd), disk(etcd)));
    for (name, a, b) in rows {
        let show = |x: Option<u64>| x.map(human_bytes).unwrap_or_else(|| not.into());
        let ratio = match (a, b) {
            (Some(a), Some(b)) => fmt_ratio(a as f64, b as f64),
            _ => "—".into(),
        };
        let _ = writeln!(s, "| {name} | {} | {} | {ratio} |", show(a), show(b));
    }
    let first = |r: Option<&ServerReport>| r.and_then(|r| r.startup.median_ms());
    let starts = [raftcd, etcd]
        .into_iter()
        .flatten()
        .map(|r| r.startup.runs.len())
        .max()
        .unwrap_or(0);
    if starts > 0 {
        let (a, b) = (first(raftcd), first(etcd));
        let show = |x: Option<f64>| {
            x.map(|v| format!("{v:.1} ms"))
                .unwrap_or_else(|| not.into())
        };
        let ratio = match (a, b) {
            (Some(a), Some(b)) => fmt_ratio(a, b),
            _ => "—".into(),
        };
        let _ = writeln!(
            s,
            "| start to first accepted write (median of {starts}) | {} | {} | {ratio} |",
            show(a),
            show(b)
        );
    }
    s
}

fn step_json(st: &StepResult) -> serde_json::Value {
    json!({
        "id": st.id,
        "label": st.label,
        "clients": st.clients,
        "conns": st.conns,
        "ops_per_sec": st.ops_per_sec(),
        "ok": st.ok,
        "errors": st.errors,
        "first_error": st.first_error,
        "p50_ms": ms(st.p50),
        "p99_ms": ms(st.p99),
        "max_ms": ms(st.max),
        "note": st.note,
    })
}

fn report_json(r: &ServerReport) -> serde_json::Value {
    let st = &r.startup;
    json!({
        "version": r.version,
        "failure": r.failure,
        "steps": r.steps.iter().map(step_json).collect::<Vec<_>>(),
        "peak_rss_bytes": r.peak_rss,
        "peak_rss_standard_bytes": r.peak_rss_standard,
        "disk_bytes": r.disk.map(|d| d.0),
        "disk_apparent_bytes": r.disk.map(|d| d.1),
        "startup": {
            "runs_ms": st.runs.iter().map(|x| ms(x.elapsed)).collect::<Vec<_>>(),
            "median_ms": st.median_ms(),
            "refused": st.total(|x| x.refused),
            "timed_out": st.total(|x| x.timed_out),
            "rejected": st.total(|x| x.rejected),
            "failure": st.failure,
        },
    })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

fn cpu_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0)
}

// ---------------------------------------------------------------- main

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("compare: not a test; run it with `cargo bench --bench compare` (see docs/benchmarks.md)");
        return std::process::ExitCode::SUCCESS;
    }
    let opts = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("compare: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("compare: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    rt.block_on(run(opts))
}

async fn run(o: Opts) -> std::process::ExitCode {
    // `$BENCH_RAFTCD_BIN` measures another raftcd build (say, the commit
    // before a change) with the same workload; the default is this build's.
    let raftcd_bin = std::env::var("BENCH_RAFTCD_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_raftcd").to_string());
    let raftcd_bin = raftcd_bin.as_str();
    let load_before = load_average();
    let started = Instant::now();
    if cfg!(debug_assertions) {
        eprintln!("compare: WARNING: debug build (cargo test); numbers are not meaningful, use `cargo bench`");
    }

    let want = |k: Kind| o.only.is_none_or(|only| only == k);
    let mut etcd_missing = false;
    let mut servers: Vec<(Kind, String)> = Vec::new();
    if want(Kind::Raftcd) {
        servers.push((Kind::Raftcd, raftcd_bin.to_string()));
    }
    if want(Kind::Etcd) {
        match etcd_bin() {
            Some(bin) => servers.push((Kind::Etcd, bin)),
            None => {
                etcd_missing = true;
                eprintln!(
                    "compare: etcd not found ($BENCH_ETCD_BIN, {ETCD_BIN} or on PATH): etcd is NOT MEASURED. \
                     Install it with `apt-get install etcd-server` (Debian's etcd 3.4)."
                );
            }
        }
    }
    // Start to first write first, on its own fresh data dirs, so the load
    // steps below run as before. The space step alone skips it.
    let startup_runs = if o.space.is_some() { 0 } else { o.startup_runs };
    let startups = measure_startups(&servers, startup_runs).await;
    let mut raftcd = None;
    let mut etcd = None;
    for ((kind, bin), startup) in servers.iter().zip(startups) {
        let report = bench_server(*kind, bin, &o, startup).await;
        match kind {
            Kind::Raftcd => raftcd = Some(report),
            Kind::Etcd => etcd = Some(report),
        }
    }

    let mut out = String::new();
    let _ = writeln!(out, "\n## raftcd vs etcd benchmark\n");
    let command = format!(
        "cargo bench --bench compare -- {}",
        std::env::args()
            .skip(1)
            .filter(|a| a != "--bench")
            .collect::<Vec<_>>()
            .join(" ")
    );
    let _ = writeln!(out, "- command: `{}`", command.trim_end());
    let _ = writeln!(out, "- raftcd binary: `{raftcd_bin}`");
    let load_after = load_average();
    let total_secs = started.elapsed().as_secs();
    let _ = writeln!(
        out,
        "- machine: {} CPUs, load average {} before / {} after; {} s total",
        cpu_count(),
        load_before,
        load_after,
        total_secs
    );
    let _ = writeln!(
        out,
        "- workload: `raftcd bench`'s closed-loop clients over at most {MAX_CONNS} gRPC connections, {KEY_SIZE}-byte keys, \
         {VALUE_SIZE}-byte values, {KEY_SPACE}-key space, {:.1} s per step, compact+defrag between phases",
        o.duration.as_secs_f64()
    );
    if let Some(puts) = o.space {
        let _ = writeln!(
            out,
            "- space step only: {puts} puts of {SPACE_VALUE_SIZE}-byte values on {HISTORY_KEYS} keys (64 clients, at most {} s), then compaction at the last revision and defragmentation; the data dir is measured after the server stops",
            SPACE_FILL_CAP.as_secs()
        );
    } else if o.history {
        let _ = writeln!(
            out,
            "- history step: {} puts on {HISTORY_KEYS} keys (64 clients, at most {} s), then linearizable gets on those keys",
            o.history_revs,
            HISTORY_FILL_CAP.as_secs()
        );
    }
    if startup_runs > 0 {
        let _ = writeln!(
            out,
            "- start to first accepted write: before the load, {startup_runs} fresh starts of each server (1 member, \
             empty data dir, alternating), each timed from spawning the process to the reply of the first \
             accepted put (one put every {} ms, {} ms per attempt; refused connects do not count as failures), \
             then stopped",
            STARTUP_POLL.as_millis(),
            STARTUP_ATTEMPT.as_millis()
        );
    }
    if etcd_missing {
        let _ = writeln!(out, "- etcd: not measured (no etcd binary found)");
    }
    if cfg!(debug_assertions) {
        let _ = writeln!(out, "- **debug build: not meaningful numbers**");
    }
    let _ = writeln!(out);
    for r in [raftcd.as_ref(), etcd.as_ref()].into_iter().flatten() {
        let _ = writeln!(out, "{}", server_table(r));
    }
    let _ = writeln!(out, "{}", summary_table(raftcd.as_ref(), etcd.as_ref()));
    println!("{out}");

    if let Some(path) = &o.json {
        let doc = json!({
            "command": command.trim_end(),
            "raftcd_bin": raftcd_bin,
            "cpus": cpu_count(),
            "load_before": load_before,
            "load_after": load_after,
            "total_secs": total_secs,
            "duration_secs": o.duration.as_secs_f64(),
            "clients": o.clients,
            "history_revs": o.history.then_some(o.history_revs),
            "startup_runs": startup_runs,
            "debug_build": cfg!(debug_assertions),
            "raftcd": raftcd.as_ref().map(report_json),
            "etcd": etcd.as_ref().map(report_json),
            "markdown": out,
        });
        let text = match serde_json::to_string_pretty(&doc) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("compare: cannot encode the JSON results: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("compare: cannot write {}: {e}", path.display());
            return std::process::ExitCode::FAILURE;
        }
    }

    if raftcd.is_none() && etcd.is_none() {
        eprintln!("compare: no server was measured");
        return std::process::ExitCode::FAILURE;
    }
    let failed = [raftcd.as_ref(), etcd.as_ref()]
        .into_iter()
        .flatten()
        .any(|r| r.failure.is_some() || r.startup.failure.is_some());
    if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
