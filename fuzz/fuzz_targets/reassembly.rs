//! Arbitrary segment sequences into one flow table: must never panic, and buffered bytes
//! must stay within the configured cap.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use shieldtap::capture::Timestamp;
use shieldtap::decode::{TcpFlags, TcpSegment, TunnelId};
use shieldtap::reassembly::{
    CloseReason, ConnInfo, Direction, FlowTable, ReassemblyConfig, StreamHandler,
};

struct Sink(u64);

impl StreamHandler for Sink {
    type State = ();
    fn open(&mut self, _: &ConnInfo) {}
    fn data(&mut self, _: &mut (), _: &ConnInfo, _: Direction, b: &[u8], _: Timestamp) {
        self.0 += b.len() as u64;
    }
    fn gap(&mut self, _: &mut (), _: &ConnInfo, _: Direction, _: u64, _: Timestamp) {}
    fn close(&mut self, _: (), _: &ConnInfo, _: CloseReason, _: Timestamp) {}
}

const MAX_BUFFERED: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let cfg = ReassemblyConfig {
        max_flows: 8,
        max_buffered_bytes: MAX_BUFFERED,
        max_ooo_bytes_per_direction: 1024,
        max_ooo_segments_per_direction: 16,
        ..Default::default()
    };
    let mut table = FlowTable::new(cfg);
    let mut sink = Sink(0);
    let mut ts = 0u64;
    // Each record: 12-byte header (flow selector, direction+flags, seq, ack, time step,
    // payload length, extra wire length) then payload.
    let mut rest = data;
    while rest.len() >= 12 {
        let (h, tail) = rest.split_at(12);
        let flow = h[0] % 12;
        let forward = h[1] & 0x80 != 0;
        let flags = TcpFlags(h[1] & 0x3f);
        let seq = u32::from_le_bytes([h[2], h[3], h[4], h[5]]);
        let ack = u32::from_le_bytes([h[6], h[7], 0, 0]).wrapping_mul(977);
        ts += u64::from(h[8]) * 10_000_000;
        let len = usize::from(h[9]).min(tail.len());
        let extra = u32::from(h[10] & 0x0f);
        let (payload, tail) = tail.split_at(len);
        let c = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, flow)), 40000);
        let s = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1)), 80);
        let (src, dst) = if forward { (c, s) } else { (s, c) };
        let seg = TcpSegment {
            tunnel: TunnelId(u64::from(h[11] & 1)),
            src,
            dst,
            seq,
            ack,
            flags,
            window: 0,
            payload,
            wire_payload_len: len as u32 + extra,
        };
        table.process(&seg, Timestamp(ts), &mut sink);
        assert!(table.buffered_bytes() <= MAX_BUFFERED);
        rest = tail;
    }
    table.flush_all(&mut sink);
    assert_eq!(table.buffered_bytes(), 0);
});
