//! The replica table (`--replica-table FILE`): every replica of a service
//! and how the cluster grows over them. A TOML file, the same on every
//! replica:
//!
//! ```toml
//! token = "payments-prod"        # cluster token: a member of another token is refused
//! mode = "incremental"           # or "fixed"
//! heartbeat_interval_ms = 1000   # how often each replica refreshes its row
//! dead_after_ms = 5000           # a replica whose row is older is dead
//! max_voters = 5                 # odd; the ceiling of the voter count
//!
//! [[replica]]
//! id = 1
//! name = "r1"
//! client_url = "http://10.0.0.1:2379"
//! peer_url = "http://10.0.0.1:2380"
//! run_node = true                # fixed mode: does this replica run a member?
//! ```
//!
//! [`ReplicaTable::parse`] checks everything a member relies on and names
//! the line of the first problem. The growth rule itself lives in
//! `crate::cluster`; this module is only the file.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use url::Url;

/// How the voter set is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The cluster grows itself: 1 voter for 1–2 live replicas, 3 for 3–4,
    /// 5 for 5 or more (up to `max_voters`); the rest are learners.
    Incremental,
    /// Exactly the replicas with `run_node = true` run members, all voters.
    Fixed,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Unique, at least 1. Lower ids are preferred as voters and bootstrap.
    pub id: u64,
    pub name: String,
    pub client_url: Url,
    pub peer_url: Url,
    /// Fixed mode: whether this replica runs a member (incremental mode:
    /// every replica does).
    pub run_node: bool,
}

/// A checked replica table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaTable {
    pub token: String,
    pub mode: Mode,
    pub heartbeat_interval: Duration,
    pub dead_after: Duration,
    pub max_voters: usize,
    /// Sorted by id.
    pub replicas: Vec<Replica>,
}

