//! Fault schedules: what proptest generates, how one runs, and its text form
//! (printed on failure, replayed with `RAFTCD_LIN_REPLAY`).

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use raftcd::linearizability::{self, CheckError, Checked, Recorder};

use crate::cluster::Cluster;
use crate::workload::{self, Rng};

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Kill the leader (drop its runtime and storage handles).
    KillLeader,
    /// Kill a follower.
    KillFollower,
    /// Start every killed member again.
    Restart,
    /// Freeze the leader for this many milliseconds.
    PauseLeader(u64),
    /// Freeze a follower for this many milliseconds.
    PauseFollower(u64),
    /// Cut the leader off from the others.
    IsolateLeader,
    /// Cut one follower off from the others.
    IsolateFollower,
    /// Cut a random minority off from the others.
    PartitionMinority,
    /// Slow every message to and from a follower (until healed).
    SlowFollower,
    /// End every partition and slow link.
    Heal,
    /// `member remove` a follower, `member add` a new one in its place.
    ReplaceFollower,
}

/// A fault, this long after the previous step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub after_ms: u64,
    pub fault: Fault,
}

/// A cluster size, a seed for the clients' and the faults' choices, steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub members: usize,
    /// Replicas of a replica table that grows itself (else a static
    /// cluster started with `--initial-cluster`).
    pub grown: bool,
    pub seed: u64,
    pub steps: Vec<Step>,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::KillLeader => write!(f, "kill-leader"),
            Fault::KillFollower => write!(f, "kill-follower"),
            Fault::Restart => write!(f, "restart"),
            Fault::PauseLeader(ms) => write!(f, "pause-leader-{ms}"),
            Fault::PauseFollower(ms) => write!(f, "pause-follower-{ms}"),
            Fault::IsolateLeader => write!(f, "isolate-leader"),
            Fault::IsolateFollower => write!(f, "isolate-follower"),
            Fault::PartitionMinority => write!(f, "partition-minority"),
            Fault::Heal => write!(f, "heal"),
            Fault::SlowFollower => write!(f, "slow-follower"),
            Fault::ReplaceFollower => write!(f, "replace-follower"),
        }
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let ms = |rest: &str| rest.parse::<u64>().map_err(|e| format!("{s}: {e}"));
        Ok(match s {
            "kill-leader" => Fault::KillLeader,
            "kill-follower" => Fault::KillFollower,
            "restart" => Fault::Restart,
            "isolate-leader" => Fault::IsolateLeader,
            "isolate-follower" => Fault::IsolateFollower,
            "partition-minority" => Fault::PartitionMinority,
            "heal" => Fault::Heal,
            "slow-follower" => Fault::SlowFollower,
            "replace-follower" => Fault::ReplaceFollower,
            _ => {
                if let Some(rest) = s.strip_prefix("pause-leader-") {
                    Fault::PauseLeader(ms(rest)?)
                } else if let Some(rest) = s.strip_prefix("pause-follower-") {
                    Fault::PauseFollower(ms(rest)?)
                } else {
                    return Err(format!("unknown fault {s:?}"));
                }
            }
        })
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|s| format!("{}:{}", s.after_ms, s.fault))
            .collect();
        write!(
            f,
            "members={}{} seed={} steps={}",
            self.members,
            if self.grown { " grown" } else { "" },
            self.seed,
            steps.join(",")
        )
    }
}

impl FromStr for Schedule {
    type Err = String;

    /// `members=3 seed=7 steps=600:kill-leader,400:heal` (steps may be
    /// empty; `members=4 grown ...` for a self-growing cluster).
    fn from_str(s: &str) -> Result<Self, String> {
        let mut schedule = Schedule {
            members: 3,
            grown: false,
            seed: 0,
            steps: Vec::new(),
        };
        for part in s.split_whitespace() {
            if part == "grown" {
                schedule.grown = true;
                continue;
            }
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected key=value"))?;
            match k {
                "members" => schedule.members = v.parse().map_err(|e| format!("members: {e}"))?,
                "seed" => schedule.seed = v.parse().map_err(|e| format!("seed: {e}"))?,
                "steps" => {
                    for step in v.split(',').filter(|s| !s.is_empty()) {
                        let (ms, fault) = step
                            .split_once(':')
                            .ok_or_else(|| format!("{step:?}: expected MS:FAULT"))?;
                        schedule.steps.push(Step {
                            after_ms: ms.parse().map_err(|e| format!("{step}: {e}"))?,
                            fault: fault.parse()?,
                        });
                    }
                }
                _ => return Err(format!("unknown field {k:?}")),
            }
        }
        Ok(schedule)
    }
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        Just(Fault::KillLeader),
        Just(Fault::KillFollower),
        Just(Fault::Restart),
        (200u64..1500).prop_map(Fault::PauseLeader),
        (200u64..1500).prop_map(Fault::PauseFollower),
        Just(Fault::IsolateLeader),
        Just(Fault::IsolateFollower),
        Just(Fault::PartitionMinority),
        Just(Fault::Heal),
        Just(Fault::SlowFollower),
        Just(Fault::ReplaceFollower),
    ]
}

