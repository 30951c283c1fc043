//! Replays a capture through the library's own stages (capture file reader, decoder, TCP
//! reassembly, HTTP/1 parser) and returns the HTTP transactions with their full requests
//! and responses, for tests that must look inside messages (response headers and bodies)
//! beyond what the `--transactions-out` record carries.
#![allow(dead_code)]

use std::path::Path;

use shieldtap::capture::{self, Progress, Timestamp};
use shieldtap::decode::{DecodeConfig, Decoded, Decoder, LinkType};
use shieldtap::http::{Dir, HttpConfig, HttpConn, HttpStats, Transaction};
use shieldtap::reassembly::{
    CloseReason, ConnInfo, Direction, FlowTable, ReassemblyConfig, StreamHandler,
};

struct Collect {
    cfg: HttpConfig,
    out: Vec<Transaction>,
    stats: HttpStats,
    /// The client port of each transaction in `out`.
    ports: Vec<u16>,
}

impl Collect {
    fn note_ports(&mut self, conn: &ConnInfo, c: &HttpConn) {
        let client = if c.swapped() {
            conn.server
        } else {
            conn.client
        };
        self.ports.resize(self.out.len(), client.port());
    }
}

fn dir(d: Direction) -> Dir {
    match d {
        Direction::ClientToServer => Dir::ToServer,
        Direction::ServerToClient => Dir::ToClient,
    }
}

impl StreamHandler for Collect {
    type State = HttpConn;

    fn open(&mut self, _: &ConnInfo) -> HttpConn {
        HttpConn::new()
    }

    fn data(&mut self, c: &mut HttpConn, i: &ConnInfo, d: Direction, b: &[u8], ts: Timestamp) {
        c.data(&self.cfg, dir(d), b, ts, &mut self.out, &mut self.stats);
        self.note_ports(i, c);
    }

    fn gap(&mut self, c: &mut HttpConn, i: &ConnInfo, d: Direction, len: u64, ts: Timestamp) {
        c.gap(&self.cfg, dir(d), len, ts, &mut self.out, &mut self.stats);
        self.note_ports(i, c);
    }

    fn close(&mut self, mut c: HttpConn, i: &ConnInfo, _: CloseReason, ts: Timestamp) {
        c.close(&self.cfg, ts, &mut self.out, &mut self.stats);
        self.note_ports(i, &c);
    }
}

/// Every HTTP/1 transaction in the capture at `path`, in the order the parser emitted them,
/// with the parser's counters.
pub fn transactions(path: &Path, cfg: HttpConfig) -> (Vec<Transaction>, HttpStats) {
    let (txs, stats) = transactions_with_ports(path, cfg);
    (txs.into_iter().map(|(_, t)| t).collect(), stats)
}

/// [`transactions`], each with its client's port.
pub fn transactions_with_ports(
    path: &Path,
    cfg: HttpConfig,
) -> (Vec<(u16, Transaction)>, HttpStats) {
    let mut decoder = Decoder::new(DecodeConfig::default());
    let mut table: FlowTable<Collect> = FlowTable::new(ReassemblyConfig::default());
    let mut handler = Collect {
        cfg,
        out: Vec::new(),
        stats: HttpStats::default(),
        ports: Vec::new(),
    };
    let mut cstats = capture::CaptureStats::default();
    capture::read_file(path, &Progress::default(), &mut cstats, &mut |f| {
        let Some(link) = LinkType::from_linktype(f.linktype) else {
            return;
        };
        if let Ok(Decoded::Tcp(seg)) = decoder.decode(link, f.data, f.ts) {
            table.process(&seg, f.ts, &mut handler);
        }
        table.advance(f.ts, &mut handler);
    })
    .unwrap_or_else(|e| panic!("reads {}: {e}", path.display()));
    table.flush_all(&mut handler);
    (
        handler.ports.into_iter().zip(handler.out).collect(),
        handler.stats,
    )
}