/// Why a replica table was refused: the file, the line if known, the
/// problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("replica table {file}{}: {reason}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
pub struct TableError {
    pub file: String,
    pub line: Option<usize>,
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    token: Spanned<String>,
    #[serde(default)]
    mode: Option<Spanned<String>>,
    #[serde(default)]
    heartbeat_interval_ms: Option<Spanned<u64>>,
    #[serde(default)]
    dead_after_ms: Option<Spanned<u64>>,
    #[serde(default)]
    max_voters: Option<Spanned<u64>>,
    #[serde(default)]
    replica: Vec<Spanned<RawReplica>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplica {
    id: Spanned<u64>,
    name: Spanned<String>,
    client_url: Spanned<String>,
    peer_url: Spanned<String>,
    #[serde(default)]
    run_node: Option<bool>,
}

/// The default of `heartbeat_interval_ms`.
pub const DEFAULT_HEARTBEAT_MS: u64 = 1000;
/// The default of `dead_after_ms`.
pub const DEFAULT_DEAD_AFTER_MS: u64 = 5000;
/// The default and largest `max_voters`.
pub const DEFAULT_MAX_VOTERS: u64 = 5;
/// The most rows a table may have.
pub const MAX_REPLICAS: usize = 1000;

impl ReplicaTable {
    /// Read and check the table at `path`.
    pub fn load(path: &Path) -> Result<Self, TableError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| TableError {
            file: file.clone(),
            line: None,
            reason: format!("cannot read it: {e}"),
        })?;
        Self::parse(&file, &text)
    }

    /// Check the table `text` (read from `file`, named in errors).
    pub fn parse(file: &str, text: &str) -> Result<Self, TableError> {
        let err = |span: Option<std::ops::Range<usize>>, reason: String| TableError {
            file: file.to_string(),
            line: span.map(|s| line_of(text, s.start)),
            reason,
        };
        let raw: RawTable = toml::from_str(text).map_err(|e| err(e.span(), e.message().into()))?;
        let token = raw.token.get_ref().trim().to_string();
        if token.is_empty() {
            return Err(err(
                Some(raw.token.span()),
                "token must not be empty".into(),
            ));
        }
        let mode = match &raw.mode {
            None => Mode::Incremental,
            Some(m) => match m.get_ref().as_str() {
                "incremental" => Mode::Incremental,
                "fixed" => Mode::Fixed,
                other => {
                    return Err(err(
                        Some(m.span()),
                        format!("mode must be \"incremental\" or \"fixed\", not {other:?}"),
                    ))
                }
            },
        };
        let ms = |v: &Option<Spanned<u64>>, default: u64, name: &str| {
            let (value, span) = v
                .as_ref()
                .map_or((default, None), |s| (*s.get_ref(), Some(s.span())));
            if value == 0 || value > 3_600_000 {
                return Err(err(
                    span,
                    format!("{name} must be between 1 and 3600000, not {value}"),
                ));
            }
            Ok((value, span))
        };
        let (heartbeat, _) = ms(
            &raw.heartbeat_interval_ms,
            DEFAULT_HEARTBEAT_MS,
            "heartbeat_interval_ms",
        )?;
        let (dead_after, dead_span) =
            ms(&raw.dead_after_ms, DEFAULT_DEAD_AFTER_MS, "dead_after_ms")?;
        if dead_after < heartbeat.saturating_mul(2) {
            return Err(err(
                dead_span,
                format!(
                    "dead_after_ms ({dead_after}) must be at least twice heartbeat_interval_ms ({heartbeat})"
                ),
            ));
        }
        let max_voters = match &raw.max_voters {
            None => DEFAULT_MAX_VOTERS,
            Some(v) => {
                let n = *v.get_ref();
                if n == 0 || n % 2 == 0 || n > 7 {
                    return Err(err(
                        Some(v.span()),
                        format!("max_voters must be 1, 3, 5 or 7, not {n}"),
                    ));
                }
                n
            }
        };
        if raw.replica.is_empty() {
            return Err(err(None, "no [[replica]] rows".into()));
        }
        if raw.replica.len() > MAX_REPLICAS {
            return Err(err(
                None,
                format!("more than {MAX_REPLICAS} [[replica]] rows"),
            ));
        }
        let mut replicas: Vec<Replica> = Vec::new();
        let (mut ids, mut names, mut urls) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        for row in &raw.replica {
            let r = row.get_ref();
            let id = *r.id.get_ref();
            if id == 0 {
                return Err(err(
                    Some(r.id.span()),
                    "replica id must be at least 1".into(),
                ));
            }
            if !ids.insert(id) {
                return Err(err(Some(r.id.span()), format!("duplicate replica id {id}")));
            }
            let name = r.name.get_ref().trim().to_string();
            if name.is_empty() {
                return Err(err(
                    Some(r.name.span()),
                    "replica name must not be empty".into(),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(err(
                    Some(r.name.span()),
                    format!("duplicate replica name {name:?}"),
                ));
            }
            let mut url = |s: &Spanned<String>, what: &str| -> Result<Url, TableError> {
                let u = parse_url(s.get_ref()).map_err(|reason| {
                    err(
                        Some(s.span()),
                        format!("{what} {:?}: {reason}", s.get_ref()),
                    )
                })?;
                if !urls.insert(u.as_str().trim_end_matches('/').to_string()) {
                    return Err(err(
                        Some(s.span()),
                        format!("duplicate URL {:?}", s.get_ref()),
                    ));
                }
                Ok(u)
            };
            let client_url = url(&r.client_url, "client_url")?;
            let peer_url = url(&r.peer_url, "peer_url")?;
            replicas.push(Replica {
                id,
                name,
                client_url,
                peer_url,
                run_node: r.run_node.unwrap_or(true),
            });
        }
        if !replicas.iter().any(|r| r.run_node) {
            return Err(err(None, "no replica has run_node = true".into()));
        }
        replicas.sort_by_key(|r| r.id);
        Ok(ReplicaTable {
            token,
            mode,
            heartbeat_interval: Duration::from_millis(heartbeat),
            dead_after: Duration::from_millis(dead_after),
            max_voters: max_voters as usize,
            replicas,
        })
    }

    /// The row of replica `id`.
    pub fn replica(&self, id: u64) -> Option<&Replica> {
        self.replicas.iter().find(|r| r.id == id)
    }

    /// The rows of the replicas that run a member.
    pub fn members(&self) -> impl Iterator<Item = &Replica> {
        self.replicas.iter().filter(|r| r.run_node)
    }
}

/// One `http(s)://HOST:PORT` URL with nothing after the port.
fn parse_url(s: &str) -> Result<Url, String> {
    let u = Url::parse(s.trim()).map_err(|e| e.to_string())?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!(
            "scheme must be http or https, not {:?}",
            u.scheme()
        ));
    }
    if u.host_str().is_none_or(str::is_empty) || u.port_or_known_default().is_none() {
        return Err("expected http(s)://HOST:PORT".into());
    }
    if !(u.path().is_empty() || u.path() == "/") || u.query().is_some() || u.fragment().is_some() {
        return Err("expected nothing after HOST:PORT".into());
    }
    Ok(u)
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"token = "payments-prod"
mode = "incremental"
heartbeat_interval_ms = 1000
dead_after_ms = 5000
max_voters = 5

