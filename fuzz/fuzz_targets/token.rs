//! Request headers an attacker writes, into the token stage: header lookup, prefixes, query
//! parameters, JWT splitting, base64, the JOSE header and claims, `kid` key selection,
//! signatures, binding and the verdict cache must never panic, and must never echo a token.
//!
//! Families: `approov` (HS256, an unnamed secret plus named ones, binding on Authorization,
//! query parameter `approov-token`), `keyset` (ES256/ES384/RS256/PS256/EdDSA from the fixture
//! JWKS file, no network), `mixed` (HS256 and RS256: the algorithm-confusion surface), and
//! `[identity]` with an unnamed and a named HMAC secret. The secrets and keys are those of
//! tests/fixtures/tokens, so `scripts/fuzz_token_seeds.py` can write valid seeds.
//!
//! Input layout: byte 0 picks the packet time (low 3 bits: an offset around the seeds'
//! `exp`); the rest is text, first line the request target, then `Name: value` lines (at most
//! 32), bytes kept as sent. Each request is judged twice: the second answer comes from the
//! verdict cache and must equal the first.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shieldtap::config::Config;
use shieldtap::http::Headers;
use shieldtap::token::Verifier;

#[path = "../harness/jws.rs"]
mod jws;

/// The seeds' reference time (tests/fixtures/tokens: NOW).
const NOW: f64 = 1_795_000_000.0;
const OFFSETS: [f64; 8] = [0.0, -3600.0, 299.0, 300.0, 300.5, 3600.0, -0.25, 1e12];
const MAX_HEADERS: usize = 32;
/// Shortest header value checked for being echoed: shorter ones could match a claim by chance.
const MIN_ECHO_CHECK: usize = 32;

fn verifier() -> &'static Verifier {
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/tokens");
        // Secrets: base64 of SHA-256("shieldtap-fixture-" + label) for labels hs-1, hs-kid-1,
        // hs-kid-2 and user, as in scripts/make_token_fixtures.py (the seed script checks).
        let text = format!(
            r#"
[[attestation]]
name = "approov"
secret_base64 = "{hs}"
secrets = {{ k1 = "{k1}", k2 = "{k2}" }}
binding_headers = ["Authorization"]
query_param = "approov-token"
cache_entries = 64

[[attestation]]
name = "keyset"
header = "X-Keyset-Token"
algorithms = ["ES256", "ES384", "RS256", "PS256", "EdDSA"]
jwks_file = "{fixtures}/jwks.json"
cache_entries = 64

[[attestation]]
name = "mixed"
header = "X-Mixed-Token"
prefix = "Bearer "
algorithms = ["HS256", "RS256"]
secret_base64 = "{hs}"
secret_kid = "0001"
jwks_file = "{fixtures}/jwks.json"
issuer = "https://issuer.example"
audience = ["projects/1", "projects/2"]
missing_binding = "reject"
binding_headers = ["X-Session", "Authorization"]
leeway_secs = 30

[identity]
user_secret_base64 = "{user}"
user_secrets = {{ hs-2 = "{k2}" }}
cache_entries = 64
"#,
            hs = "MJZkx69GgrZmOIvgTxkCTvKwJVZPm/5V1uDnlrT/q0o=",
            k1 = "qOT7aOaA7kjC787/52Dq7l/weIJCqDbHrbIiZAy7dfo=",
            k2 = "Qs130KeyX9eKFHgOGrgyR96/xW/adLmhKWQp2DaCDmY=",
            user = "wxEH0gBBX7DLV7SADxxlZOH/hXIdEI3st7iVj1ODz6Y=",
        );
        let cfg = Config::parse(&text, "fuzz.toml").unwrap_or_else(|e| panic!("fuzz config: {e}"));
        Verifier::new(cfg.token).unwrap_or_else(|e| panic!("fuzz verifier: {e}"))
    })
}

/// `TOKEN_FUZZ_TRACE=1` prints each input's verdicts (to check what the seeds reach).
fn trace() -> bool {
    static T: OnceLock<bool> = OnceLock::new();
    *T.get_or_init(|| std::env::var_os("TOKEN_FUZZ_TRACE").is_some())
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let now = NOW + OFFSETS[usize::from(first & 7)];
    let mut lines = rest.split(|b| *b == b'\n');
    let target = String::from_utf8_lossy(lines.next().unwrap_or_default());
    let headers: Headers = lines
        .take(MAX_HEADERS)
        .filter_map(|line| {
            let colon = line.iter().position(|b| *b == b':')?;
            let (name, value) = line.split_at(colon);
            let value = value[1..].strip_prefix(b" ").unwrap_or(&value[1..]);
            Some((String::from_utf8_lossy(name).into_owned(), value))
        })
        .collect();

    let v = verifier();
    let first_att = v.attest(&headers, &target, now);
    let first_user = v.identify(&headers, now);
    if trace() {
        eprintln!(
            "verdict {} {} user {:?}",
            first_att.family,
            first_att.verdict,
            first_user.as_ref().map(|u| u.verdict)
        );
    }
    // The second judgement is served by the cache: it must not differ.
    assert_eq!(first_att, v.attest(&headers, &target, now));
    assert_eq!(first_user, v.identify(&headers, now));

    // Debug shows every field, so it covers what the records serialize.
    let out = format!("{first_att:?}{first_user:?}");
    for h in &headers {
        if h.value.len() >= MIN_ECHO_CHECK
            && let Ok(text) = std::str::from_utf8(&h.value)
        {
            let token = text.strip_prefix("Bearer ").unwrap_or(text);
            // Only what has a token's shape (see `jws_shaped`).
            assert!(
                token.len() < MIN_ECHO_CHECK
                    || !jws::jws_shaped(token.as_bytes())
                    || !out.contains(token),
                "token echoed: {out}"
            );
        }
    }
});
