#!/usr/bin/env python3
"""Assemble scripts/bench's generated block of docs/benchmarks.md.

Reads the JSON results of the 1-member comparison (`cargo bench --bench
compare -- --json FILE`) and of the 3-member one (`benches/three_members.sh
--json FILE`), checks issue 14's ratio targets against them, and either
prints the block or (with --doc FILE) replaces the text between the markers
in that file; the markers are inserted at the top of its "## Results"
section when missing. Everything outside the markers is left as it is.
"""

import argparse
import datetime
import json
import sys

BEGIN = "<!-- scripts/bench: begin -->"
END = "<!-- scripts/bench: end -->"
RESULTS = "## Results"


def step(report, step_id, clients):
    if not report:
        return None
    for st in report.get("steps", []):
        if st["id"] == step_id and st["clients"] == clients:
            return st
    return None


class Targets:
    def __init__(self):
        self.rows = []

    def add(self, what, members, raftcd, etcd, ratio, op, bound, note="", unchecked=None):
        """One target: `ratio op bound` (op is >= or <=); None: not measured.
        `unchecked`: why the figures cannot decide it (the ratio is still shown)."""
        if ratio is None:
            status = "not measured"
        elif unchecked:
            status = f"not checked ({unchecked})"
        elif (op == ">=" and ratio >= bound) or (op == "<=" and ratio <= bound):
            status = "**met**"
        else:
            status = "missed"
        shown = "—" if ratio is None else f"{ratio:.2f}×"
        sign = "≥" if op == ">=" else "≤"
        self.rows.append((what, members, raftcd, etcd, shown, f"{sign} {bound}×", status, note))

    def markdown(self):
        out = [
            "| target | members | raftcd | etcd (or base) | ratio | target | status | note |",
            "|---|---:|---:|---:|---:|---:|---|---|",
        ]
        for r in self.rows:
            out.append("| " + " | ".join(str(x) for x in r) + " |")
        met = sum(1 for r in self.rows if r[6] == "**met**")
        out.append("")
        out.append(f"{met} of {len(self.rows)} targets met.")
        return "\n".join(out)


def ratio(a, b):
    if a is None or b is None or not b:
        return None
    return a / b


def ops(st):
    return None if st is None else st["ops_per_sec"]


def fmt_ops(x):
    return "not measured" if x is None else f"{x:.0f}/s"


def fmt_mib(b):
    return "not measured" if b is None else f"{b / 1048576:.1f} MiB"


def step_errors(*steps):
    n = sum(st["errors"] for st in steps if st)
    return f"{n} errors" if n else ""


def targets(one, three):
    t = Targets()
    r1, e1 = one.get("raftcd"), one.get("etcd")
    r3 = (three or {}).get("raftcd")
    e3 = (three or {}).get("etcd")

    def one_ops(what, step_id, clients, bound, note=""):
        a, b = step(r1, step_id, clients), step(e1, step_id, clients)
        t.add(what, 1, fmt_ops(ops(a)), fmt_ops(ops(b)), ratio(ops(a), ops(b)), ">=", bound,
              "; ".join(x for x in (note, step_errors(a, b)) if x))

    def three_ops(what, key, bound, note=""):
        if not r3 or not e3:
            t.add(what, 3, "not measured", "not measured", None, ">=", bound, note)
            return
        a, b = r3[key]["throughput"], e3[key]["throughput"]
        errs = r3[key]["errors"] + e3[key]["errors"]
        t.add(what, 3, fmt_ops(a), fmt_ops(b), ratio(a, b), ">=", bound,
              "; ".join(x for x in (note, f"{errs} errors" if errs else "") if x))

    one_ops("put, 64 clients", "put", 64, 1.5)
    three_ops("put, 64 clients", "put", 2.0)
    a, b = step(r1, "put", 64), step(e1, "put", 64)
    pa = a and a["p99_ms"]
    pb = b and b["p99_ms"]
    t.add("put p99 latency, 64 clients", 1,
          "not measured" if pa is None else f"{pa:.2f} ms",
          "not measured" if pb is None else f"{pb:.2f} ms",
          ratio(pa, pb), "<=", 0.7)
    one_ops("put, 1 client", "put", 1, 1.5)
    one_ops("get (linearizable), 64 clients", "get (linearizable)", 64, 2.0)
    three_ops("get (linearizable), 64 clients", "get_l", 2.0)
    one_ops("get (serializable), 64 clients", "get (serializable)", 64, 2.0)
    three_ops("get (serializable), 64 clients", "get_s", 2.0)
    one_ops("txn compare-and-swap, 64 clients", "cas", 64, 1.5,
            "whole key space, compares race")
    three_ops("txn compare-and-swap, 64 clients", "cas", 2.0, "own keys")

    # Reads under history: raftcd against its own fresh-state rate.
    hist = step(r1, "history get", 64)
    fresh = step(r1, "get (linearizable)", 64)
    fill = step(r1, "history fill", 64)
    note = "raftcd's get under history / its get (linearizable), 64 clients"
    unchecked = None
    if fill is not None:
        note += f"; {fill['ok']} revisions written"
        if fill["ok"] < 400000:
            unchecked = "fewer than 400k revisions"
    t.add("get under 400k uncompacted revisions", 1,
          fmt_ops(ops(hist)), fmt_ops(ops(fresh)) + " fresh",
          ratio(ops(hist), ops(fresh)), ">=", 0.8, note, unchecked)

    ra = r1 and r1.get("peak_rss_standard_bytes")
    rb = e1 and e1.get("peak_rss_standard_bytes")
    t.add("peak RSS, standard load", 1, fmt_mib(ra), fmt_mib(rb), ratio(ra, rb), "<=", 0.5,
          "VmHWM before the history step")
    # The same with the history step's 400k uncompacted revisions (the whole
    # run: what issue 14's own first measurement counted).
    ha = r1 and r1.get("peak_rss_bytes")
    hb = e1 and e1.get("peak_rss_bytes")
    t.add("peak RSS, whole run", 1, fmt_mib(ha), fmt_mib(hb), ratio(ha, hb), "<=", 0.5,
          "VmHWM at the end, after the 400k-revision history step")
    if r3 and e3:
        a, b = r3["rss_mib"], e3["rss_mib"]
        t.add("peak RSS, summed over the members", 3, f"{a} MiB", f"{b} MiB", ratio(a, b),
              "<=", 0.5)
    else:
        t.add("peak RSS, summed over the members", 3, "not measured", "not measured", None,
              "<=", 0.5)

    sa = r1 and r1["startup"].get("median_ms")
    sb = e1 and e1["startup"].get("median_ms")
    n = max(len((r1 or {}).get("startup", {}).get("runs_ms", [])),
            len((e1 or {}).get("startup", {}).get("runs_ms", [])))
    t.add("start to first accepted write", 1,
          "not measured" if sa is None else f"{sa:.1f} ms",
          "not measured" if sb is None else f"{sb:.1f} ms",
          ratio(sa, sb), "<=", 0.25, f"median of {n} fresh starts")
    return t


