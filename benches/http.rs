//! HTTP/1.x parser throughput: a keep-alive connection of typical API exchanges (about ten
//! request headers, JSON bodies of a few hundred bytes, some chunked, some gzip), fed in
//! MSS-sized segments as the reassembler would deliver them.
use std::hint::black_box;
use std::io::Write;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shieldtap::capture::Timestamp;
use shieldtap::http::{Dir, HttpConfig, HttpConn, HttpStats};

const TRANSACTIONS: usize = 200;
const MSS: usize = 1448;

fn json(i: usize, items: usize) -> Vec<u8> {
    let list: Vec<String> = (0..items)
        .map(|k| {
            format!(
                r#"{{"id":{},"sku":"SKU-{:06}","qty":{},"price":{}.99,"tags":["a","b"]}}"#,
                i * 100 + k,
                k * 37,
                k % 5 + 1,
                k * 3
            )
        })
        .collect();
    format!(
        r#"{{"request_id":"{i:08x}-4e1f-9b2c","status":"ok","items":[{}]}}"#,
        list.join(",")
    )
    .into_bytes()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("writing to a Vec cannot fail");
    e.finish().expect("writing to a Vec cannot fail")
}

fn request(i: usize) -> Vec<u8> {
    let body = json(i, 2);
    let method = if i.is_multiple_of(3) { "POST" } else { "GET" };
    let mut v = format!(
        "{method} /api/v2/orders/{i}?include=items&locale=en-US HTTP/1.1\r\n\
         Host: api.shop.example.com\r\n\
         User-Agent: ShopApp/5.12.1 (iPhone; iOS 17.4; Scale/3.00)\r\n\
         Accept: application/json\r\n\
         Accept-Language: en-US;q=1.0\r\n\
         Accept-Encoding: gzip, deflate, br\r\n\
         Authorization: Bearer eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIn0.c2lnbmF0dXJl\r\n\
         X-App-Attestation: AAAAAQAAAAIAAAADAAAABAAAAAUAAAAGAAAABwAAAAg=\r\n\
         X-Request-Id: {i:08x}-4e1f-9b2c\r\n\
         Connection: keep-alive\r\n"
    )
    .into_bytes();
    if method == "POST" {
        v.extend_from_slice(
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        v.extend_from_slice(&body);
    } else {
        v.extend_from_slice(b"\r\n");
    }
    v
}

fn response(i: usize) -> Vec<u8> {
    let body = json(i, 3);
    let common = "HTTP/1.1 200 OK\r\n\
                  Date: Sat, 28 Nov 2026 16:08:35 GMT\r\n\
                  Content-Type: application/json; charset=utf-8\r\n\
                  Cache-Control: no-store\r\n\
                  Vary: Accept-Encoding\r\n\
                  X-Request-Id: 0000-4e1f-9b2c\r\n\
                  Strict-Transport-Security: max-age=31536000\r\n";
    let mut v = common.as_bytes().to_vec();
    match i % 4 {
        // Chunked, in two chunks.
        1 => {
            v.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            let (a, b) = body.split_at(body.len() / 2);
            for c in [a, b] {
                v.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                v.extend_from_slice(c);
                v.extend_from_slice(b"\r\n");
            }
            v.extend_from_slice(b"0\r\n\r\n");
        }
        // Gzip with a length.
        2 => {
            let z = gzip(&body);
            v.extend_from_slice(
                format!(
                    "Content-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
                    z.len()
                )
                .as_bytes(),
            );
            v.extend_from_slice(&z);
        }
        _ => {
            v.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            v.extend_from_slice(&body);
        }
    }
    v
}

/// The connection as the reassembler delivers it: segments of at most one MSS.
fn segments() -> Vec<(Dir, Vec<u8>)> {
    let mut segs = Vec::new();
    for i in 0..TRANSACTIONS {
        for (dir, msg) in [(Dir::ToServer, request(i)), (Dir::ToClient, response(i))] {
            for piece in msg.chunks(MSS) {
                segs.push((dir, piece.to_vec()));
            }
        }
    }
    segs
}

fn bench(c: &mut Criterion) {
    let segs = segments();
    let bytes: usize = segs.iter().map(|(_, s)| s.len()).sum();
    let cfg = HttpConfig::default();
    let mut g = c.benchmark_group("http");
    g.throughput(Throughput::Elements(TRANSACTIONS as u64));
    g.bench_function("keep_alive_api", |b| {
        let mut out = Vec::with_capacity(TRANSACTIONS);
        b.iter(|| {
            let mut conn = HttpConn::new();
            let mut stats = HttpStats::default();
            out.clear();
            for (k, (dir, seg)) in segs.iter().enumerate() {
                conn.data(&cfg, *dir, seg, Timestamp(k as u64), &mut out, &mut stats);
            }
            conn.close(&cfg, Timestamp(u64::MAX), &mut out, &mut stats);
            assert_eq!(stats.paired, TRANSACTIONS as u64);
            black_box(&out);
        });
    });
    g.finish();
    eprintln!(
        "http bench stream: {TRANSACTIONS} transactions, {bytes} bytes, {} segments",
        segs.len()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
