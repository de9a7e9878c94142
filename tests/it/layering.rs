//! Module layering of the raftcd crate, checked from the source text (std only).
//!
//! Rules, each one `#[test]` that lists every offence as `file:line`:
//!
//! 1. **File size.** No file under `src/` has more than [`MAX_LINES`] lines of
//!    non-test code: every line (code, comments and blanks alike) before the
//!    first line starting with `#[cfg(test)]` at column 0. By convention a file
//!    ends with its one test module, so everything from there on is test code.
//! 2. **No import cycles** among `src/` files. A file depends on another when
//!    its non-test code names it: `use crate::a::{b, c::D}` (nested groups,
//!    `self`, globs, `as`, multi-line), `use super::x`, `use self::x`, and the
//!    same paths inline in code (`crate::a::f()`, `super::x::Y`), also inside
//!    inline `mod m { .. }` blocks. A path names the file of its longest prefix
//!    that is a module (`src/a/b.rs` or `src/a/b/mod.rs`); anything else under
//!    `crate::` names `src/lib.rs`. Strings, chars and comments are skipped;
//!    `mod x;` is not a dependency. A folder's face (`src/a/mod.rs`, or
//!    `src/a.rs` beside `src/a/`) may name its own descendants freely
//!    (`pub use child::X`), since it hands their names on. `src/lib.rs`,
//!    `src/main.rs` and `src/bin/` are roots: what they name is not checked.
//! 3. **Layers.** [`LAYERS`] ranks every top-level module (`src/x.rs` or
//!    `src/x/` is module `x`), bottom first. A file of module A may name a file
//!    of another module B only if B's layer is strictly below A's. Every
//!    top-level module must be in the table; names in the table that do not
//!    exist are fine. Dependencies inside one module only face rule 2.
//!
//! To change the layering, edit [`LAYERS`]: move a module to another row, add
//! a new module to the row it belongs to, or insert a row (the index is the
//! rank). Run standalone with
//! `rustc --edition 2021 --test layering.rs -o /tmp/layering && /tmp/layering`;
//! the crate root is `$CARGO_MANIFEST_DIR`, else `$RAFTCD_ROOT`, else
//! `/work/main`.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The most lines of non-test code one file may have.
const MAX_LINES: usize = 600;

/// Top-level modules by layer, bottom (rank 0) first. A module may only use
/// modules of strictly lower rank.
const LAYERS: &[&[&str]] = &[
    // 0: protobuf, postcard codec, Go durations, the history checker.
    &["pb", "codec", "duration", "linearizability", "runtime"],
    // 1: leaves: storage engine, metrics, TLS, the certificate tool, auth.
    &["storage", "metrics", "tls", "certs", "replicas", "auth"],
    // 2: configuration; listeners (bind, serve loop, connection limit).
    &["config", "net"],
    // 3: the deterministic MVCC store.
    &["mvcc"],
    // 4: the shared error type.
    &["error"],
    // 5: watch fan-out, lease deadlines.
    &["watch", "lessor"],
    // 6: openraft glue and peer network.
    &["raft"],
    // 7: snapshot save and restore.
    &["backup"],
    // 8: the server core.
    &["server"],
    // 9: etcd's API, in-process client.
    &["api", "client", "cluster", "proxy"],
    // 10: payment channels over the in-process client.
    &["escrow"],
    // 11: wiring; the one start function.
    &["node", "init"],
    // 12: `raftcd bench`, a gRPC load generator (pb, tls, duration).
    &["bench"],
    // 13: the command line.
    &["cli"],
];

/// One dependency: `from` names `to` at `from:line` with `path`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    from: PathBuf,
    line: usize,
    path: String,
    to: PathBuf,
}

/// What [`check_tree`] found; each list holds one offence per entry, sorted.
#[derive(Debug, Default)]
struct Report {
    long_files: Vec<String>,
    cycles: Vec<String>,
    layering: Vec<String>,
    edges: Vec<Edge>,
}