[[replica]]
id = 2
name = "r2"
client_url = "http://10.0.0.2:2379"
peer_url = "http://10.0.0.2:2380"

[[replica]]
id = 1
name = "r1"
client_url = "http://10.0.0.1:2379"
peer_url = "http://10.0.0.1:2380"
run_node = false
"#;

    fn refused(text: &str) -> TableError {
        ReplicaTable::parse("t.toml", text).unwrap_err()
    }

    #[test]
    fn a_good_table_parses_sorted_by_id() {
        let t = ReplicaTable::parse("t.toml", GOOD).unwrap();
        assert_eq!(t.token, "payments-prod");
        assert_eq!(t.mode, Mode::Incremental);
        assert_eq!(t.heartbeat_interval, Duration::from_secs(1));
        assert_eq!(t.dead_after, Duration::from_secs(5));
        assert_eq!(t.max_voters, 5);
        let ids: Vec<u64> = t.replicas.iter().map(|r| r.id).collect();
        assert_eq!(ids, [1, 2]);
        assert!(!t.replica(1).unwrap().run_node);
        assert!(t.replica(2).unwrap().run_node);
        assert_eq!(t.members().count(), 1);
        assert_eq!(t.replica(2).unwrap().peer_url.port(), Some(2380));
    }

    #[test]
    fn defaults_apply() {
        let t = ReplicaTable::parse(
            "t.toml",
            "token = \"x\"\n[[replica]]\nid = 1\nname = \"a\"\nclient_url = \"http://h:1\"\npeer_url = \"http://h:2\"\n",
        )
        .unwrap();
        assert_eq!(t.mode, Mode::Incremental);
        assert_eq!(t.max_voters, 5);
        assert_eq!(t.dead_after, Duration::from_millis(DEFAULT_DEAD_AFTER_MS));
    }

    #[test]
    fn each_mistake_names_its_line() {
        let e = refused(&GOOD.replace("id = 1", "id = 2"));
        assert_eq!(e.line, Some(14), "{e}");
        assert!(e.to_string().contains("duplicate replica id 2"), "{e}");
        assert!(
            e.to_string().starts_with("replica table t.toml, line 14: "),
            "{e}"
        );

        let e = refused(&GOOD.replace("http://10.0.0.1:2380", "http://10.0.0.2:2380"));
        assert_eq!(e.line, Some(17), "{e}");
        assert!(e.reason.contains("duplicate URL"), "{e}");

        let e = refused(&GOOD.replace("max_voters = 5", "max_voters = 4"));
        assert_eq!(e.line, Some(5), "{e}");
        assert!(
            e.reason.contains("max_voters must be 1, 3, 5 or 7, not 4"),
            "{e}"
        );

        let e = refused(&GOOD.replace("http://10.0.0.2:2379", "10.0.0.2:2379"));
        assert_eq!(e.line, Some(10), "{e}");
        assert!(e.reason.contains("client_url"), "{e}");

        let e = refused(&GOOD.replace("mode = \"incremental\"", "mode = \"grow\""));
        assert_eq!(e.line, Some(2), "{e}");

        let e = refused(&GOOD.replace("name = \"r1\"", "name = \"r2\""));
        assert_eq!(e.line, Some(15), "{e}");

        let e = refused(&GOOD.replace("id = 1\n", "id = 1\nvoter = true\n"));
        assert_eq!(e.line, Some(15), "{e}");
        assert!(e.reason.contains("unknown field"), "{e}");

        let e = refused(&GOOD.replace("dead_after_ms = 5000", "dead_after_ms = 1500"));
        assert_eq!(e.line, Some(4), "{e}");

        let e = refused("token = \"x\"\n[[replica]\n");
        assert_eq!(e.line, Some(2), "{e}");
        let e = refused("token = \"x\"\n");
        assert!(e.reason.contains("no [[replica]] rows"), "{e}");
    }
}
