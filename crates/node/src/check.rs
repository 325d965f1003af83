//! `shoal config check`: every problem in an agent or seed config, each with
//! its key and the reason, instead of the first one serde meets. The agent and
//! the seed run the same check before they start and refuse with the same
//! messages.
//!
//! A config is checked against a schema (each key's kind and whether it is
//! required), then for what only the running program would otherwise find
//! out: files that must exist and load (identity, trusted keys, the deploy
//! key), addresses that must parse, numbers that must be in range.

use std::path::Path;

/// One problem: the key (dotted for tables, e.g. `hooks.health.timeout_s`;
/// empty for the file as a whole) and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub key: String,
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.key, self.reason)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Str,
    /// A file that must exist (and load, see the semantic checks).
    File,
    /// A directory that is made if missing.
    Dir,
    /// A file that is made (or appended to) if missing.
    OutFile,
    Addr,
    /// An address on the loopback interface (for pages without TLS or login).
    LoopbackAddr,
    Bool,
    /// A whole number, at least the given minimum.
    Int(i64),
    /// A path MTU in UDP payload bytes: 0 (unknown) or what QUIC allows.
    Mtu,
    /// A number greater than zero.
    Seconds,
    Files,
    Hooks,
}

/// A key of a config: its name, kind, whether it must be there, and what it is.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    pub doc: &'static str,
}

const fn key(name: &'static str, kind: Kind, required: bool, doc: &'static str) -> Key {
    Key {
        name,
        kind,
        required,
        doc,
    }
}

/// `agent.toml`.
pub const AGENT: &[Key] = &[
    key(
        "host",
        Kind::Str,
        true,
        "this host's name, as in its identity",
    ),
    key(
        "dc",
        Kind::Str,
        true,
        "datacenter label, as in its identity",
    ),
    key(
        "root",
        Kind::Dir,
        true,
        "the shoal root: store/, releases/, current",
    ),
    key(
        "identity",
        Kind::File,
        true,
        "identity file from `shoal cluster issue`",
    ),
    key("trust", Kind::Files, true, "trusted deploy public keys"),
    key("tracker", Kind::Addr, true, "the tracker's address"),
    key("tracker_host", Kind::Str, true, "the tracker's host name"),
    key("listen", Kind::Addr, true, "where to accept peers"),
    key(
        "advertise",
        Kind::Addr,
        false,
        "the address peers should dial",
    ),
    key(
        "auto_activate",
        Kind::Bool,
        false,
        "activate as soon as verified",
    ),
    key(
        "upload_limit",
        Kind::Int(0),
        false,
        "bytes/s up, 0 for none",
    ),
    key(
        "download_limit",
        Kind::Int(0),
        false,
        "bytes/s down, 0 for none",
    ),
    key(
        "upload_slots",
        Kind::Int(1),
        false,
        "pieces uploaded at once",
    ),
    key("reserve", Kind::Int(0), false, "bytes to keep free"),
    key(
        "path_bandwidth",
        Kind::Int(1),
        false,
        "bytes/s of this host's link (sizes windows)",
    ),
    key(
        "path_rtt_ms",
        Kind::Int(1),
        false,
        "RTT the request window is sized for",
    ),
    key(
        "path_mtu",
        Kind::Mtu,
        false,
        "UDP payload bytes every path carries (0: probe)",
    ),
    key("poll_ms", Kind::Int(50), false, "tracker report interval"),
    key(
        "locality",
        Kind::Bool,
        false,
        "prefer peers in this datacenter",
    ),
    key(
        "metrics",
        Kind::Addr,
        false,
        "serve Prometheus metrics here",
    ),
    key("fault_corrupt_uploads", Kind::Bool, false, "tests only"),
    key("hooks", Kind::Hooks, false, "rollout hooks"),
];