/// Check the crate at `root` (the folder holding `src/`).
fn check_tree(root: &Path) -> Report {
    let mut files = BTreeMap::new();
    read_dir(root, &root.join("src"), &mut files);
    assert!(
        files.contains_key(Path::new("src/lib.rs")),
        "no src/lib.rs under {}",
        root.display()
    );
    check_files(&files)
}

fn read_dir(root: &Path, dir: &Path, files: &mut BTreeMap<PathBuf, String>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("read_dir entry").path();
        if path.is_dir() {
            read_dir(root, &path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let rel = path.strip_prefix(root).expect("under root").to_path_buf();
            files.insert(rel, text);
        }
    }
}

/// Check a crate given as a map from `src/...` paths to file contents.
fn check_files(files: &BTreeMap<PathBuf, String>) -> Report {
    let mut report = Report::default();
    for (file, text) in files {
        let code = non_test_code(text);
        let lines = code.lines().count();
        if lines > MAX_LINES {
            report.long_files.push(format!(
                "{}:{}: {lines} lines of non-test code (limit {MAX_LINES})",
                file.display(),
                MAX_LINES + 1
            ));
        }
        if !is_root(file) {
            report.edges.extend(edges_of(files, file, code));
        }
    }
    report.cycles = cycles(&report.edges);
    report.layering = layering(files, &report.edges);
    report
}

/// The text before the first line starting with `#[cfg(test)]`.
fn non_test_code(text: &str) -> &str {
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if line.starts_with("#[cfg(test)]") {
            return &text[..at];
        }
        at += line.len();
    }
    text
}

fn is_root(file: &Path) -> bool {
    file == Path::new("src/lib.rs")
        || file == Path::new("src/main.rs")
        || file.starts_with("src/bin")
}

/// The module path of a file: `src/a/b.rs` and `src/a/b/mod.rs` are `[a, b]`.
fn module_path(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix("src").unwrap_or(file).with_extension("");
    let mut segs: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    if matches!(segs.as_slice(), [one] if one == "lib" || one == "main")
        || segs.last().is_some_and(|s| s == "mod")
    {
        segs.pop();
    }
    segs
}

/// The top-level module a file belongs to, if it is not a root.
fn top_module(file: &Path) -> Option<String> {
    if is_root(file) {
        return None;
    }
    module_path(file).into_iter().next()
}

/// A token (an identifier, `::`, or one punctuation character) and its line.
type Tok = (String, usize);

fn is_ident(t: &str) -> bool {
    t.starts_with(|c: char| c.is_alphabetic() || c == '_')
}

fn tokenize(src: &str) -> Vec<Tok> {
    let c: Vec<char> = src.chars().collect();
    let at = |k: usize| c.get(k).copied().unwrap_or('\0');
    let word = |k: usize| at(k).is_alphanumeric() || at(k) == '_';
    let (mut i, mut line, mut out) = (0, 1, Vec::new());
    while i < c.len() {
        let start = i;
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let (mut depth, mut k) = (1, i + 2);
            while k < c.len() && depth > 0 {
                if c[k] == '/' && at(k + 1) == '*' {
                    (depth, k) = (depth + 1, k + 2);
                } else if c[k] == '*' && at(k + 1) == '/' {
                    (depth, k) = (depth - 1, k + 2);
                } else {
                    k += 1;
                }
            }
            i = k;
        } else if let Some(end) = string_end(&c, i) {
            i = end;
        } else if ch == '\'' {
            if at(i + 1) == '\\' {
                i += 3; // the quote, the backslash and the escaped character
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3; // a character literal like 'x'
            } else {
                i += 1; // a lifetime or label: skip its name
                while word(i) {
                    i += 1;
                }
            }
        } else if word(i) {
            if ch == 'r' && at(i + 1) == '#' {
                i += 2; // raw identifier r#name
            }
            let s = i;
            while word(i) {
                i += 1;
            }
            out.push((c[s..i].iter().collect(), line));
        } else if ch == ':' && at(i + 1) == ':' {
            out.push(("::".into(), line));
            i += 2;
        } else {
            out.push((ch.into(), line));
            i += 1;
        }
        line += c[start..i.min(c.len())]
            .iter()
            .filter(|&&x| x == '\n')
            .count();
    }
    out
}