/// Schedules for a cluster of `members`: up to `max_steps` faults, 150 ms
/// to 1.2 s apart.
pub fn schedules(members: usize, max_steps: usize) -> impl Strategy<Value = Schedule> {
    (
        any::<u64>(),
        proptest::collection::vec(
            (150u64..1200, fault()).prop_map(|(after_ms, fault)| Step { after_ms, fault }),
            1..=max_steps,
        ),
    )
        .prop_map(move |(seed, steps)| Schedule {
            members,
            grown: false,
            seed,
            steps,
        })
}

/// Schedules for `replicas` replicas of a self-growing cluster: the same
/// faults but the operator's replacement (the cluster replaces dead voters
/// itself: a killed voter's place goes to a live learner within
/// `dead_after`), 300 ms to 2 s apart so replacements happen in between.
pub fn grown_schedules(replicas: usize, max_steps: usize) -> impl Strategy<Value = Schedule> {
    (
        any::<u64>(),
        proptest::collection::vec(
            (300u64..2000, fault())
                .prop_filter("the cluster replaces members itself", |(_, f)| {
                    *f != Fault::ReplaceFollower
                })
                .prop_map(|(after_ms, fault)| Step { after_ms, fault }),
            1..=max_steps,
        ),
    )
        .prop_map(move |(seed, steps)| Schedule {
            members: replicas,
            grown: true,
            seed,
            steps,
        })
}

/// How one schedule runs.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// Followers answer linearizable reads without a read index (broken).
    pub stale_reads: bool,
    /// Client operations after the last fault, with everything healed and
    /// restarted.
    pub tail: Duration,
}

impl Default for Run {
    fn default() -> Self {
        Run {
            stale_reads: false,
            tail: Duration::from_millis(1000),
        }
    }
}

/// What one schedule produced.
#[derive(Debug)]
pub struct Outcome {
    pub checked: Checked,
    pub answered: u64,
    pub took: Duration,
}

/// Run `schedule` on a fresh cluster and check the history. `Err` holds the
/// checker's explanation, the faults as they happened and the replay line.
pub fn run(schedule: &Schedule, run: Run) -> Result<Outcome, String> {
    log_if_asked();
    let started = Instant::now();
    let mut cluster = if schedule.grown {
        Cluster::start_grown(schedule.members, run.stale_reads)
    } else {
        Cluster::start(schedule.members, run.stale_reads)
    };
    if cluster.wait_leader(Duration::from_secs(10)).is_none() {
        cluster.stop();
        return Err(format!("no leader elected\nreplay: {schedule}"));
    }
    let clients = schedule.members as u64 + 1;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("client runtime");
    let recorder = Arc::new(Recorder::new());
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let endpoint = cluster.members[(c as usize) % schedule.members]
                .client_url
                .clone();
            runtime.spawn(workload::run_client(
                c,
                endpoint,
                schedule.seed,
                recorder.clone(),
                stop.clone(),
            ))
        })
        .collect();

    let mut rng = Rng::new(schedule.seed ^ 0xFA17);
    let mut log = Vec::new();
    for step in &schedule.steps {
        std::thread::sleep(Duration::from_millis(step.after_ms));
        for event in cluster.poll_starts() {
            log.push(format!(
                "  {:>7.3} s  {event}",
                started.elapsed().as_secs_f64()
            ));
        }
        let what = apply(&mut cluster, step.fault, &mut rng);
        log.push(format!(
            "  {:>7.3} s  {}: {what}",
            started.elapsed().as_secs_f64(),
            step.fault
        ));
    }
    // The last fault lasts a while too.
    std::thread::sleep(Duration::from_millis(1000));
    // Heal, start every member that is down, and wait until all are up:
    // a member that cannot start on a healed network is a finding.
    cluster.heal();
    for i in 0..cluster.members.len() {
        cluster.restart(i);
    }
    for event in cluster.wait_started() {
        log.push(format!(
            "  {:>7.3} s  {event}",
            started.elapsed().as_secs_f64()
        ));
    }
    std::thread::sleep(run.tail);
    stop.store(true, Ordering::SeqCst);
    let answered: u64 = runtime
        .block_on(futures::future::join_all(handles))
        .into_iter()
        .map(|r| r.unwrap_or(0))
        .sum();
    runtime.shutdown_background();
    let hung = std::mem::take(&mut cluster.hung);
    cluster.stop();

    if !hung.is_empty() {
        let hung = hung.join("; ");
        return Err(format!(
            "a member never finished starting: {hung}\nfaults:\n{}\nreplay: RAFTCD_LIN_REPLAY='{schedule}' cargo test --release --test linearizability replay -- --ignored --nocapture",
            log.join("\n")
        ));
    }
    let history = recorder.history();
    if let Ok(path) = std::env::var("RAFTCD_LIN_DUMP") {
        let text: Vec<String> = history.operations.iter().map(|o| o.to_string()).collect();
        let _ = std::fs::write(path, text.join("\n") + "\n" + &log.join("\n"));
    }
    match linearizability::check(&history) {
        Ok(checked) => Ok(Outcome {
            checked,
            answered,
            took: started.elapsed(),
        }),
        Err(e) => {
            let what = match &e {
                CheckError::Violation(_) => "the history is not linearizable",
                CheckError::TooComplex { .. } => "the checker gave up",
            };
            Err(format!(
                "{what} ({} operations, {answered} answered)\n{e}\nfaults:\n{}\nreplay: RAFTCD_LIN_REPLAY='{schedule}' cargo test --release{} --test linearizability replay -- --ignored --nocapture",
                history.len(),
                log.join("\n"),
                if cfg!(feature = "fault-stale-reads") {
                    " --features fault-stale-reads"
                } else {
                    ""
                }
            ))
        }
    }
}

