//! A linearizability checker for key-value histories, reusable by anyone who
//! tests a store with an etcd-like API (raftcd's own proof of safety uses it:
//! `tests/linearizability/`).
//!
//! Clients record what they did with a [`Recorder`]: [`Recorder::invoke`]
//! before sending a request, [`Recorder::complete`] with what came back. A
//! request that timed out or failed is completed with [`Output::Unknown`] (or
//! never completed): it may have taken effect at any moment after it was
//! sent — even long after the client gave up — or never. [`check`] then
//! decides whether one linear order of all operations, each placed between
//! its invocation and its response, explains every response under etcd's
//! semantics (put, get, delete, a compare-and-swap transaction, a count over
//! a range).
//!
//! How it decides, and why it stays fast:
//! - **P-compositionality**: a history is linearizable iff its restriction to
//!   each independent part of the key space is. Keys are grouped so that no
//!   operation spans two groups (a count over a range joins the keys in it),
//!   and each group is checked alone.
//! - **Quiescent points**: where no operation with a known response is in
//!   flight, the history splits into segments. The checker carries the set
//!   of states some valid order of everything before can leave (with which
//!   possibly-applied operations were used), so each segment is searched on
//!   its own.
//! - **The search** in a segment is Wing & Gong's, with Lowe's and
//!   Porcupine's memoisation: an operation may come next if no pending
//!   operation returned before it was invoked; a configuration (operations
//!   placed, possibly-applied operations used, state) is explored once.
//!
//! A history that fails comes back as a [`Violation`] whose `Display` shows
//! the shortest window found: the states the key could hold before it, and
//! the operations in it that no order explains (reads that are not needed
//! to show the contradiction are left out).

mod search;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys and values are bytes.
pub type Bytes = Vec<u8>;

/// What a client asked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Input {
    /// Put `value` at `key`.
    Put { key: Bytes, value: Bytes },
    /// Read `key` (linearizable).
    Get { key: Bytes },
    /// Delete `key`.
    Delete { key: Bytes },
    /// A transaction: if `key` holds `expect` (`None`: the key is absent),
    /// put `value` at it.
    Cas {
        key: Bytes,
        expect: Option<Bytes>,
        value: Bytes,
    },
    /// Count the keys in `[key, range_end)`, etcd's way: an empty
    /// `range_end` means `key` alone, `"\0"` every key from `key` on.
    Count { key: Bytes, range_end: Bytes },
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Output {
    /// A put succeeded.
    Put,
    /// A get found this value (`None`: no such key).
    Get(Option<Bytes>),
    /// A delete removed this many keys.
    Delete { deleted: u64 },
    /// Whether a compare-and-swap's compare held (and its put happened).
    Cas { succeeded: bool },
    /// A count.
    Count(u64),
    /// No answer, or an error: the operation may or may not have happened.
    Unknown,
}

/// One operation of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// Who issued it (for the explanation only).
    pub client: u64,
    pub input: Input,
    pub output: Output,
    /// When it was invoked, from the start of the history.
    pub call: Duration,
    /// When its response arrived; `None`: never.
    pub ret: Option<Duration>,
}

impl Operation {
    /// An operation invoked at `call_ms` that returned `output` at `ret_ms`
    /// (milliseconds), for hand-made histories.
    pub fn at(client: u64, input: Input, output: Output, call_ms: u64, ret_ms: u64) -> Self {
        Self {
            client,
            input,
            output,
            call: Duration::from_millis(call_ms),
            ret: Some(Duration::from_millis(ret_ms)),
        }
    }

    /// Whether the outcome is unknown (it may apply any time after `call`).
    pub fn is_unknown(&self) -> bool {
        self.output == Output::Unknown || self.ret.is_none()
    }

