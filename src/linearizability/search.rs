//! The search for one key group: segments between quiescent points, each
//! searched Wing & Gong's way with memoisation, carrying the reachable
//! (state, possibly-applied operations used) set from one to the next.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use super::{step, Bytes, CheckError, Input, Operation, Output, State, Violation, UNREAD};

/// A fixed-size bit set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(len: usize) -> Self {
        Bits(vec![0; len.div_ceil(64)])
    }

    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    fn with(&self, i: usize) -> Self {
        let mut b = self.clone();
        b.0[i / 64] |= 1 << (i % 64);
        b
    }

    fn is_subset(&self, other: &Bits) -> bool {
        self.0.iter().zip(&other.0).all(|(a, b)| a & !b == 0)
    }
}

/// Which operations of unknown outcome a prefix applied: the exact ones by
/// index, the interchangeable ones by how many of each class.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Applied {
    exact: Bits,
    counts: Vec<u32>,
}

impl Applied {
    fn new(exact: usize, classes: usize) -> Self {
        Applied {
            exact: Bits::new(exact),
            counts: vec![0; classes],
        }
    }

    /// Applied no more than `other`, operation by operation.
    fn within(&self, other: &Applied) -> bool {
        self.exact.is_subset(&other.exact)
            && self.counts.iter().zip(&other.counts).all(|(a, b)| a <= b)
    }

    fn with_exact(&self, i: usize) -> Self {
        Applied {
            exact: self.exact.with(i),
            counts: self.counts.clone(),
        }
    }

    fn with_one_more(&self, class: usize) -> Self {
        let mut next = self.clone();
        next.counts[class] += 1;
        next
    }
}

/// Where the search stands after a prefix of the history: the state, and
/// which operations of unknown outcome it already applied.
type Reached = (State, Applied);

/// Operations of unknown outcome that no answer can tell apart: the same
/// input once each one's value is replaced by [`UNREAD`] (a value no answer
/// showed and no compare expected). Any of them that was invoked by then
/// can stand for any other, so a search only counts how many it applied:
/// the k-th may apply once k of them were invoked.
struct Class {
    input: Input,
    /// When each was invoked, earliest first.
    calls: Vec<Duration>,
}

/// The operations of unknown outcome of a group, as one search treats them.
struct Unknowns<'a> {
    /// Each placed at most once, exactly as sent.
    exact: Vec<&'a Operation>,
    /// Placed by count (see [`Class`]).
    classes: Vec<Class>,
    /// All of them, for the explanation.
    all: Vec<&'a Operation>,
}

impl Unknowns<'_> {
    fn nothing_applied(&self) -> Applied {
        Applied::new(self.exact.len(), self.classes.len())
    }
}

/// One segment's search: `ops` (known outcome, all to be placed) and the
/// group's operations of unknown outcome.
struct Segment<'a> {
    ops: &'a [&'a Operation],
    unknowns: &'a Unknowns<'a>,
}

/// The search ran out of budget.
struct Exhausted(u64);

impl Segment<'_> {
    /// Every (state, applied) an order of the segment's operations can
    /// reach from `starts`, and how many configurations that took.
    fn run(&self, starts: &[Reached], budget: u64) -> Result<(HashSet<Reached>, u64), Exhausted> {
        let n = self.ops.len();
        // Per (operations placed, state): the applied-sets explored from
        // there. One that applied a subset of another's unknown operations
        // reaches all it reaches (it may still apply the rest at once: an
        // operation that could come next stays eligible as more are placed),
        // so a configuration whose applied-set contains an explored one is
        // skipped.
        let mut visited: HashMap<(Bits, State), Vec<Applied>> = HashMap::new();
        let mut count = 0u64;
        let mut stack: Vec<(Bits, Applied, State)> = starts
            .iter()
            .map(|(s, f)| (Bits::new(n), f.clone(), s.clone()))
            .collect();
        let mut ends = HashSet::new();
        while let Some((placed, applied, state)) = stack.pop() {
            let key = (placed, state);
            let seen = visited.entry(key.clone()).or_default();
            if seen.iter().any(|a| a.within(&applied)) {
                continue;
            }
            seen.retain(|a| !applied.within(a));
            seen.push(applied.clone());
            count += 1;
            if count + stack.len() as u64 >= budget {
                return Err(Exhausted(count));
            }
            let (placed, state) = key;
            // An operation may come next only if no unplaced one returned
            // before it was invoked.
            let min_ret: Option<Duration> = (0..n)
                .filter(|&j| !placed.get(j))
                .filter_map(|j| self.ops[j].ret)
                .min();
            let Some(min_ret) = min_ret else {
                ends.insert((state, applied));
                continue;
            };
            // Pushed last, explored first: the operations with an answer,
            // so the paths that apply no unknown operation come first and
            // the others are mostly skipped as above.
            for (f, op) in self.unknowns.exact.iter().enumerate() {
                if applied.exact.get(f) || op.call > min_ret {
                    continue;
                }
                if let Some(next) = step(&state, &op.input, &Output::Unknown) {
                    stack.push((placed.clone(), applied.with_exact(f), next));
                }
            }
            for (c, class) in self.unknowns.classes.iter().enumerate() {
                let invoked = class.calls.partition_point(|call| *call <= min_ret);
                if applied.counts[c] as usize >= invoked {
                    continue;
                }
                if let Some(next) = step(&state, &class.input, &Output::Unknown) {
                    // One that changes nothing is never needed.
                    if next != state {
                        stack.push((placed.clone(), applied.with_one_more(c), next));
                    }
                }
            }
            for j in (0..n).filter(|&j| !placed.get(j)) {
                let op = self.ops[j];
                if op.call > min_ret {
                    continue;
                }
                if let Some(next) = step(&state, &op.input, &op.output) {
                    stack.push((placed.with(j), applied.clone(), next));
                }
            }
        }
        Ok((ends, count))
    }
}