def demote(md):
    """The compare bench's Markdown under this block's heading levels."""
    out = []
    for line in md.strip("\n").splitlines():
        if line.startswith("## raftcd vs etcd benchmark"):
            continue
        if line.startswith("### "):
            line = "#####" + line[3:]
        out.append(line)
    return "\n".join(out).strip("\n")


def block(a, one, three):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [BEGIN, ""]
    title = f"### {now[:10]}: `{a.command}` (generated)"
    lines.append(title)
    lines.append("")
    if a.quick:
        lines.append("**Quick check (1 s steps, a small history): not figures to compare or keep.**")
        lines.append("")
    lines.append(
        f"Generated by `{a.command}` on {now} at commit `{a.commit}`; {a.cpus} CPUs; "
        f"load average {a.load_before} before the benchmarks, {a.load_after} after. "
        f"Took {a.total_secs // 60} min {a.total_secs % 60} s: build {a.build_secs} s "
        f"(and waiting for the load to settle), 1 member {a.one_secs} s, "
        f"3 members {a.three_secs} s. `scripts/bench` rewrites everything between "
        "the `scripts/bench` markers; do not edit it by hand."
    )
    lines.append("")
    lines.append(
        f"It ran `cargo bench --bench compare -- {a.compare_args}` (1 member: raftcd, then "
        f"etcd) and `benches/three_members.sh {a.secs}` (3 members: raftcd, then etcd); "
        "see \"How to run it\" and \"What it does\" above."
    )
    if one.get("debug_build"):
        lines.append("")
        lines.append("**Debug build: the figures mean nothing.**")
    lines += ["", "#### Issue 14's targets", ""]
    lines.append(
        "Ratios are raftcd / etcd from this run (throughput: higher is better; p99, RSS "
        "and start time: lower is better), except the history row, which is raftcd "
        "against itself."
    )
    lines.append("")
    lines.append(targets(one, three).markdown())
    lines += ["", "#### 1 member", ""]
    lines.append(demote(one["markdown"]))
    lines += ["", "#### 3 members", ""]
    if three:
        lines.append(
            f"Load average {three['load_before']} before, {three['load_after']} after; "
            f"{three['secs']:g} s per step; the start row is one start of each cluster "
            "(from starting the three members to the first put accepted through any of "
            "them)."
        )
        lines.append("")
        lines.append(three["markdown"].strip("\n"))
    else:
        lines.append("Not measured.")
    lines += ["", END]
    return "\n".join(lines) + "\n"


def rewrite(path, text):
    """Replace the lines from BEGIN to END (each a line of its own)."""
    with open(path) as f:
        doc = f.read()
    begin, end = "\n" + BEGIN + "\n", "\n" + END + "\n"
    b = doc.find(begin)
    e = doc.find(end, b + 1) if b >= 0 else -1
    if b >= 0 and e >= 0:
        doc = doc[: b + 1] + text + doc[e + len(end):]
    elif BEGIN in doc or END in doc:
        sys.exit(f"bench-report: {path} has only one of the markers, or not on lines of their own")
    else:
        at = doc.find("\n" + RESULTS + "\n")
        if at < 0:
            sys.exit(f"bench-report: no '{RESULTS}' section in {path}")
        at += len(RESULTS) + 2
        doc = doc[:at] + "\n" + text + doc[at:]
    with open(path, "w") as f:
        f.write(doc)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--one", required=True)
    p.add_argument("--three")
    p.add_argument("--doc")
    p.add_argument("--command", default="scripts/bench")
    p.add_argument("--commit", default="unknown")
    p.add_argument("--cpus", default="?")
    p.add_argument("--load-before", default="?")
    p.add_argument("--load-after", default="?")
    p.add_argument("--build-secs", type=int, default=0)
    p.add_argument("--one-secs", type=int, default=0)
    p.add_argument("--three-secs", type=int, default=0)
    p.add_argument("--total-secs", type=int, default=0)
    p.add_argument("--compare-args", default="")
    p.add_argument("--secs", default="5")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    with open(a.one) as f:
        one = json.load(f)
    three = None
    if a.three:
        with open(a.three) as f:
            three = json.load(f)
    text = block(a, one, three)
    if a.doc:
        rewrite(a.doc, text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