    /// Whether it can change the state at all.
    fn writes(&self) -> bool {
        match (&self.input, &self.output) {
            (Input::Get { .. } | Input::Count { .. }, _) => false,
            (_, Output::Unknown) => true,
            (Input::Delete { .. }, Output::Delete { deleted }) => *deleted > 0,
            (Input::Cas { .. }, Output::Cas { succeeded }) => *succeeded,
            _ => true,
        }
    }
}

/// A history: every operation, in any order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub operations: Vec<Operation>,
}

impl History {
    pub fn new(operations: Vec<Operation>) -> Self {
        Self { operations }
    }

    pub fn len(&self) -> usize {
        self.operations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }
}

/// Records a history as concurrent clients run (cheap to share: `&Recorder`
/// or `Arc<Recorder>`).
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    operations: Mutex<Vec<Operation>>,
}

/// An invoked operation waiting for its response.
#[derive(Debug)]
#[must_use = "complete the call with its output"]
pub struct Call {
    index: usize,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            operations: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Operation>> {
        self.operations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Note that `client` is about to send `input`; call right before
    /// sending.
    pub fn invoke(&self, client: u64, input: Input) -> Call {
        let mut ops = self.lock();
        ops.push(Operation {
            client,
            input,
            output: Output::Unknown,
            call: self.start.elapsed(),
            ret: None,
        });
        Call {
            index: ops.len() - 1,
        }
    }

    /// Note the response to `call`; call right after it arrived.
    pub fn complete(&self, call: Call, output: Output) {
        let now = self.start.elapsed();
        let mut ops = self.lock();
        if let Some(op) = ops.get_mut(call.index) {
            op.output = output;
            op.ret = Some(now);
        }
    }

    /// The history so far (operations still in flight count as unknown).
    pub fn history(&self) -> History {
        History::new(self.lock().clone())
    }
}

/// What a successful check looked at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked {
    /// Operations in the history.
    pub operations: usize,
    /// Operations whose outcome was unknown.
    pub unknown: usize,
    /// Independent key groups checked.
    pub partitions: usize,
    /// Configurations the search visited.
    pub configurations: u64,
}

/// Why a check did not pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// No linear order explains the history.
    #[error("{0}")]
    Violation(Box<Violation>),
    /// The search gave up (too many concurrent or unknown operations on one
    /// key group): neither verdict holds.
    #[error("linearizability check gave up after {visited} configurations on keys {keys}: the history is too concurrent to decide; use more keys or fewer clients")]
    TooComplex { visited: u64, keys: String },
}

/// A non-linearizable window of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The keys of the group that failed.
    pub keys: Vec<Bytes>,
    /// Operations on that group in the whole history.
    pub group_operations: usize,
    /// When the window starts.
    pub since: Duration,
    /// The states the group could be in when the window starts.
    pub before: Vec<BTreeMap<Bytes, Bytes>>,
    /// The operations in the window that no order explains.
    pub window: Vec<Operation>,
    /// Operations with unknown outcome invoked before the window ends (the
    /// states before it and the search in it allow for each of them).
    pub possibly_applied: Vec<Operation>,
}

/// Stands for "a value no answer showed" in the search by class (a value no
/// history is expected to hold; the checker skips that search if one does).
pub(crate) const UNREAD: &[u8] = b"\0\xffunread\xff\0";

/// The model: etcd's semantics on the keys of one group.
pub(crate) type State = BTreeMap<Bytes, Bytes>;

/// Whether `key` is in the range `[start, end)` (etcd's range rules).
fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        key == start
    } else if end == [0] {
        key >= start
    } else {
        key >= start && key < end
    }
}

