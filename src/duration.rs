//! Durations as Go writes them, the way etcd's flags take them (and
//! `raftcd certs --expiry`): one parser for every flag.

use std::time::Duration;

/// A duration that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {0:?} (a number and a unit: ns, us, ms, s, m or h, e.g. 10m, 1m30s, 500ms)"
)]
pub struct DurationError(pub String);

/// Parse a Go duration string as etcd's flags take it: a sequence of decimal
/// numbers with units `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`, e.g. `10m`,
/// `1m30s`, `500ms`, `1.5s`. A bare `0` is zero.
pub fn parse_go_duration(s: &str) -> Result<Duration, DurationError> {
    let bad = || DurationError(s.to_string());
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += n * secs_per_unit;
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_go_duration("43800h").unwrap().as_secs(), 43800 * 3600);
        assert_eq!(
            parse_go_duration("500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            parse_go_duration("1.5s").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "10", "s", "h", "1x", "10d", "-1s", "1e400h"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }
}