/// `seed.toml`.
pub const SEED: &[Key] = &[
    key(
        "host",
        Kind::Str,
        true,
        "this host's name, as in its identity",
    ),
    key("dc", Kind::Str, true, "datacenter label"),
    key("store", Kind::Dir, true, "the chunk store"),
    key("key", Kind::File, true, "the deploy key's secret file"),
    key(
        "trust",
        Kind::Files,
        true,
        "more deploy keys the tracker accepts",
    ),
    key("identity", Kind::File, true, "identity file"),
    key("listen", Kind::Addr, true, "where to accept agents"),
    key(
        "advertise",
        Kind::Addr,
        false,
        "the address agents should dial",
    ),
    key(
        "upload_limit",
        Kind::Int(0),
        false,
        "bytes/s up, 0 for none",
    ),
    key(
        "upload_slots",
        Kind::Int(1),
        false,
        "pieces uploaded at once",
    ),
    key("deploy_log", Kind::OutFile, false, "the deploy log file"),
    key(
        "metrics",
        Kind::Addr,
        false,
        "serve Prometheus metrics here",
    ),
    key(
        "web",
        Kind::LoopbackAddr,
        false,
        "serve the read-only fleet page here",
    ),
    key(
        "locality",
        Kind::Bool,
        false,
        "serve requests from other datacenters first",
    ),
    key(
        "path_mtu",
        Kind::Mtu,
        false,
        "UDP payload bytes every path carries (0: probe)",
    ),
];

const HOOK_NAMES: &[&str] = &["depool", "restart", "health", "repool"];
const HOOK: &[Key] = &[
    key("command", Kind::Str, true, "run by /bin/sh -c"),
    key(
        "timeout_s",
        Kind::Seconds,
        false,
        "seconds an attempt may take",
    ),
    key("retries", Kind::Int(0), false, "further attempts"),
    key(
        "retry_delay_s",
        Kind::Seconds,
        false,
        "seconds between attempts",
    ),
];

/// Which program a config is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Agent,
    Seed,
}

/// Tells an agent config from a seed config by the keys only one has.
/// A file that is no valid TOML counts as an agent config (the check then
/// reports the syntax error).
pub fn which(text: &str) -> Option<Which> {
    let Ok(t) = text.parse::<toml::Table>() else {
        return Some(Which::Agent);
    };
    match (t.contains_key("root"), t.contains_key("store")) {
        (true, false) => Some(Which::Agent),
        (false, true) => Some(Which::Seed),
        _ => None,
    }
}

/// Every problem in `text`; relative paths are taken from `base` (the
/// programs read them from their working directory).
pub fn check(text: &str, which: Which, base: &Path) -> Vec<Problem> {
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            return vec![Problem {
                key: String::new(),
                reason: format!("not valid TOML: {}", e.to_string().trim()),
            }];
        }
    };
    let schema = match which {
        Which::Agent => AGENT,
        Which::Seed => SEED,
    };
    let mut out = Vec::new();
    check_table(&table, schema, "", base, &mut out);
    if which == Which::Agent
        && let Some(toml::Value::Table(hooks)) = table.get("hooks")
        && let Some(toml::Value::Boolean(true)) = table.get("auto_activate")
        && !hooks.is_empty()
    {
        out.push(Problem {
            key: "auto_activate".into(),
            reason: "true with hooks: releases would switch as soon as they arrive, outside any rollout's batches".into(),
        });
    }
    out
}

fn check_table(t: &toml::Table, schema: &[Key], prefix: &str, base: &Path, out: &mut Vec<Problem>) {
    let name = |k: &str| format!("{prefix}{k}");
    for k in t.keys() {
        if !schema.iter().any(|s| s.name == k) {
            let known: Vec<&str> = schema.iter().map(|s| s.name).collect();
            out.push(Problem {
                key: name(k),
                reason: format!("unknown key (known: {})", known.join(", ")),
            });
        }
    }
    for s in schema {
        match t.get(s.name) {
            None if s.required => out.push(Problem {
                key: name(s.name),
                reason: format!("missing ({})", s.doc),
            }),
            None => {}
            Some(v) => check_value(v, s, &name(s.name), base, out),
        }
    }
}