/// One step of the model: the state after `input` answered `output`, or
/// `None` if no state after `state` answers that. [`Output::Unknown`] takes
/// effect without a constraint.
pub(crate) fn step(state: &State, input: &Input, output: &Output) -> Option<State> {
    match (input, output) {
        (Input::Put { key, value }, Output::Put | Output::Unknown) => {
            let mut next = state.clone();
            next.insert(key.clone(), value.clone());
            Some(next)
        }
        (Input::Get { key }, Output::Get(seen)) => {
            (state.get(key) == seen.as_ref()).then(|| state.clone())
        }
        (Input::Get { .. } | Input::Count { .. }, Output::Unknown) => Some(state.clone()),
        (Input::Delete { key }, out) => {
            let present = state.contains_key(key);
            match out {
                Output::Delete { deleted } if *deleted != u64::from(present) => None,
                Output::Delete { .. } | Output::Unknown => {
                    let mut next = state.clone();
                    next.remove(key);
                    Some(next)
                }
                _ => None,
            }
        }
        (Input::Cas { key, expect, value }, out) => {
            let holds = state.get(key) == expect.as_ref();
            match out {
                Output::Cas { succeeded } if *succeeded != holds => None,
                Output::Cas { .. } | Output::Unknown => {
                    let mut next = state.clone();
                    if holds {
                        next.insert(key.clone(), value.clone());
                    }
                    Some(next)
                }
                _ => None,
            }
        }
        (Input::Count { key, range_end }, Output::Count(n)) => {
            let count = state.keys().filter(|k| in_range(k, key, range_end)).count();
            (count as u64 == *n).then(|| state.clone())
        }
        _ => None,
    }
}

/// The most configurations one check may visit before it gives up.
pub const DEFAULT_BUDGET: u64 = 4_000_000;

/// Decide whether `history` is linearizable under etcd's key-value semantics.
pub fn check(history: &History) -> Result<Checked, CheckError> {
    check_with_budget(history, DEFAULT_BUDGET)
}

/// [`check`], giving up after `budget` configurations.
pub fn check_with_budget(history: &History, budget: u64) -> Result<Checked, CheckError> {
    let groups = partition(history);
    let mut checked = Checked {
        operations: history.len(),
        unknown: history.operations.iter().filter(|o| o.is_unknown()).count(),
        partitions: groups.len(),
        configurations: 0,
    };
    let mut left = budget;
    for (keys, ops) in groups {
        let visited = search::check_group(&keys, &ops, left)?;
        checked.configurations += visited;
        left = left.saturating_sub(visited);
    }
    Ok(checked)
}

/// The keys an operation touches, among `all` keys of the history.
fn touched<'a>(op: &'a Operation, all: &'a BTreeSet<Bytes>) -> Vec<&'a Bytes> {
    match &op.input {
        Input::Put { key, .. }
        | Input::Get { key }
        | Input::Delete { key }
        | Input::Cas { key, .. } => vec![key],
        Input::Count { key, range_end } => {
            all.iter().filter(|k| in_range(k, key, range_end)).collect()
        }
    }
}