/// If a string literal (`"…"`, `r#"…"#`, `b"…"`, `br"…"`, `c"…"`) starts at
/// `i`, the index just past it.
fn string_end(c: &[char], i: usize) -> Option<usize> {
    let mut k = i;
    if matches!(c[k], 'b' | 'c') {
        k += 1;
    }
    if c.get(k) == Some(&'r') {
        let hashes = c[k + 1..].iter().take_while(|&&x| x == '#').count();
        k += 1 + hashes;
        if c.get(k) != Some(&'"') {
            return None;
        }
        k += 1;
        while k < c.len() {
            if c[k] == '"' && c[k + 1..].iter().take_while(|&&x| x == '#').count() >= hashes {
                return Some(k + 1 + hashes);
            }
            k += 1;
        }
        return Some(c.len());
    }
    if c.get(k) != Some(&'"') {
        return None;
    }
    k += 1;
    while k < c.len() {
        match c[k] {
            '\\' => k += 2,
            '"' => return Some(k + 1),
            _ => k += 1,
        }
    }
    Some(c.len())
}

/// A path as written: its segments, its line, and the inline `mod`s around it.
struct RawPath {
    line: usize,
    scope: Vec<String>,
    segs: Vec<String>,
}

/// Every path in `code`, from `use` trees and inline, that starts with
/// `crate`, `super` or `self`. (A bare `child::x` can only name one of the
/// file's own descendants, which the folder's face may name freely.)
fn scan(code: &str) -> Vec<RawPath> {
    let toks = tokenize(code);
    let text = |k: usize| toks.get(k).map_or("", |t| t.0.as_str());
    let mut out = Vec::new();
    let mut scope: Vec<(String, usize)> = Vec::new();
    let (mut i, mut depth) = (0, 0usize);
    while i < toks.len() {
        let names: Vec<String> = scope.iter().map(|(n, _)| n.clone()).collect();
        match text(i) {
            "{" => depth += 1,
            "}" => {
                depth = depth.saturating_sub(1);
                if scope.last().is_some_and(|(_, d)| *d == depth) {
                    scope.pop();
                }
            }
            "mod" if is_ident(text(i + 1)) && text(i + 2) == "{" => {
                scope.push((text(i + 1).to_string(), depth));
                depth += 1;
                i += 3;
                continue;
            }
            "use" if text(i + 1) != "<" => {
                let mut j = i + 1;
                let mut leaves = Vec::new();
                if use_tree(&toks, &mut j, Vec::new(), &mut leaves).is_some() {
                    for (line, segs) in leaves {
                        out.push(RawPath {
                            line,
                            scope: names.clone(),
                            segs,
                        });
                    }
                    i = j;
                    continue;
                }
            }
            t if matches!(t, "crate" | "super" | "self")
                && text(i + 1) == "::"
                && !matches!(text(i.wrapping_sub(1)), "::" | "in") =>
            {
                let mut segs = vec![t.to_string()];
                let mut j = i + 1;
                while text(j) == "::" && is_ident(text(j + 1)) {
                    segs.push(text(j + 1).to_string());
                    j += 2;
                }
                out.push(RawPath {
                    line: toks[i].1,
                    scope: names,
                    segs,
                });
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Parse one use tree at `j` under `prefix`, pushing `(line, path)` for each
/// leaf. Returns `None` (leaving `j` anywhere) on something unexpected.
fn use_tree(
    toks: &[Tok],
    j: &mut usize,
    prefix: Vec<String>,
    out: &mut Vec<(usize, Vec<String>)>,
) -> Option<()> {
    let text = |k: usize| toks.get(k).map(|t| t.0.as_str());
    let mut path = prefix;
    if path.is_empty() && text(*j) == Some("::") {
        *j += 1;
    }
    loop {
        match text(*j)? {
            "{" => {
                *j += 1;
                while text(*j)? != "}" {
                    use_tree(toks, j, path.clone(), out)?;
                    if text(*j)? == "," {
                        *j += 1;
                    }
                }
                *j += 1;
                break;
            }
            "*" => {
                out.push((toks[*j].1, path));
                *j += 1;
                break;
            }
            seg if is_ident(seg) => {
                if seg != "self" || path.is_empty() {
                    path.push(seg.to_string());
                }
                let line = toks[*j].1;
                *j += 1;
                if text(*j) == Some("::") {
                    *j += 1;
                    continue;
                }
                if text(*j) == Some("as") {
                    *j += 2;
                }
                out.push((line, path));
                break;
            }
            _ => return None,
        }
    }
    Some(())
}

/// The file a path names, or `None` for another crate.
fn resolve(files: &BTreeMap<PathBuf, String>, from: &Path, path: &RawPath) -> Option<PathBuf> {
    let mut here = module_path(from);
    here.extend(path.scope.iter().cloned());
    let mut segs = path.segs.iter().peekable();
    let mut abs = match segs.peek()?.as_str() {
        "crate" => {
            segs.next();
            Vec::new()
        }
        "self" | "super" => here,
        _ => return None,
    };
    while let Some(s) = segs.next_if(|s| *s == "self" || *s == "super") {
        if s == "super" {
            abs.pop()?;
        }
    }
    abs.extend(segs.cloned());
    for k in (1..=abs.len()).rev() {
        let base = Path::new("src").join(abs[..k].join("/"));
        for file in [base.with_extension("rs"), base.join("mod.rs")] {
            if files.contains_key(&file) {
                return Some(file);
            }
        }
    }
    Some(PathBuf::from("src/lib.rs"))
}

/// The dependencies of one file, one per line and target file.
fn edges_of(files: &BTreeMap<PathBuf, String>, from: &Path, code: &str) -> Vec<Edge> {
    let face = if from.ends_with("mod.rs") {
        from.parent().map(Path::to_path_buf)
    } else {
        Some(from.with_extension(""))
    };
    let paths = scan(code);
    let mut seen = BTreeSet::new();
    let mut edges = Vec::new();
    for path in paths {
        let Some(to) = resolve(files, from, &path) else {
            continue;
        };
        if to == from || face.as_ref().is_some_and(|f| to.starts_with(f)) {
            continue;
        }
        if seen.insert((path.line, to.clone())) {
            edges.push(Edge {
                from: from.to_path_buf(),
                line: path.line,
                path: path.segs.join("::"),
                to,
            });
        }
    }
    edges
}

/// Import cycles: Tarjan's strongly connected components of the file graph,
/// each with its files, a shortest cycle, and every edge inside it.
fn cycles(edges: &[Edge]) -> Vec<String> {
    let mut graph: BTreeMap<&Path, BTreeMap<&Path, Vec<&Edge>>> = BTreeMap::new();
    for e in edges {
        graph
            .entry(&e.from)
            .or_default()
            .entry(&e.to)
            .or_default()
            .push(e);
        graph.entry(&e.to).or_default();
    }
    let nodes: Vec<&Path> = graph.keys().copied().collect();
    let adj: Vec<Vec<usize>> = graph
        .values()
        .map(|out| {
            out.keys()
                .map(|to| nodes.binary_search(to).expect("node"))
                .collect()
        })
        .collect();
    let mut tarjan = Tarjan {
        adj: &adj,
        index: vec![None; nodes.len()],
        low: vec![0; nodes.len()],
        on_stack: vec![false; nodes.len()],
        stack: Vec::new(),
        next: 0,
        sccs: Vec::new(),
    };
    for v in 0..nodes.len() {
        if tarjan.index[v].is_none() {
            tarjan.visit(v);
        }
    }
    let mut out = Vec::new();
    for scc in tarjan.sccs.iter().filter(|scc| scc.len() > 1) {
        let set: BTreeSet<usize> = scc.iter().copied().collect();
        let name = |v: &usize| nodes[*v].display().to_string();
        let files: Vec<String> = set.iter().map(name).collect();
        let first = *set.first().expect("non-empty");
        let ring: Vec<String> = shortest_cycle(&adj, &set, first).iter().map(name).collect();
        let mut text = format!(
            "cycle of {} files: {}\n    shortest: {}",
            set.len(),
            files.join(", "),
            ring.join(" -> ")
        );
        let mut inside = Vec::new();
        for &v in &set {
            for (to, uses) in &graph[nodes[v]] {
                if set.contains(&nodes.binary_search(to).expect("node")) {
                    let more = match uses.len() - 1 {
                        0 => String::new(),
                        n => format!(" (+{n} more)"),
                    };
                    inside.push((uses[0], more));
                }
            }
        }
        inside.sort();
        for (e, more) in inside {
            let (from, to) = (e.from.display(), e.to.display());
            text += &format!("\n    {from}:{} -> {to} via {}{more}", e.line, e.path);
        }
        out.push(text);
    }
    out.sort();
    out
}

struct Tarjan<'a> {
    adj: &'a [Vec<usize>],
    index: Vec<Option<usize>>,
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    next: usize,
    sccs: Vec<Vec<usize>>,
}

impl Tarjan<'_> {
    fn visit(&mut self, v: usize) {
        self.index[v] = Some(self.next);
        self.low[v] = self.next;
        self.next += 1;
        self.stack.push(v);
        self.on_stack[v] = true;
        let adj = self.adj;
        for &w in &adj[v] {
            match self.index[w] {
                None => {
                    self.visit(w);
                    self.low[v] = self.low[v].min(self.low[w]);
                }
                Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(self.low[v]) == self.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = self.stack.pop() {
                self.on_stack[w] = false;
                scc.push(w);
                if w == v {
                    break;
                }
            }
            self.sccs.push(scc);
        }
    }
}

/// A shortest cycle through `start` inside `set` (breadth first).
fn shortest_cycle(adj: &[Vec<usize>], set: &BTreeSet<usize>, start: usize) -> Vec<usize> {
    let mut parent = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in adj[v].iter().filter(|w| set.contains(w)) {
            if w == start {
                let mut ring = vec![start, v];
                while let Some(&p) = parent.get(ring.last().expect("non-empty")) {
                    ring.push(p);
                }
                ring.reverse();
                return ring;
            }
            if let Entry::Vacant(slot) = parent.entry(w) {
                slot.insert(v);
                queue.push_back(w);
            }
        }
    }
    vec![start]
}

/// Modules missing from [`LAYERS`], then edges that do not go down a layer.
fn layering(files: &BTreeMap<PathBuf, String>, edges: &[Edge]) -> Vec<String> {
    let rank = |m: &str| LAYERS.iter().position(|row| row.contains(&m));
    let mut out = Vec::new();
    let modules: BTreeSet<String> = files.keys().filter_map(|f| top_module(f)).collect();
    for m in modules.iter().filter(|m| rank(m).is_none()) {
        let file = format!("src/{m}.rs");
        let place = if files.contains_key(Path::new(&file)) {
            file
        } else {
            format!("src/{m}/")
        };
        out.push(format!(
            "{place}: top-level module `{m}` is not in LAYERS; add it to its layer"
        ));
    }
    for e in edges {
        let (Some(a), Some(b)) = (top_module(&e.from), top_module(&e.to)) else {
            continue;
        };
        let (Some(ra), Some(rb)) = (rank(&a), rank(&b)) else {
            continue;
        };
        if a != b && rb >= ra {
            out.push(format!(
                "{}:{}: {a} (layer {ra}) uses {b} (layer {rb}) via {} -> {}",
                e.from.display(),
                e.line,
                e.path,
                e.to.display()
            ));
        }
    }
    out
}

fn crate_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .or_else(|| std::env::var_os("RAFTCD_ROOT"))
        .map_or_else(|| PathBuf::from("/work/main"), PathBuf::from)
}

/// The report on the real crate, computed once for the three checks.
fn real() -> &'static Report {
    static REPORT: OnceLock<Report> = OnceLock::new();
    REPORT.get_or_init(|| check_tree(&crate_root()))
}

