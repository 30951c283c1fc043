//! The memory budget: one figure (`[runtime] memory_budget_mib`) split into a share per
//! table that grows with traffic.
//!
//! Each table (flows, reassembly buffers, pending HTTP messages, the token cache, the
//! ordering buffer, per-rule keys, actors, objects, baselines, the route inventory, shared
//! addresses, the workers' memos of recent response scans) accounts its own bytes (an
//! estimate per entry: the entry's inline size plus what it owns on the heap), evicts its
//! least recently used entries when it reaches its share, and counts what it evicted.
//! Tables owned per worker or per detect shard split their share evenly between them.
//! Ground floor: vocabulary only, no stage is imported.

use serde::Serialize;

/// Default budget (`[runtime] memory_budget_mib`).
pub const DEFAULT_MIB: usize = 256;
/// Smallest budget accepted: below it the fixed costs (buffers, thread stacks) dominate.
pub const MIN_MIB: usize = 32;

/// A table that grows with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Connections (per worker): flow entries and their TCP state.
    Flows,
    /// Out-of-order and unread stream bytes held by reassembly (per worker).
    Streams,
    /// Pending HTTP messages and bodies being read (per worker).
    Http,
    /// Verified tokens (shared).
    Tokens,
    /// Events held to be released in packet-time order.
    Ordering,
    /// Per-rule keys and their windows (per detect shard).
    Keys,
    /// The actor registry.
    Actors,
    /// The object ownership map.
    Objects,
    /// Baselines of baseline detectors.
    Baselines,
    /// The route inventory and public-field learning.
    Inventory,
    /// Addresses tracked for sharing (carrier NAT).
    Shared,
    /// Recent response scans, by body (per worker).
    Scans,
    /// Recent content decodings, by encoded body (per worker).
    Decodes,
}

impl Table {
    /// Every table, in the order outputs list them.
    pub const ALL: [Table; 13] = [
        Table::Flows,
        Table::Streams,
        Table::Http,
        Table::Tokens,
        Table::Ordering,
        Table::Keys,
        Table::Actors,
        Table::Objects,
        Table::Baselines,
        Table::Inventory,
        Table::Shared,
        Table::Scans,
        Table::Decodes,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Table::Flows => "flows",
            Table::Streams => "streams",
            Table::Http => "http",
            Table::Tokens => "tokens",
            Table::Ordering => "ordering",
            Table::Keys => "keys",
            Table::Actors => "actors",
            Table::Objects => "objects",
            Table::Baselines => "baselines",
            Table::Inventory => "inventory",
            Table::Shared => "shared",
            Table::Scans => "scans",
            Table::Decodes => "decodes",
        }
    }

    /// The table's share of the budget, in thousandths. The shares add up to 1000.
    fn permille(self) -> usize {
        match self {
            Table::Flows => 120,
            Table::Streams => 100,
            Table::Http => 100,
            Table::Tokens => 40,
            Table::Ordering => 80,
            Table::Keys => 260,
            Table::Actors => 60,
            Table::Objects => 80,
            Table::Baselines => 40,
            Table::Inventory => 20,
            Table::Shared => 20,
            // A scan the memo answers saves walking and classifying a body (about 37,000
            // instructions on the realistic capture): 4 % rather than 2 % answered 28,000
            // more of its 387,797 scans with one worker, for 5 MiB (see `scan_memo`). Coded
            // responses are found there by their bytes as sent, so a hit saves decoding too
            // (about 40,000 instructions) and the memo of decodings serves what is left
            // (requests, HTTP/2, scan misses): 4.5 % and 1 % decoded 14,627 bodies and
            // scanned 46,931, 4 % and 1.5 % 16,080 and 51,327, 5 % and 0.5 % (twice the
            // slots, a power of two, for the same entries) 17,631 and 48,156. 6 % and 1 %
            // (the 1.5 % taken from `streams`, out-of-order bytes held by reassembly, which
            // no capture here comes near) decode 12,563 and scan 36,310: 2.2 % fewer
            // instructions than 4.5 %, for 3 MiB more peak RSS (150 MiB with one worker,
            // 158 with two). 7 % (another 1 % from `streams`) scans 33,502 (3.1 % fewer
            // instructions than 4.5 %): it took two workers to 159 to 161 MiB while each key's
            // state sat inline in its table; with the states boxed (5 to 6 MiB less), 147
            // and 157 MiB, for CPU 0.975x with one worker and 0.964x with two.
            Table::Scans => 70,
            Table::Decodes => 10,
        }
    }
}

