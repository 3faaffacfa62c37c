//! Many streams from one machine: `--local-addresses` (the connections' source addresses,
//! seen by the server), its usage errors, and an address that cannot be bound. The
//! automatic loopback spread is a pure decision (`transport::source::auto_spread`, unit
//! tested); 100,000 streams are measured by `scripts/many-streams`, not here.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::support::{
    self, chat_completion, config_error, write_file, Run, ScriptedServer, CHAT_REPLY,
};

/// A server answering every request of every connection.
fn answering() -> ScriptedServer {
    ScriptedServer::start(|conn| {
        while conn.request().is_some() {
            conn.json(&chat_completion(CHAT_REPLY))?;
        }
        Ok(())
    })
}

/// How many requests came from each client address.
fn by_peer(server: &ScriptedServer) -> BTreeMap<IpAddr, usize> {
    let mut peers = BTreeMap::new();
    for r in server.requests() {
        let ip = r.peer.expect("the request's peer address").ip();
        *peers.entry(ip).or_insert(0) += 1;
    }
    peers
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn each_new_connection_leaves_from_the_next_local_address() {
    let _gate = support::shared();
    let server = answering();
    // A new connection per request: 30 connections, dealt round-robin over 3 addresses.
    let run = Run::profile(&[
        "--url",
        &server.url(),
        "-m",
        "m",
        "--request-count",
        "30",
        "--concurrency",
        "3",
        "--connection-reuse-strategy",
        "never",
        "--local-addresses",
        "127.0.0.2-127.0.0.4",
    ])
    .run();
    run.ok();
    assert_eq!(run.stat("request_count", "avg"), 30.0, "{}", run.show());
    let peers = by_peer(&server);
    let expected: BTreeMap<IpAddr, usize> = ips(&["127.0.0.2", "127.0.0.3", "127.0.0.4"])
        .into_iter()
        .map(|ip| (ip, 10))
        .collect();
    assert_eq!(peers, expected, "requests per client address");
    // Without the flag, the kernel's choice: 127.0.0.1 (nothing said on stderr).
    let plain = answering();
    let run = Run::profile(&[
        "--url",
        &plain.url(),
        "-m",
        "m",
        "--request-count",
        "4",
        "--concurrency",
        "2",
    ])
    .run();
    run.ok();
    assert_eq!(
        by_peer(&plain).into_keys().collect::<Vec<_>>(),
        ips(&["127.0.0.1"])
    );
    assert!(!run.show().contains("spreading"), "{}", run.show());
}

#[test]
fn pooled_connections_from_a_config_file_key_use_every_address() {
    let _gate = support::shared();
    let server = answering();
    let tmp = tempfile::tempdir().unwrap();
    let yaml = format!(
        "benchmark:\n  url: {}\n  model: m\n  request_count: 24\n  concurrency: 6\n  \
         local_addresses: 127.0.0.2,127.0.0.3, 127.0.0.4\n",
        server.url()
    );
    let file = write_file(tmp.path(), "bench.yaml", &yaml);
    let run = Run::new(&["--config", file.to_str().unwrap()])
        .with_artifacts()
        .run();
    run.ok();
    assert_eq!(run.stat("request_count", "avg"), 24.0, "{}", run.show());
    let peers = by_peer(&server);
    assert_eq!(
        peers.keys().copied().collect::<Vec<_>>(),
        ips(&["127.0.0.2", "127.0.0.3", "127.0.0.4"]),
        "{peers:?}"
    );
    assert_eq!(peers.values().sum::<usize>(), 24);
    assert_eq!(
        run.json()["input_config"]["endpoint"]["local_addresses"],
        serde_json::json!(["127.0.0.2", "127.0.0.3", "127.0.0.4"])
    );
}

#[test]
fn bad_local_addresses_are_usage_errors_naming_the_value() {
    let url = "http://127.0.0.1:9";
    for (value, says) in [
        (
            "127.0.0.9-127.0.0.2",
            "`127.0.0.9-127.0.0.2` runs backwards",
        ),
        ("127.0.0.2-127.0.1.2", "more than one /24"),
        ("localhost", "`localhost` is not an IP address"),
        ("127.0.0.2,::1", "mixes address families"),
        ("127.0.0.2,127.0.0.2", "`127.0.0.2` is listed twice"),
    ] {
        let msg = config_error(&["--url", url, "-m", "m", "--local-addresses", value]);
        assert!(msg.contains(says), "{value}: {msg}");
        assert!(msg.contains("--local-addresses"), "{value}: {msg}");
    }
    // The family of the target.
    let msg = config_error(&["--url", url, "-m", "m", "--local-addresses", "::1"]);
    assert!(msg.contains("::1") && msg.contains("127.0.0.1"), "{msg}");
    let msg = config_error(&["--url", "mock", "--local-addresses", "fd00::1-fd00::4"]);
    assert!(msg.contains("fd00::1") && msg.contains("IPv6"), "{msg}");
    let msg = config_error(&[
        "--url",
        "http://[::1]:9",
        "-m",
        "m",
        "--local-addresses",
        "127.0.0.2",
    ]);
    assert!(msg.contains("127.0.0.2") && msg.contains("::1"), "{msg}");
    // End to end: exit 2, one line.
    let line = Run::profile(&["--url", url, "-m", "m", "--local-addresses", "127.0.0.300"])
        .run()
        .assert_usage_error();
    assert!(line.contains("127.0.0.300"), "{line}");
}

#[test]
fn an_address_that_is_not_local_fails_before_any_request() {
    let _gate = support::shared();
    // TEST-NET-3 is never a local address; nothing listens on the port either, so a hang
    // or a connection error per request would show.
    let closed = support::closed_port();
    let url = closed.url("");
    let out = Run::profile(&[
        "--url",
        &url,
        "-m",
        "m",
        "--request-count",
        "5",
        "--local-addresses",
        "127.0.0.2,203.0.113.7",
    ])
    .run();
    let line = out.assert_usage_error();
    assert!(line.contains("203.0.113.7"), "{line}");
    assert!(line.contains("not an address of this machine"), "{line}");
}
