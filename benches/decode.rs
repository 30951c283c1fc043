//! Decode cost per frame: plain Ethernet/IPv4/TCP, VLAN-tagged, and VXLAN-encapsulated.
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use etherparse::PacketBuilder;
use shieldtap::capture::Timestamp;
use shieldtap::decode::{Checksums, DecodeConfig, Decoded, Decoder, LinkType};

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(40000, 80, 7, 1000)
        .ack(9)
        .write(&mut v, payload)
        .expect("builds");
    v
}

fn bench(c: &mut Criterion) {
    let payload = vec![b'x'; 300];
    let plain = frame(&payload);
    let mut vlan = plain[..12].to_vec();
    vlan.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
    vlan.extend_from_slice(&plain[12..]);
    let mut vx_body = vec![0x08, 0, 0, 0, 0, 0, 100, 0];
    vx_body.extend_from_slice(&plain);
    let mut vxlan = Vec::new();
    PacketBuilder::ethernet2([9; 6], [8; 6])
        .ipv4([1, 1, 1, 1], [2, 2, 2, 2], 64)
        .udp(5555, 4789)
        .write(&mut vxlan, &vx_body)
        .expect("builds");
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    for (name, f) in [
        ("ethernet_ipv4_tcp", &plain),
        ("vlan", &vlan),
        ("vxlan", &vxlan),
    ] {
        for (checksums, suffix) in [(Checksums::Always, ""), (Checksums::Never, "_no_checksum")] {
            let mut d = Decoder::new(DecodeConfig {
                checksums,
                ..Default::default()
            });
            g.bench_function(format!("{name}{suffix}"), |b| {
                b.iter(|| match d.decode(LinkType::Ethernet, f, Timestamp(1)) {
                    Ok(Decoded::Tcp(s)) => s.payload.len(),
                    _ => 0,
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