/// With `RAFTCD_LIN_LOG=FILTER` (e.g. `info` or `raftcd=debug`), the
/// members' logs go to the test's output (with `--nocapture`, to stderr).
fn log_if_asked() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("RAFTCD_LIN_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_thread_names(true)
                .with_test_writer()
                .try_init();
        }
    });
}

/// Apply one fault; says what it did.
fn apply(cluster: &mut Cluster, fault: Fault, rng: &mut Rng) -> String {
    let n = cluster.members.len();
    let leader = cluster.leader();
    let followers: Vec<usize> = (0..n)
        .filter(|&i| cluster.members[i].is_running() && Some(i) != leader)
        .collect();
    let names: Vec<String> = cluster.members.iter().map(|m| m.name.clone()).collect();
    let name = |i: usize| names[i].clone();
    // The member a one-member fault hits.
    let victim = match fault {
        Fault::KillLeader | Fault::PauseLeader(_) | Fault::IsolateLeader => leader,
        Fault::KillFollower
        | Fault::PauseFollower(_)
        | Fault::IsolateFollower
        | Fault::SlowFollower
        | Fault::ReplaceFollower => {
            (!followers.is_empty()).then(|| followers[rng.below(followers.len() as u64) as usize])
        }
        Fault::Restart | Fault::PartitionMinority | Fault::Heal => None,
    };
    match (fault, victim) {
        (Fault::Restart, _) => {
            let down: Vec<usize> = (0..n)
                .filter(|&i| !cluster.members[i].is_running())
                .collect();
            let said: Vec<String> = down.into_iter().map(|i| cluster.restart(i)).collect();
            format!("[{}]", said.join(", "))
        }
        (Fault::PartitionMinority, _) => {
            let size = 1 + rng.below(((n - 1) / 2) as u64) as usize;
            let mut all: Vec<usize> = (0..n).collect();
            let mut minority = Vec::new();
            for _ in 0..size {
                minority.push(all.remove(rng.below(all.len() as u64) as usize));
            }
            cluster.partition(&minority);
            let names: Vec<String> = minority.iter().map(|&i| name(i)).collect();
            format!("cut [{}] off", names.join(", "))
        }
        (Fault::Heal, _) => {
            cluster.heal();
            "healed".into()
        }
        (_, None) => "no such member running".into(),
        (Fault::KillLeader | Fault::KillFollower, Some(i)) => {
            cluster.kill(i);
            format!("killed {}", name(i))
        }
        (Fault::PauseLeader(ms) | Fault::PauseFollower(ms), Some(i)) => {
            cluster.pause(i, Duration::from_millis(ms));
            format!("paused {} for {ms} ms", name(i))
        }
        (Fault::IsolateLeader | Fault::IsolateFollower, Some(i)) => {
            cluster.partition(&[i]);
            format!("cut {} off", name(i))
        }
        (Fault::SlowFollower, Some(i)) => {
            cluster.slow(i);
            format!("slowed {} down", name(i))
        }
        (Fault::ReplaceFollower, Some(i)) => cluster.replace(i).unwrap_or_else(|e| e),
    }
}