/// The budget and its split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    bytes: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget::mib(DEFAULT_MIB)
    }
}

impl Budget {
    pub fn mib(mib: usize) -> Budget {
        Budget {
            bytes: mib.saturating_mul(1 << 20),
        }
    }

    pub fn bytes(self) -> usize {
        self.bytes
    }

    /// A table's share in bytes.
    pub fn share(self, t: Table) -> usize {
        self.bytes / 1000 * t.permille()
    }

    /// The share of one of `parts` owners of a table (workers, shards), at least 1 byte.
    pub fn share_of(self, t: Table, parts: usize) -> usize {
        (self.share(t) / parts.max(1)).max(1)
    }
}

/// What one table holds now and has evicted, as outputs report it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Bytes accounted now.
    pub bytes: u64,
    /// The table's share of the budget.
    pub limit: u64,
    pub entries: u64,
    /// Entries evicted because the table reached its share.
    pub evictions: u64,
}

impl Usage {
    /// Adds another owner's usage of the same table (workers, shards).
    pub fn add(&mut self, o: &Usage) {
        self.bytes += o.bytes;
        self.limit += o.limit;
        self.entries += o.entries;
        self.evictions += o.evictions;
    }
}

/// Usage of every table (the summary's `memory` section).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MemoryReport {
    pub budget_bytes: u64,
    /// Bytes accounted over all tables now.
    pub accounted_bytes: u64,
    /// Per table, in [`Table::ALL`] order.
    pub tables: std::collections::BTreeMap<&'static str, Usage>,
}

impl MemoryReport {
    pub fn new(b: Budget) -> MemoryReport {
        MemoryReport {
            budget_bytes: b.bytes() as u64,
            accounted_bytes: 0,
            tables: Table::ALL
                .iter()
                .map(|t| (t.as_str(), Usage::default()))
                .collect(),
        }
    }

    /// Adds one owner's usage of a table.
    pub fn add(&mut self, t: Table, u: &Usage) {
        self.tables.entry(t.as_str()).or_default().add(u);
        self.accounted_bytes = self.tables.values().map(|u| u.bytes).sum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_the_budget() {
        assert_eq!(Table::ALL.iter().map(|t| t.permille()).sum::<usize>(), 1000);
        let b = Budget::mib(256);
        let total: usize = Table::ALL.iter().map(|t| b.share(*t)).sum();
        assert!(total <= b.bytes() && total + 1000 > b.bytes(), "{total}");
        assert_eq!(b.share_of(Table::Keys, 4) * 4, b.share(Table::Keys) / 4 * 4);
        assert!(Budget::mib(0).share_of(Table::Flows, 8) >= 1);
    }

    #[test]
    fn report_sums_owners() {
        let mut r = MemoryReport::new(Budget::mib(64));
        let u = Usage {
            bytes: 10,
            limit: 20,
            entries: 1,
            evictions: 2,
        };
        r.add(Table::Keys, &u);
        r.add(Table::Keys, &u);
        r.add(Table::Flows, &u);
        assert_eq!(r.tables["keys"].bytes, 20);
        assert_eq!(r.tables["keys"].evictions, 4);
        assert_eq!(r.accounted_bytes, 30);
        assert_eq!(r.tables.len(), Table::ALL.len());
    }
}
