//! Reassembly throughput: in-order keep-alive streams and a reordered stream.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shieldtap::capture::Timestamp;
use shieldtap::decode::{TcpFlags, TcpSegment, TunnelId};
use shieldtap::reassembly::{
    CloseReason, ConnInfo, Direction, FlowTable, ReassemblyConfig, StreamHandler,
};

struct Count(u64);

impl StreamHandler for Count {
    type State = ();
    fn open(&mut self, _: &ConnInfo) {}
    fn data(&mut self, _: &mut (), _: &ConnInfo, _: Direction, b: &[u8], _: Timestamp) {
        self.0 += b.len() as u64;
    }
    fn gap(&mut self, _: &mut (), _: &ConnInfo, _: Direction, _: u64, _: Timestamp) {}
    fn close(&mut self, _: (), _: &ConnInfo, _: CloseReason, _: Timestamp) {}
}

fn segments(flows: u8, per_flow: u32, reorder: bool) -> Vec<(SocketAddr, SocketAddr, u32, u32)> {
    let s = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1)), 80);
    let mut v = Vec::new();
    for i in 0..per_flow {
        for f in 0..flows {
            let c = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, f)), 40000);
            let seq = 1 + i * 300;
            v.push((c, s, seq, 1 + i * 600));
            v.push((s, c, 1 + i * 600, seq + 300));
        }
    }
    if reorder {
        for pair in v.chunks_mut(4) {
            pair.swap(0, pair.len() - 1);
        }
    }
    v
}

fn bench(c: &mut Criterion) {
    let payload = [b'x'; 600];
    for (name, reorder) in [("in_order", false), ("reordered", true)] {
        let segs = segments(64, 200, reorder);
        let mut g = c.benchmark_group("reassembly");
        g.throughput(Throughput::Elements(segs.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut t = FlowTable::new(ReassemblyConfig::default());
                let mut sink = Count(0);
                for (k, (src, dst, seq, ack)) in segs.iter().enumerate() {
                    let len = if src.port() == 80 { 600 } else { 300 };
                    let seg = TcpSegment {
                        tunnel: TunnelId(0),
                        src: *src,
                        dst: *dst,
                        seq: *seq,
                        ack: *ack,
                        flags: TcpFlags(TcpFlags::ACK),
                        window: 0,
                        payload: &payload[..len],
                        wire_payload_len: len as u32,
                    };
                    t.process(&seg, Timestamp(k as u64 * 1000), &mut sink);
                }
                t.flush_all(&mut sink);
                sink.0
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