#[test]
fn no_file_over_the_line_limit() {
    let found = &real().long_files;
    assert!(
        found.is_empty(),
        "{} file(s) under {} have more than {MAX_LINES} lines of non-test code; split them:\n{}",
        found.len(),
        crate_root().display(),
        found.join("\n")
    );
}

#[test]
fn no_import_cycles() {
    let found = &real().cycles;
    assert!(
        found.is_empty(),
        "{} import cycle(s) among the files under {}/src; break every one:\n{}",
        found.len(),
        crate_root().display(),
        found.join("\n")
    );
}

#[test]
fn layers_point_down() {
    let found = &real().layering;
    assert!(
        found.is_empty(),
        "{} layering offence(s) under {} (a module may only use modules of a lower layer; see LAYERS in {}):\n{}",
        found.len(),
        crate_root().display(),
        file!(),
        found.join("\n")
    );
}

/// The checker itself, on small in-memory crates.
mod fixtures {
    use super::*;

    fn check(files: &[(&str, &str)]) -> Report {
        let map = files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect();
        check_files(&map)
    }

    /// Each edge as `from:line -> to`.
    fn edges(report: &Report) -> Vec<String> {
        let show = |e: &Edge| format!("{}:{} -> {}", e.from.display(), e.line, e.to.display());
        report.edges.iter().map(show).collect()
    }