fn check_value(v: &toml::Value, s: &Key, key: &str, base: &Path, out: &mut Vec<Problem>) {
    let mut bad = |reason: String| {
        out.push(Problem {
            key: key.to_string(),
            reason,
        })
    };
    let path = |p: &str| {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    use toml::Value as V;
    match (s.kind, v) {
        (Kind::Str, V::String(x)) if x.trim().is_empty() => bad("empty".into()),
        (Kind::Str, V::String(_)) => {}
        (Kind::File, V::String(x)) => {
            if let Err(e) = std::fs::metadata(path(x)) {
                bad(format!("{}: {e}", path(x).display()));
            }
        }
        (Kind::Dir, V::String(x)) => {
            // Made on first start if missing; something else in its place is an error.
            let p = path(x);
            if p.exists() && !p.is_dir() {
                bad(format!("{}: exists and is no folder", p.display()));
            }
        }
        (Kind::OutFile, V::String(x)) => {
            let p = path(x);
            if p.is_dir() {
                bad(format!("{}: is a folder, not a file", p.display()));
            }
        }
        (Kind::Addr, V::String(x)) => {
            if x.parse::<std::net::SocketAddr>().is_err() {
                bad(format!(
                    "{x:?} is not an address with a port, like \"10.0.0.1:7400\""
                ));
            }
        }
        (Kind::LoopbackAddr, V::String(x)) => match x.parse::<std::net::SocketAddr>() {
            Ok(a) if a.ip().is_loopback() => {}
            Ok(_) => bad(format!(
                "{x:?} is not on loopback: the page has no TLS or login of its own; \
                 bind it to 127.0.0.1 and reach it through an SSH tunnel or a TLS proxy"
            )),
            Err(_) => bad(format!(
                "{x:?} is not an address with a port, like \"127.0.0.1:9466\""
            )),
        },
        (Kind::Bool, V::Boolean(_)) => {}
        (Kind::Int(min), V::Integer(n)) if *n < min => {
            bad(format!("{n} is below the minimum {min}"))
        }
        (Kind::Int(_), V::Integer(_)) => {}
        (Kind::Mtu, V::Integer(n))
            if *n != 0
                && !(i64::from(shoal_net::INITIAL_MTU)..=i64::from(shoal_net::MAX_MTU))
                    .contains(n) =>
        {
            bad(format!(
                "{n} is no path MTU: 0 (unknown: probe) or {} to {} bytes of UDP payload",
                shoal_net::INITIAL_MTU,
                shoal_net::MAX_MTU
            ))
        }
        (Kind::Mtu, V::Integer(_)) => {}
        (Kind::Seconds, V::Float(x)) if !(*x > 0.0 && x.is_finite()) => {
            bad(format!("{x} must be above 0"))
        }
        (Kind::Seconds, V::Integer(n)) if *n <= 0 => bad(format!("{n} must be above 0")),
        (Kind::Seconds, V::Float(_) | V::Integer(_)) => {}
        (Kind::Files, V::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                match item {
                    V::String(x) => {
                        if let Err(e) = std::fs::metadata(path(x)) {
                            out.push(Problem {
                                key: format!("{key}[{i}]"),
                                reason: format!("{}: {e}", path(x).display()),
                            });
                        }
                    }
                    other => out.push(Problem {
                        key: format!("{key}[{i}]"),
                        reason: format!("expected a path, found {}", other.type_str()),
                    }),
                }
            }
        }
        (Kind::Hooks, V::Table(hooks)) => {
            for (h, v) in hooks {
                let key = format!("{key}.{h}");
                if !HOOK_NAMES.contains(&h.as_str()) {
                    out.push(Problem {
                        key,
                        reason: format!("unknown hook (known: {})", HOOK_NAMES.join(", ")),
                    });
                    continue;
                }
                match v {
                    V::Table(t) => check_table(t, HOOK, &format!("{key}."), base, out),
                    other => out.push(Problem {
                        key,
                        reason: format!("expected a table, found {}", other.type_str()),
                    }),
                }
            }
        }
        (kind, other) => bad(format!(
            "expected {}, found {}",
            expected(kind),
            other.type_str()
        )),
    }
}