/// Keep, per state, only the applied-sets no other one is within: a prefix
/// that applied fewer unknown operations can still apply the rest right
/// away, so it reaches everything the other one reaches.
fn prune(ends: HashSet<Reached>) -> Vec<Reached> {
    let mut by_state: BTreeMap<State, Vec<Applied>> = BTreeMap::new();
    for (state, applied) in ends {
        by_state.entry(state).or_default().push(applied);
    }
    let mut out = Vec::new();
    for (state, mut sets) in by_state {
        sets.sort_by_key(|a| {
            a.exact.0.iter().map(|w| w.count_ones()).sum::<u32>() + a.counts.iter().sum::<u32>()
        });
        let mut kept: Vec<Applied> = Vec::new();
        for a in sets {
            if !kept.iter().any(|k| k.within(&a)) {
                kept.push(a);
            }
        }
        out.extend(kept.into_iter().map(|a| (state.clone(), a)));
    }
    out
}

/// Check one key group; `Ok` with the configurations visited.
pub(super) fn check_group(
    keys: &[Bytes],
    ops: &[Operation],
    budget: u64,
) -> Result<u64, CheckError> {
    let mut known: Vec<&Operation> = ops.iter().filter(|o| !o.is_unknown()).collect();
    known.sort_by_key(|o| o.call);
    // A read without an answer constrains nothing; a write without one may
    // take effect at any moment after its call, or never.
    let floating: Vec<&Operation> = ops
        .iter()
        .filter(|o| o.is_unknown() && o.writes())
        .collect();
    // Values some answer showed, or some compare-and-swap expected.
    let read: HashSet<&Bytes> = ops
        .iter()
        .filter_map(|o| match (&o.input, &o.output) {
            (_, Output::Get(Some(v))) => Some(v),
            (
                Input::Cas {
                    expect: Some(v), ..
                },
                _,
            ) => Some(v),
            _ => None,
        })
        .collect();
    let is_read = |o: &&Operation| match &o.input {
        Input::Put { value, .. } | Input::Cas { value, .. } => read.contains(value),
        _ => false,
    };
    let (seen, unseen): (Vec<&Operation>, Vec<&Operation>) =
        floating.iter().copied().partition(is_read);
    let search = |exact: Vec<&'_ Operation>, classes: Vec<Class>, budget| {
        let unknowns = Unknowns {
            exact,
            classes,
            all: floating.clone(),
        };
        search_segments(keys, ops.len(), &known, &unknowns, budget)
    };
    if unseen.is_empty() {
        return search(floating.clone(), Vec::new(), budget);
    }
    // First assume every unknown write whose value nobody read never
    // happened. That allows fewer orders: if it passes, the history
    // passes. Most do, and that search is the smallest.
    if let Ok(visited) = search(seen.clone(), Vec::new(), budget / 4) {
        return Ok(visited);
    }
    // Then the exact search: those writes by class (see [`Class`]).
    let taken = ops.iter().any(|o| match &o.input {
        Input::Put { value, .. } | Input::Cas { value, .. } => value.as_slice() == UNREAD,
        _ => false,
    });
    if taken {
        return search(floating.clone(), Vec::new(), budget);
    }
    let mut classes: Vec<Class> = Vec::new();
    for o in &unseen {
        let input = match &o.input {
            Input::Put { key, .. } => Input::Put {
                key: key.clone(),
                value: UNREAD.to_vec(),
            },
            Input::Cas { key, expect, .. } => Input::Cas {
                key: key.clone(),
                expect: expect.clone(),
                value: UNREAD.to_vec(),
            },
            other => other.clone(),
        };
        match classes.iter_mut().find(|c| c.input == input) {
            Some(c) => c.calls.push(o.call),
            None => classes.push(Class {
                input,
                calls: vec![o.call],
            }),
        }
    }
    for c in &mut classes {
        c.calls.sort();
    }
    search(seen, classes, budget)
}