    #[test]
    fn nested_use_groups_self_globs_and_renames() {
        let r = check(&[
            ("src/lib.rs", "pub mod a; pub mod b;"),
            (
                "src/a.rs",
                "use crate::b::{\n    c::{D, e::F as G},\n    self as bb,\n    g::*,\n};\nuse ::std::fmt;\nuse other::b;\n",
            ),
            ("src/b/mod.rs", "pub mod c; pub mod g;"),
            ("src/b/c.rs", "pub mod e; pub struct D;"),
            ("src/b/c/e.rs", "pub struct F;"),
            ("src/b/g.rs", ""),
        ]);
        let want = ["src/a.rs:2 -> src/b/c.rs", "src/a.rs:2 -> src/b/c/e.rs"];
        let want = [
            &want[..],
            &["src/a.rs:3 -> src/b/mod.rs", "src/a.rs:4 -> src/b/g.rs"],
        ];
        assert_eq!(edges(&r), want.concat());
    }

    #[test]
    fn super_self_child_and_inline_paths() {
        let r = check(&[
            (
                "src/x/y/z.rs",
                "mod kid;\nuse super::w::V;\nfn f() { super::super::q::f(); self::kid::g(); kid::h() }\nfn g() -> u8 { crate::Item }\n",
            ),
            ("src/x/y/w.rs", ""),
            ("src/x/q.rs", ""),
            ("src/x/y/z/kid.rs", ""),
        ]);
        let want = [
            "src/x/y/z.rs:2 -> src/x/y/w.rs",
            "src/x/y/z.rs:3 -> src/x/q.rs",
        ];
        assert_eq!(
            edges(&r),
            [&want[..], &["src/x/y/z.rs:4 -> src/lib.rs"]].concat()
        );
    }

