//! `raftcd storage init`: a new data dir that holds its member's
//! configuration, so that `raftcd --data-dir DIR` starts the member with no
//! other flags (the design documents' `snet storage init`).
//!
//! The configuration is the start file `DIR/raftcd.toml` (TOML, written
//! whole and synced):
//!
//! ```toml
//! name = "n1"
//! token = "payments-prod"
//! client_url = "http://10.0.0.1:2379"
//! peer_url = "http://10.0.0.1:2380"
//! initial_cluster = "n1=http://10.0.0.1:2380,n2=http://10.0.0.2:2380"
//! ```
//!
//! A member started on a data dir holding one takes its name, URLs, token
//! and initial cluster from it; the flags give everything else (TLS,
//! timing, limits).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{parse_cluster, parse_urls, url_string, ClusterState, Config, ConfigError};
use crate::storage::START_FILE;

/// What `storage init` writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartFile {
    pub name: String,
    pub token: String,
    pub client_url: String,
    pub peer_url: String,
    pub initial_cluster: String,
}

/// Errors of `storage init` and of reading a start file.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error(
        "data dir {dir} is not empty (it holds {first}): storage init only writes a new data dir"
    )]
    NotEmpty { dir: String, first: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
}

impl StartFile {
    /// Check the settings as a member would on start: URLs, the cluster
    /// list, and that the list names this member with its peer URL.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.name.trim().is_empty() {
            return Err(ConfigError::Invalid("--name must not be empty".into()));
        }
        if self.token.trim().is_empty() {
            return Err(ConfigError::Invalid("--token must not be empty".into()));
        }
        parse_urls("client-url", &self.client_url)?;
        let peer = parse_urls("peer-url", &self.peer_url)?;
        let cluster = parse_cluster(&self.initial_cluster)?;
        let own = cluster
            .iter()
            .find(|(n, _)| *n == self.name)
            .ok_or_else(|| ConfigError::NameNotInCluster(self.name.clone()))?;
        let own: Vec<String> = own.1.iter().map(url_string).collect();
        let peer: Vec<String> = peer.iter().map(url_string).collect();
        if own != peer {
            return Err(ConfigError::Invalid(format!(
                "--initial-cluster gives {:?} the peer URLs {}, but --peer-url is {}",
                self.name,
                own.join(","),
                peer.join(",")
            )));
        }
        Ok(())
    }

    /// Take this member's identity and cluster from the file.
    pub fn apply(&self, mut config: Config) -> Result<Config, ConfigError> {
        self.check()?;
        config.name = self.name.clone();
        config.initial_cluster_token = self.token.clone();
        config.listen_client_urls = parse_urls("client-url", &self.client_url)?;
        config.advertise_client_urls = config.listen_client_urls.clone();
        config.listen_peer_urls = parse_urls("peer-url", &self.peer_url)?;
        config.initial_advertise_peer_urls = config.listen_peer_urls.clone();
        config.initial_cluster = parse_cluster(&self.initial_cluster)?;
        config.initial_cluster_state = ClusterState::New;
        Ok(config)
    }

    /// The start file of data dir `dir`, if it holds one.
    pub fn load(dir: &Path) -> Result<Option<StartFile>, InitError> {
        // A data dir that is no directory is the data dir's check to
        // report, with its own words.
        if !dir.is_dir() {
            return Ok(None);
        }
        let path = dir.join(START_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(InitError::Read {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })
            }
        };
        Self::parse(&text)
            .map(Some)
            .map_err(|reason| InitError::Read {
                path: path.display().to_string(),
                reason,
            })
    }

    /// Read a start file's text (unchecked: see [`StartFile::check`]).
    pub fn parse(text: &str) -> Result<StartFile, String> {
        toml::from_str(text).map_err(|e| e.message().to_string())
    }
}

