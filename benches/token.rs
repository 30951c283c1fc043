//! Token verdicts per second: HS256 and ES256, warm (the same token again: a cache hit, then
//! expiry and binding on packet time) and cold (a token never seen: parse, key selection,
//! signature check, cache insert). Tokens are made here with jsonwebtoken; correctness is the
//! fixtures' job, this only measures.

use std::hint::black_box;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header as JwtHeader};
use shieldtap::http::Headers;
use shieldtap::token::{RawAttestation, TokenConfig, Verifier};

const NOW: f64 = 1_795_000_000.0;
const SECRET: &[u8] = b"bench-secret-bench-secret-bench!";
/// Distinct tokens per cold run; the cold verifier's cache is far smaller, so they all miss.
const HS_POOL: usize = 200_000;
const ES_POOL: usize = 20_000;

fn claims(i: usize) -> serde_json::Value {
    serde_json::json!({ "exp": NOW as u64 + 3600, "did": format!("device-{i}"), "ip": "198.51.100.7" })
}

fn verifier(raw: RawAttestation, cache_entries: u64) -> Verifier {
    let raw = RawAttestation {
        cache_entries: Some(cache_entries),
        ..raw
    };
    Verifier::new(TokenConfig::from_raw(&[raw], None).expect("config")).expect("verifier")
}

fn request(token: &str) -> Headers {
    [
        ("Host", "api.example"),
        ("User-Agent", "okhttp/4.12.0"),
        ("Approov-Token", token),
        ("Accept", "application/json"),
    ]
    .into_iter()
    .collect()
}

fn bench_family(c: &mut Criterion, name: &str, raw: RawAttestation, tokens: Vec<String>) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.measurement_time(std::time::Duration::from_secs(4));

    let warm = verifier(raw.clone(), 100_000);
    let hot = request(&tokens[0]);
    assert_eq!(
        warm.attest(&hot, "/v1/items", NOW).verdict.as_str(),
        "valid"
    );
    group.bench_function("warm", |b| {
        b.iter(|| black_box(warm.attest(black_box(&hot), "/v1/items", NOW)))
    });

    let cold = verifier(raw, 1_000);
    let requests: Vec<Headers> = tokens.iter().map(|t| request(t)).collect();
    let mut i = 0;
    group.bench_function("cold", |b| {
        b.iter(|| {
            i = (i + 1) % requests.len();
            black_box(cold.attest(black_box(&requests[i]), "/v1/items", NOW))
        })
    });
    group.finish();
    let s = cold.stats();
    let total = (s.cache_hits + s.cache_misses).max(1);
    eprintln!(
        "{name}/cold: {} verdicts, cache hit ratio {:.3} (should be ~0), verdicts {:?}",
        total,
        s.cache_hits as f64 / total as f64,
        s.verdicts
    );
}

fn hs256(c: &mut Criterion) {
    let key = EncodingKey::from_secret(SECRET).expect("hmac key");
    let header = JwtHeader::new(Algorithm::HS256);
    let tokens = (0..HS_POOL)
        .map(|i| jsonwebtoken::encode(&header, &claims(i), &key).expect("sign"))
        .collect();
    let raw = RawAttestation {
        secret_base64: Some(STANDARD.encode(SECRET)),
        ..Default::default()
    };
    bench_family(c, "token_hs256", raw, tokens);
}

fn es256(c: &mut Criterion) {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("keygen");
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).expect("key");
    let point = pair.public_key().as_ref(); // 0x04 || x || y
    let jwks = serde_json::json!({ "keys": [{
        "kty": "EC", "crv": "P-256", "kid": "bench", "alg": "ES256", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    }]});
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks.to_string()).expect("write jwks");

    let key = EncodingKey::from_ec_der(pkcs8.as_ref());
    let mut header = JwtHeader::new(Algorithm::ES256);
    header.kid = Some("bench".into());
    let tokens = (0..ES_POOL)
        .map(|i| jsonwebtoken::encode(&header, &claims(i), &key).expect("sign"))
        .collect();
    let raw = RawAttestation {
        algorithms: Some(vec!["ES256".into()]),
        jwks_file: Some(path.clone()),
        ..Default::default()
    };
    bench_family(c, "token_es256", raw, tokens);
}

criterion_group!(benches, hs256, es256);
criterion_main!(benches);
