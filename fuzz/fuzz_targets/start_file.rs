//! The start file `raftcd.toml` (`init::StartFile`, `storage::START_FILE`)
//! from arbitrary text, or from a well-formed file with arbitrary values
//! (see `text`): parsing never panics; a parsed file serialized
//! again reads back equal; one that passes `StartFile::check` configures a
//! member (`StartFile::apply`, `Config::validate` as `Flags::into_config`
//! runs them), and `raftcd storage init` with it writes a data dir (named
//! `{name}.raftcd`, init's default) whose start file `StartFile::load`
//! reads back equal.
#![no_main]
use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use raftcd::init::{init, StartFile};
use raftcd::Config;

fn base() -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    base.join(format!("raftcd-fuzz-start-{}", std::process::id()))
}

/// The text to parse: the input as it is (first byte even), or (odd) a
/// well-formed file whose five values are the rest of the input split at
/// `|`, so the checks and `storage init` get values worth checking.
fn text(data: &[u8]) -> Option<String> {
    let (&mode, rest) = data.split_first()?;
    let rest = std::str::from_utf8(rest).ok()?;
    if mode % 2 == 0 {
        return Some(rest.to_string());
    }
    let mut v = rest.split('|').map(str::to_string);
    let mut next = |default: &str| v.next().unwrap_or_else(|| default.to_string());
    let name = next("n1");
    let file = StartFile {
        token: next("t"),
        client_url: next("http://127.0.0.1:2379"),
        peer_url: next("http://127.0.0.1:2380"),
        initial_cluster: next(&format!("{name}=http://127.0.0.1:2380")),
        name,
    };
    toml::to_string(&file).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some(text) = text(data) else {
        return;
    };
    let Ok(file) = StartFile::parse(&text) else {
        return;
    };
    let written = toml::to_string(&file).expect("a start file serializes");
    assert_eq!(StartFile::parse(&written), Ok(file.clone()), "{written}");
    if file.check().is_err() {
        assert!(file.apply(Config::embedded("fuzz.raftcd")).is_err());
        return;
    }
    let config = file
        .apply(Config::embedded("fuzz.raftcd"))
        .expect("a checked start file applies");
    let _ = config.validate();
    // `raftcd storage init` with these settings and its default data dir.
    if file.name.contains('/') || file.name.contains('\0') || file.name.len() > 200 {
        return;
    }
    let base = base();
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).expect("fuzz dir");
    let dir = base.join(format!("{}.raftcd", file.name));
    init(&dir, &file).expect("storage init with a checked file");
    let loaded = StartFile::load(&dir);
    assert_eq!(
        loaded.as_ref().ok(),
        Some(&Some(file.clone())),
        "{loaded:?} from {}",
        std::fs::read_to_string(dir.join(raftcd::storage::START_FILE)).unwrap_or_default()
    );
});