/// Write a new data dir `dir` holding `file`; refuses a dir that holds
/// anything. Returns the start file's path.
pub fn init(dir: &Path, file: &StartFile) -> Result<PathBuf, InitError> {
    file.check()?;
    let write_err = |path: &Path, source| InitError::Write {
        path: path.display().to_string(),
        source,
    };
    if let Ok(mut entries) = std::fs::read_dir(dir) {
        if let Some(first) = entries.next() {
            let first = first
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .unwrap_or_default();
            return Err(InitError::NotEmpty {
                dir: dir.display().to_string(),
                first,
            });
        }
    } else if dir.exists() {
        return Err(InitError::NotEmpty {
            dir: dir.display().to_string(),
            first: "a file, not a directory".into(),
        });
    }
    std::fs::create_dir_all(dir).map_err(|e| write_err(dir, e))?;
    // A comment is one line of printable text: a path with a newline or
    // another control character in it is written quoted and escaped.
    let shown = dir.display().to_string();
    let shown = if shown.chars().any(char::is_control) {
        format!("{shown:?}")
    } else {
        shown
    };
    let text = format!(
        "# This member's configuration, written by `raftcd storage init`.\n\
         # Start it with: raftcd --data-dir {shown}\n{}",
        toml::to_string(file).map_err(|e| InitError::Read {
            path: dir.display().to_string(),
            reason: e.to_string(),
        })?
    );
    let path = dir.join(START_FILE);
    let tmp = dir.join(format!("{START_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(|e| write_err(&tmp, e))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| write_err(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| write_err(&path, e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| write_err(dir, e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> StartFile {
        StartFile {
            name: "n1".into(),
            token: "t".into(),
            client_url: "http://127.0.0.1:2379".into(),
            peer_url: "http://127.0.0.1:2380".into(),
            initial_cluster: "n1=http://127.0.0.1:2380,n2=http://127.0.0.1:3380".into(),
        }
    }

    #[test]
    fn init_writes_a_start_file_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("n1.raftcd");
        init(&dir, &file()).unwrap();
        assert_eq!(StartFile::load(&dir).unwrap(), Some(file()));
        let c = file().apply(Config::embedded("x")).unwrap();
        assert_eq!(c.name, "n1");
        assert_eq!(c.initial_cluster.len(), 2);
        assert_eq!(c.initial_cluster_token, "t");
        let e = init(&dir, &file()).unwrap_err().to_string();
        assert!(e.contains("is not empty (it holds raftcd.toml)"), "{e}");
    }

    #[test]
    fn init_checks_what_a_member_would() {
        let tmp = tempfile::tempdir().unwrap();
        let mut f = file();
        f.initial_cluster = "n2=http://127.0.0.1:3380".into();
        let e = init(tmp.path(), &f).unwrap_err().to_string();
        assert!(e.contains("no entry for this member's name \"n1\""), "{e}");
        let mut f = file();
        f.peer_url = "http://127.0.0.1:9999".into();
        let e = init(tmp.path(), &f).unwrap_err().to_string();
        assert!(e.contains("but --peer-url is http://127.0.0.1:9999"), "{e}");
        let mut f = file();
        f.client_url = "127.0.0.1:2379".into();
        assert!(init(tmp.path(), &f).is_err());
        assert!(
            StartFile::load(tmp.path()).unwrap().is_none(),
            "nothing written"
        );
    }

    /// Found by the `start_file` fuzz target: the data dir's path went into
    /// the file's first comment as it was, so a name with a newline or a
    /// DEL (`{name}.raftcd` is init's default dir) made a start file that
    /// could not be read back, or added lines to it.
    #[test]
    fn a_data_dir_named_with_control_characters_reads_back() {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["\u{7f}", "a\n[x]", "tab\there"] {
            let mut f = file();
            f.name = name.into();
            f.initial_cluster = format!("{name}=http://127.0.0.1:2380");
            let dir = tmp.path().join(format!("{name}.raftcd"));
            init(&dir, &f).unwrap();
            assert_eq!(StartFile::load(&dir).unwrap(), Some(f), "{name:?}");
        }
    }
}