    #[test]
    fn strings_comments_chars_and_lifetimes_are_skipped() {
        let code = concat!(
            "// crate::b::X\n/* crate::b /* nested */ crate::b */\n",
            "const S: &str = \"crate::b::\\\"X\";\nconst R: &str = r#\"crate::b\"#;\n",
            "const Q: char = '\"'; const E: char = '\\'';\n",
            "fn f<'a>(s: &'a str) -> &'a str { crate::c::g(s) }\n",
            "pub(in crate::b) struct T;\n",
            "#[cfg(test)]\nmod tests { use crate::b::X; }\n",
        );
        let r = check(&[("src/a.rs", code), ("src/b.rs", ""), ("src/c.rs", "")]);
        assert_eq!(edges(&r), ["src/a.rs:6 -> src/c.rs"]);
    }

    #[test]
    fn inline_modules_shift_super() {
        let r = check(&[
            (
                "src/a.rs",
                "mod inner {\n    use super::super::b::X;\n}\nuse super::c::Y;\n",
            ),
            ("src/b.rs", ""),
            ("src/c.rs", ""),
        ]);
        assert_eq!(
            edges(&r),
            ["src/a.rs:2 -> src/b.rs", "src/a.rs:4 -> src/c.rs"]
        );
    }

    #[test]
    fn two_file_cycle_is_found() {
        let r = check(&[
            ("src/lib.rs", "pub mod mvcc;"),
            ("src/mvcc/mod.rs", "pub mod lease; pub mod view;"),
            (
                "src/mvcc/lease.rs",
                "use super::view::View;\nfn f() { crate::mvcc::view::g() }\n",
            ),
            ("src/mvcc/view.rs", "\nuse super::lease::Lease;\n"),
        ]);
        assert_eq!(r.cycles.len(), 1, "{:?}", r.cycles);
        let text = &r.cycles[0];
        assert!(text.starts_with("cycle of 2 files: src/mvcc/lease.rs, src/mvcc/view.rs"));
        assert!(text
            .contains("src/mvcc/lease.rs:1 -> src/mvcc/view.rs via super::view::View (+1 more)"));
        assert!(text.contains("src/mvcc/view.rs:2 -> src/mvcc/lease.rs via super::lease::Lease"));
        assert!(r.layering.is_empty(), "{:?}", r.layering);
    }