/// Search the segments of `known` in turn, with `unknowns`.
fn search_segments(
    keys: &[Bytes],
    group_operations: usize,
    known: &[&Operation],
    unknowns: &Unknowns<'_>,
    budget: u64,
) -> Result<u64, CheckError> {
    // Quiescent points: an operation invoked after every earlier one returned.
    let mut segments = Vec::new();
    let mut start = 0;
    let mut latest: Option<Duration> = None;
    for (i, op) in known.iter().enumerate() {
        if latest.is_some_and(|l| op.call > l) {
            segments.push(start..i);
            start = i;
        }
        latest = latest.max(op.ret);
    }
    if start < known.len() {
        segments.push(start..known.len());
    }

    let too_complex = |visited: u64| CheckError::TooComplex {
        visited,
        keys: keys
            .iter()
            .map(|k| super::show(k))
            .collect::<Vec<_>>()
            .join(", "),
    };
    let mut reached: Vec<Reached> = vec![(State::new(), unknowns.nothing_applied())];
    let mut visited = 0u64;
    for range in segments {
        let segment = Segment {
            ops: &known[range.clone()],
            unknowns,
        };
        let (ends, used) = segment
            .run(&reached, budget.saturating_sub(visited))
            .map_err(|Exhausted(n)| too_complex(visited + n))?;
        visited += used;
        if ends.is_empty() {
            return Err(explain(keys, group_operations, segment, &reached, budget));
        }
        reached = prune(ends);
    }
    Ok(visited)
}

/// The violation for a segment no order explains: drop each read whose
/// absence still leaves no order (reads only make a search harder, so what
/// stays is still a contradiction on its own).
fn explain(
    keys: &[Bytes],
    group_operations: usize,
    segment: Segment<'_>,
    reached: &[Reached],
    budget: u64,
) -> CheckError {
    const TRIM_UP_TO: usize = 200;
    let mut window: Vec<&Operation> = segment.ops.to_vec();
    let mut left = budget.min(2_000_000);
    if window.len() <= TRIM_UP_TO {
        let mut i = window.len();
        while i > 0 && left > 0 {
            i -= 1;
            if window[i].writes() {
                continue;
            }
            let mut fewer = window.clone();
            fewer.remove(i);
            let trial = Segment {
                ops: &fewer,
                unknowns: segment.unknowns,
            };
            match trial.run(reached, left) {
                Ok((ends, used)) => {
                    left = left.saturating_sub(used);
                    if ends.is_empty() {
                        window = fewer;
                    }
                }
                Err(Exhausted(_)) => left = 0,
            }
        }
    }
    let end = window.iter().filter_map(|o| o.ret).max();
    let possibly_applied: Vec<Operation> = segment
        .unknowns
        .all
        .iter()
        .filter(|op| end.is_some_and(|e| op.call <= e))
        .map(|op| (*op).clone())
        .collect();
    let before: BTreeSet<State> = reached.iter().map(|(s, _)| s.clone()).collect();
    CheckError::Violation(Box::new(Violation {
        keys: keys.to_vec(),
        group_operations,
        since: segment.ops.first().map_or(Duration::ZERO, |o| o.call),
        before: before.into_iter().take(8).collect(),
        window: window.into_iter().cloned().collect(),
        possibly_applied,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_and_prune() {
        let a = Bits::new(70).with(3);
        let ab = a.with(65);
        assert!(a.is_subset(&ab) && !ab.is_subset(&a));
        let fewer = Applied {
            exact: a,
            counts: vec![1, 0],
        };
        let more = Applied {
            exact: ab,
            counts: vec![1, 2],
        };
        let other = Applied {
            exact: Bits::new(70),
            counts: vec![2, 0],
        };
        assert!(fewer.within(&more) && !more.within(&fewer));
        assert!(!other.within(&fewer) && !fewer.within(&other));
        let ends: HashSet<Reached> = [&fewer, &more, &other]
            .into_iter()
            .map(|a| (State::new(), a.clone()))
            .collect();
        let mut kept = prune(ends);
        kept.sort();
        let mut want = vec![(State::new(), fewer), (State::new(), other)];
        want.sort();
        assert_eq!(kept, want);
    }
}
