//! The memory budget on the worker side, on a real capture: 200 connections open at once,
//! each holding a request whose body is half sent (`tests/fixtures/held-uploads.pcap`,
//! recorded by `scripts/record_held_uploads.py`: Python sockets against a Python server on
//! loopback, tcpdump).
//!
//! With the default budget nothing is evicted and every upload pairs with its answer. With
//! a budget far below what the capture holds at its peak (1 MiB, set through the library:
//! the config refuses less than 32 MiB, and a fixture big enough to fill 32 MiB would not
//! be small), the flow and HTTP tables evict their least recently active connections, count
//! it per table and as `evicted` closes, stay within their shares, and the summary's
//! `memory` section reports it; the outcome is the same on every run.

use std::path::PathBuf;

use shieldtap::budget::{Budget, Table};
use shieldtap::capture::Progress;
use shieldtap::config::Config;
use shieldtap::output::Summary;
use shieldtap::runtime::{self, Outputs};

const CONNECTIONS: u64 = 200;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/held-uploads.pcap")
}

fn replay(budget: Budget, workers: usize) -> Summary {
    let mut cfg = Config::default();
    cfg.runtime.budget = budget;
    let rules = shieldtap::rules::builtin().expect("built-in rules");
    runtime::replay(
        &cfg,
        rules,
        &[fixture()],
        workers,
        Outputs::default(),
        &Progress::default(),
    )
    .expect("replay")
}

#[test]
fn default_budget_evicts_nothing_and_pairs_every_upload() {
    let s = replay(Budget::default(), 2);
    assert_eq!(s.http.requests, CONNECTIONS);
    assert_eq!(s.http.paired, CONNECTIONS, "{:?}", s.http);
    for (name, u) in &s.memory.tables {
        assert_eq!(u.evictions, 0, "{name}: {u:?}");
    }
    assert_eq!(s.reassembly.flows_closed.get("evicted"), None);
    // Shares of the default budget, summed over the two workers' halves.
    let b = Budget::default();
    assert_eq!(
        s.memory.tables["flows"].limit,
        2 * b.share_of(Table::Flows, 2) as u64
    );
    assert_eq!(
        s.memory.tables["tokens"].limit,
        b.share(Table::Tokens) as u64
    );
}

#[test]
fn small_budget_evicts_least_recent_connections_and_reports_them() {
    let budget = Budget::mib(1);
    let s = replay(budget, 2);
    let m = &s.memory;
    let (flows, http, streams) = (m.tables["flows"], m.tables["http"], m.tables["streams"]);
    eprintln!(
        "budget 1 MiB, 2 workers: flows {flows:?}, http {http:?}, streams {streams:?}; \
         requests {}, transactions {}, paired {}, closes {:?}",
        s.http.requests, s.http.transactions, s.http.paired, s.reassembly.flows_closed
    );
    assert_eq!(m.budget_bytes, 1 << 20);
    // 200 flow entries do not fit in 2 × 62 KB, nor 200 half bodies in 2 × 52 KB.
    assert!(flows.evictions > 0, "{flows:?}");
    assert!(http.evictions > 0, "{http:?}");
    // Loopback delivers in order: nothing waits in reassembly buffers.
    assert_eq!(streams.evictions, 0);
    let evicted_closes = s
        .reassembly
        .flows_closed
        .get("evicted")
        .copied()
        .unwrap_or(0);
    assert_eq!(
        evicted_closes,
        flows.evictions + http.evictions + streams.evictions
    );
    for t in [Table::Flows, Table::Streams, Table::Http] {
        let u = m.tables[t.as_str()];
        assert_eq!(u.limit, 2 * budget.share_of(t, 2) as u64, "{t:?}");
        assert!(u.bytes <= u.limit, "{t:?} over its share: {u:?}");
    }
    assert_eq!(
        m.accounted_bytes,
        m.tables.values().map(|u| u.bytes).sum::<u64>()
    );
    // Every request is still reported, once; an evicted connection's upload is flushed as
    // for any close (cut body, no answer), and what follows it is picked up mid-stream.
    assert_eq!(s.http.requests, CONNECTIONS);
    assert_eq!(s.http.by_method_class.get("POST"), Some(&CONNECTIONS));
    assert!(s.http.paired < CONNECTIONS, "{:?}", s.http);
    let cut = s
        .http
        .anomalies_by_kind
        .get("truncated-body")
        .copied()
        .unwrap_or(0);
    assert_eq!(cut, CONNECTIONS - s.http.paired, "{:?}", s.http);
    // Deterministic on packet time: the same evictions on every run.
    let again = replay(budget, 2);
    assert_eq!(again.memory, s.memory);
    assert_eq!(again.http.paired, s.http.paired);
}
