//! Response scanning for data exposure, per response: a user profile (about 600 bytes of
//! JSON with personal fields), a page of 50 orders (about 6 KB), and a plain-text body.
//! Every response is scanned, so this is the cost added to each transaction.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shieldtap::detect::exposure::scan;
use shieldtap::http::Headers;

fn profile() -> Vec<u8> {
    br#"{"id":2001,"name":"Alice Liddell","avatar_url":"https://cdn.example.com/a/2001.png",
    "email":"alice.liddell@example.com","phone":"+44 7700 900123",
    "home":{"lat":51.501364,"lon":-0.141892,"street":"12 Buckingham Palace Road"},
    "date_of_birth":"1985-04-12","payment":{"card_number":"4111111111111111","expiry":"12/29"},
    "password_hash":"$2b$12$KIXQJbtWlnnkv1ENcP8Bbe2bRtVp7rX3N3jjSH.Xq4PwO/3P0j3pW",
    "preferences":{"language":"en-GB","newsletter":false,"theme":"dark"}}"#
        .to_vec()
}

fn orders() -> Vec<u8> {
    let items: Vec<String> = (0..50)
        .map(|i| {
            format!(
                r#"{{"id":{},"state":"shipped","total_cents":{},"items":[{{"sku":"SKU-{:05}","qty":1}}],"created_at":"2026-11-{:02}T10:00:00Z"}}"#,
                5000 + i,
                1299 + i,
                i,
                1 + i % 28
            )
        })
        .collect();
    format!(r#"{{"page":1,"orders":[{}],"next":2}}"#, items.join(",")).into_bytes()
}

fn bench(c: &mut Criterion) {
    let json = Headers::from_iter([("Content-Type", "application/json")]);
    let text = Headers::from_iter([("Content-Type", "text/html")]);
    let html = b"<html><body><p>Order confirmed. We will write to you soon.</p><footer>support@example.com</footer></body></html>".repeat(8);
    let mut g = c.benchmark_group("exposure");
    g.throughput(Throughput::Elements(1));
    let p = profile();
    g.bench_function("profile_json", |b| b.iter(|| black_box(scan(&json, &p))));
    let o = orders();
    g.bench_function("orders_page_json", |b| {
        b.iter(|| black_box(scan(&json, &o)))
    });
    g.bench_function("html_text", |b| b.iter(|| black_box(scan(&text, &html))));
    // The JSON parse alone, for comparison.
    g.bench_function("orders_page_parse_only", |b| {
        b.iter(|| black_box(serde_json::from_slice::<serde_json::Value>(&o).map(|v| v.is_object())))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