/// Split the history into independent key groups (union-find over keys that
/// one operation touches together). A count touching no key forms a group
/// of its own.
fn partition(history: &History) -> Vec<(Vec<Bytes>, Vec<Operation>)> {
    let all: BTreeSet<Bytes> = history
        .operations
        .iter()
        .filter_map(|op| match &op.input {
            Input::Count { .. } => None,
            Input::Put { key, .. }
            | Input::Get { key }
            | Input::Delete { key }
            | Input::Cas { key, .. } => Some(key.clone()),
        })
        .collect();
    let index: BTreeMap<&Bytes, usize> = all.iter().enumerate().map(|(i, k)| (k, i)).collect();
    let mut parent: Vec<usize> = (0..all.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for op in &history.operations {
        let keys = touched(op, &all);
        if let Some(first) = keys.first() {
            let a = root(&mut parent, index[first]);
            for k in &keys[1..] {
                let b = root(&mut parent, index[k]);
                parent[b] = a;
            }
        }
    }
    let mut groups: BTreeMap<usize, (Vec<Bytes>, Vec<Operation>)> = BTreeMap::new();
    let mut lone = Vec::new();
    for (i, k) in all.iter().enumerate() {
        let r = root(&mut parent, i);
        groups.entry(r).or_default().0.push(k.clone());
    }
    for op in &history.operations {
        match touched(op, &all).first() {
            Some(k) => {
                let r = root(&mut parent, index[k]);
                groups.entry(r).or_default().1.push(op.clone());
            }
            None => lone.push((Vec::new(), vec![op.clone()])),
        }
    }
    groups.into_values().chain(lone).collect()
}

/// Bytes as a quoted string, escaped where not printable.
pub fn show(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

fn show_value(value: &[u8]) -> String {
    if value == UNREAD {
        "a value no answer showed".into()
    } else {
        show(value)
    }
}

fn show_state(keys: &[Bytes], state: &State) -> String {
    if keys.len() == 1 {
        return match state.get(&keys[0]) {
            Some(v) => show_value(v),
            None => "nothing (absent)".into(),
        };
    }
    let parts: Vec<String> = keys
        .iter()
        .map(|k| match state.get(k) {
            Some(v) => format!("{}={}", show(k), show_value(v)),
            None => format!("{} absent", show(k)),
        })
        .collect();
    format!("{{{}}}", parts.join(", "))
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.input {
            Input::Put { key, value } => format!("put {} = {}", show(key), show(value)),
            Input::Get { key } => format!("get {}", show(key)),
            Input::Delete { key } => format!("delete {}", show(key)),
            Input::Cas { key, expect, value } => match expect {
                Some(e) => format!("if {} == {} then put {}", show(key), show(e), show(value)),
                None => format!("if {} absent then put {}", show(key), show(value)),
            },
            Input::Count { key, range_end } => {
                format!("count [{}, {})", show(key), show(range_end))
            }
        };
        let got = match (&self.output, self.ret) {
            (Output::Unknown, _) | (_, None) => {
                "? (no answer: may or may not have happened)".into()
            }
            (Output::Put, _) => "ok".into(),
            (Output::Get(Some(v)), _) => show(v),
            (Output::Get(None), _) => "not found".into(),
            (Output::Delete { deleted }, _) => format!("deleted {deleted}"),
            (Output::Cas { succeeded: true }, _) => "succeeded".into(),
            (Output::Cas { succeeded: false }, _) => "failed".into(),
            (Output::Count(n), _) => format!("{n}"),
        };
        let ret = self.ret.map_or_else(|| "never".into(), secs);
        write!(
            f,
            "client {:<3} {:>9}..{:<9} s  {what}  ->  {got}",
            self.client,
            secs(self.call),
            ret
        )
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<String> = self.keys.iter().map(|k| show(k)).collect();
        writeln!(
            f,
            "not linearizable: key{} {} ({} operations on {})",
            if keys.len() == 1 { "" } else { "s" },
            keys.join(", "),
            self.group_operations,
            if keys.len() == 1 { "it" } else { "them" }
        )?;
        match self.before.as_slice() {
            [one] => writeln!(
                f,
                "at {} s, every order of the operations before leaves it holding {}",
                secs(self.since),
                show_state(&self.keys, one)
            )?,
            many => {
                let states: Vec<String> = many.iter().map(|s| show_state(&self.keys, s)).collect();
                writeln!(
                    f,
                    "at {} s, the operations before leave it holding one of: {}",
                    secs(self.since),
                    states.join(" | ")
                )?
            }
        }
        writeln!(
            f,
            "no order of these {} operations, each placed between its call and its return, explains what they returned:",
            self.window.len()
        )?;
        for op in &self.window {
            writeln!(f, "    {op}")?;
        }
        if !self.possibly_applied.is_empty() {
            writeln!(
                f,
                "taking into account these operations without an answer, which may have happened at any time after their call (or never):"
            )?;
            for op in &self.possibly_applied {
                writeln!(f, "    {op}")?;
            }
        }
        Ok(())
    }
}