    #[test]
    fn a_folder_face_may_name_its_descendants() {
        let r = check(&[
            (
                "src/m/mod.rs",
                "mod k;\npub use k::K;\npub use self::k::L;\nfn f() { k::g(); crate::m::k::h() }\nuse crate::n::N;\n",
            ),
            ("src/m/k.rs", "use super::K;\n"),
            ("src/n.rs", "use crate::m::k::K;\n"),
            ("src/n/deep.rs", "use crate::n::N;\n"),
        ]);
        let want = ["src/m/k.rs:1 -> src/m/mod.rs", "src/m/mod.rs:5 -> src/n.rs"];
        let want = [
            &want[..],
            &["src/n/deep.rs:1 -> src/n.rs", "src/n.rs:1 -> src/m/k.rs"], // n/ sorts before n.rs
        ];
        assert_eq!(edges(&r), want.concat());
        assert_eq!(r.cycles.len(), 1, "m/mod.rs -> n.rs -> m/k.rs -> m/mod.rs");
    }

    #[test]
    fn layers_and_unlisted_modules() {
        let r = check(&[
            ("src/lib.rs", "pub mod api; pub mod node; pub mod zzz;"),
            ("src/api/mod.rs", "pub mod kv;"),
            (
                "src/api/kv.rs",
                "use crate::node::Node;\nuse crate::zzz::Z;\nuse super::X;\n",
            ),
            (
                "src/node.rs",
                "use crate::api::kv::Kv;\nuse crate::client::C;\n",
            ),
            ("src/client.rs", ""),
            ("src/zzz.rs", "use crate::pb::P;\n"),
        ]);
        assert_eq!(
            r.layering,
            [
                "src/zzz.rs: top-level module `zzz` is not in LAYERS; add it to its layer",
                "src/api/kv.rs:1: api (layer 9) uses node (layer 11) via crate::node::Node -> src/node.rs",
            ]
        );
    }

    #[test]
    fn only_non_test_lines_count() {
        let long = "fn f() {}\n".repeat(MAX_LINES + 1);
        let fits = format!("{}#[cfg(test)]\n{}", "\n".repeat(MAX_LINES), long);
        let r = check(&[("src/long.rs", &long), ("src/fits.rs", &fits)]);
        assert_eq!(
            r.long_files,
            ["src/long.rs:601: 601 lines of non-test code (limit 600)"]
        );
    }
}