fn expected(k: Kind) -> &'static str {
    match k {
        Kind::Str => "a string",
        Kind::File | Kind::Dir | Kind::OutFile => "a path (string)",
        Kind::Addr => "an address (string)",
        Kind::LoopbackAddr => "a loopback address (string)",
        Kind::Bool => "true or false",
        Kind::Int(_) | Kind::Mtu => "a whole number",
        Kind::Seconds => "a number of seconds",
        Kind::Files => "a list of paths",
        Kind::Hooks => "a table",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_listed_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("id"), "x").unwrap();
        let text = r#"
host = ""
dc = "ams"
root = "id"
identity = "id"
trust = ["missing.pub", 3]
tracker = "10.0.0.1"
listen = "0.0.0.0:7401"
upload_slots = 0
poll_ms = "fast"
colour = "blue"
[hooks.health]
command = "true"
timeout_s = 0
[hooks.reboot]
command = "x"
"#;
        let p = check(text, Which::Agent, dir.path());
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        for k in [
            "host",
            "root",
            "trust[0]",
            "trust[1]",
            "tracker",
            "tracker_host",
            "upload_slots",
            "poll_ms",
            "colour",
            "hooks.health.timeout_s",
            "hooks.reboot",
        ] {
            assert!(keys.contains(&k), "{k} not reported: {p:#?}");
        }
        assert!(
            !keys.contains(&"identity") && !keys.contains(&"dc"),
            "{p:#?}"
        );
        assert_eq!(which(text), Some(Which::Agent));
        assert_eq!(check("host = ", Which::Agent, dir.path())[0].key, "");
    }

    #[test]
    fn the_fleet_page_binds_only_to_loopback() {
        let dir = tempfile::tempdir().unwrap();
        let page = |addr: &str| {
            let text = format!("web = {addr:?}");
            check(&text, Which::Seed, dir.path())
                .into_iter()
                .filter(|p| p.key == "web")
                .map(|p| p.reason)
                .collect::<Vec<_>>()
        };
        assert!(page("127.0.0.1:9466").is_empty());
        assert!(page("[::1]:9466").is_empty());
        let public = page("0.0.0.0:9466");
        assert_eq!(public.len(), 1);
        assert!(public[0].contains("not on loopback"), "{public:?}");
        assert!(page("10.1.2.3:80")[0].contains("SSH tunnel"));
        assert!(page("localhost")[0].contains("not an address"));
    }

    #[test]
    fn a_path_mtu_is_zero_or_a_size_quic_allows() {
        let dir = tempfile::tempdir().unwrap();
        for which in [Which::Agent, Which::Seed] {
            let mtu = |v: &str| {
                check(&format!("path_mtu = {v}"), which, dir.path())
                    .into_iter()
                    .filter(|p| p.key == "path_mtu")
                    .map(|p| p.reason)
                    .collect::<Vec<_>>()
            };
            for ok in ["0", "1200", "1452", "9000", "65527"] {
                assert!(mtu(ok).is_empty(), "{ok}: {:?}", mtu(ok));
            }
            for bad in ["1", "1199", "65528", "-1"] {
                let r = mtu(bad);
                assert_eq!(r.len(), 1, "{bad}: {r:?}");
                assert!(r[0].contains("no path MTU"), "{r:?}");
            }
            assert!(mtu("\"big\"")[0].contains("a whole number"));
        }
    }
}
