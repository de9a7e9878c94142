//! The replica table (`--replica-table`, `replicas::ReplicaTable::parse`)
//! from arbitrary text, or from well-formed TOML with arbitrary values
//! (see `text`): never panics; a refusal names a line inside the
//! text; an accepted table keeps its promises (rows sorted by unique id, a
//! member among them, `max_voters` 1, 3, 5 or 7, `dead_after` at least two
//! heartbeats) and every one of its rows configures a member
//! (`Config::with_replica_table`, then `Config::validate`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use raftcd::replicas::ReplicaTable;
use raftcd::Config;

/// A TOML string.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The text to parse: the input as it is (first byte even), or (odd) a
/// well-formed table built from the rest: the first byte's bits pick the
/// optional keys and the number of rows; fields split at `|` give the
/// token, the optional values and, per row, the id, the name and the
/// URLs' host and port.
fn text(data: &[u8]) -> Option<String> {
    let (&mode, rest) = data.split_first()?;
    let rest = std::str::from_utf8(rest).ok()?;
    if mode % 2 == 0 {
        return Some(rest.to_string());
    }
    let mut f = rest.split('|');
    let mut next = || f.next().unwrap_or("");
    let mut out = format!("token = {}\n", quoted(next()));
    let num = |s: &str| s.parse::<i64>().unwrap_or(s.len() as i64 * 1000);
    for (bit, key) in [
        (1, "mode"),
        (2, "heartbeat_interval_ms"),
        (4, "dead_after_ms"),
        (8, "max_voters"),
    ] {
        if mode & (bit << 1) == 0 {
            continue;
        }
        let value = next();
        if key == "mode" {
            out.push_str(&format!(
                "mode = {}\n",
                quoted(if value.is_empty() { "fixed" } else { value })
            ));
        } else {
            out.push_str(&format!("{key} = {}\n", num(value)));
        }
    }
    for _ in 0..(mode >> 5) {
        let (id, name, host, port) = (next(), next(), next(), next());
        out.push_str(&format!(
            "[[replica]]\nid = {}\nname = {}\nclient_url = {}\npeer_url = {}\n",
            num(id),
            quoted(name),
            quoted(&format!("http://{host}:{port}")),
            quoted(&format!("http://{host}:{}", num(port) + 1)),
        ));
        if id.len() % 3 == 1 {
            out.push_str("run_node = false\n");
        }
    }
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let Some(text) = text(data) else {
        return;
    };
    let text = text.as_str();
    match ReplicaTable::parse("fuzz.toml", text) {
        Ok(table) => {
            assert!(table.replicas.windows(2).all(|w| w[0].id < w[1].id));
            assert!(table.replicas.iter().all(|r| r.id >= 1));
            assert!(table.members().next().is_some());
            assert!(matches!(table.max_voters, 1 | 3 | 5 | 7));
            assert!(table.dead_after >= table.heartbeat_interval * 2);
            for r in table.replicas.iter().take(8) {
                let config = Config::embedded("fuzz.raftcd")
                    .with_replica_table(table.clone(), r.id)
                    .expect("every row of a checked table configures a member");
                assert_eq!(config.name, r.name);
                let _ = config.validate();
            }
        }
        Err(e) => {
            if let Some(line) = e.line {
                let lines = text.bytes().filter(|b| *b == b'\n').count() + 1;
                assert!((1..=lines).contains(&line), "line {line} of {lines}: {e}");
            }
            let _ = e.to_string();
        }
    }
});
