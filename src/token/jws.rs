//! One token, checked once: structure, header, claims, algorithm, key and signature.
//!
//! Input: the token text (already size-capped by the caller), its family's settings and the
//! family's key sets. Output: an [`Inspected`] holding everything that does not depend on the
//! request: the signature verdict, `exp`/`nbf`, the subject and `ip` claims and the decoded
//! `pay` digest. This is what the verdict cache keeps; expiry and binding are judged later on
//! packet time. Signatures are checked by `jsonwebtoken` (aws-lc-rs backend); this module only
//! parses and chooses keys. JOSE headers naming keys by URL (`jku`, `x5u`) are ignored, `crit`
//! is refused, five segments (JWE) are `malformed`, claims are capped in size.

use std::str::FromStr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::Verdict;
use super::config::{FamilyConfig, decode_base64_any};
use super::keys::{KeySet, Selection, select};

/// Largest encoded JOSE header accepted.
const MAX_HEADER_B64_BYTES: usize = 2048;
/// Longest subject (device or user id) and `ip` claim kept.
const MAX_SUBJECT_BYTES: usize = 256;

/// The `pay` claim, decoded once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pay {
    Absent,
    Digest([u8; 32]),
    /// Present but not base64 of 32 bytes: can never match.
    Invalid,
}

/// The request-independent facts about one token.
#[derive(Clone, Debug)]
pub struct Inspected {
    /// `Valid` (signature checked), `Unverified` (no key configured), or the failure:
    /// `Malformed`, `AlgNotAllowed`, `UnknownKey`, `BadSignature`.
    pub verdict: Verdict,
    pub exp: f64,
    pub nbf: Option<f64>,
    pub subject: Option<Arc<str>>,
    pub ip: Option<Arc<str>>,
    pub pay: Pay,
}

impl Inspected {
    fn failed(verdict: Verdict) -> Inspected {
        Inspected {
            verdict,
            exp: f64::NAN,
            nbf: None,
            subject: None,
            ip: None,
            pay: Pay::Absent,
        }
    }
}

/// Header and claims as decoded, for operators (`token verify`); no key material.
#[derive(Clone, Debug, Default)]
pub struct Decoded {
    pub header: Option<Value>,
    pub claims: Option<Value>,
}

#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

fn b64url(segment: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(segment).ok()
}

/// Checks one token. `decoded` receives the header and claims when asked for.
pub fn inspect(
    token: &str,
    fam: &FamilyConfig,
    sets: &[&KeySet],
    decoded: Option<&mut Decoded>,
) -> Inspected {
    let mut scratch = Decoded::default();
    let want = decoded.is_some();
    let out = inspect_inner(token, fam, sets, want, &mut scratch);
    if let Some(d) = decoded {
        *d = scratch;
    }
    out
}

fn inspect_inner(
    token: &str,
    fam: &FamilyConfig,
    sets: &[&KeySet],
    want: bool,
    dec: &mut Decoded,
) -> Inspected {
    let mut parts = token.splitn(6, '.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        // Five segments is a JWE (encrypted): not something a passive verifier can open.
        return Inspected::failed(Verdict::Malformed);
    };
    // An empty signature is left to the checks below: with `alg: none` it is the classic
    // unsigned-token attack and must read `alg-not-allowed`, otherwise `bad-signature`.
    if h64.len() > MAX_HEADER_B64_BYTES || p64.len() / 4 * 3 > fam.max_claims_bytes {
        return Inspected::failed(Verdict::Malformed);
    }
    let (Some(header_json), Some(claims_json)) = (b64url(h64), b64url(p64)) else {
        return Inspected::failed(Verdict::Malformed);
    };
    if want {
        dec.header = serde_json::from_slice(&header_json).ok();
        dec.claims = serde_json::from_slice(&claims_json)
            .ok()
            .filter(Value::is_object);
    }
    if b64url(s64).is_none() {
        return Inspected::failed(Verdict::Malformed);
    }
    let Ok(header) = serde_json::from_slice::<JoseHeader>(&header_json) else {
        return Inspected::failed(Verdict::Malformed);
    };
    // No `crit` extension is understood, so any token that lists one must be refused
    // (RFC 7515 section 4.1.11).
    if header.crit.is_some() {
        return Inspected::failed(Verdict::Malformed);
    }
    let Ok(claims) = serde_json::from_slice::<Map<String, Value>>(&claims_json) else {
        return Inspected::failed(Verdict::Malformed);
    };
    let Some(exp) = claims
        .get("exp")
        .and_then(Value::as_f64)
        .filter(|e| e.is_finite())
    else {
        return Inspected::failed(Verdict::Malformed);
    };
    let nbf = match claims.get("nbf") {
        None => None,
        Some(v) => match v.as_f64().filter(|n| n.is_finite()) {
            Some(n) => Some(n),
            None => return Inspected::failed(Verdict::Malformed),
        },
    };
    let subject = claims.get(&fam.subject_claim).and_then(short_text);
    let ip = claims.get("ip").and_then(short_text);
    let pay = match claims.get("pay") {
        None => Pay::Absent,
        Some(Value::String(s)) => {
            match decode_base64_any(s).and_then(|d| <[u8; 32]>::try_from(d).ok()) {
                Some(d) => Pay::Digest(d),
                None => Pay::Invalid,
            }
        }
        Some(_) => Pay::Invalid,
    };
    let facts = |verdict| Inspected {
        verdict,
        exp,
        nbf,
        subject: subject.clone(),
        ip: ip.clone(),
        pay,
    };

    // `none` is not in jsonwebtoken's Algorithm enum, so it lands here with any other
    // unknown name; it could never be in the allow-list either.
    let Ok(alg) = Algorithm::from_str(&header.alg) else {
        return facts(Verdict::AlgNotAllowed);
    };
    if !fam.algorithms.contains(&alg) {
        return facts(Verdict::AlgNotAllowed);
    }
    if fam.unverified() {
        let verdict = if claims_match(fam, &claims) {
            Verdict::Unverified
        } else {
            Verdict::BadSignature
        };
        return facts(verdict);
    }
    let keys = match select(sets, alg, header.kid.as_deref()) {
        Selection::Keys(keys) => keys,
        Selection::UnknownKey => return facts(Verdict::UnknownKey),
        Selection::AlgNotAllowed => return facts(Verdict::AlgNotAllowed),
    };
    // The signing input is the token as sent, up to the second dot.
    let signing_input = &token.as_bytes()[..h64.len() + 1 + p64.len()];
    if keys.iter().any(|k| k.verify(alg, signing_input, s64)) && claims_match(fam, &claims) {
        facts(Verdict::Valid)
    } else {
        facts(Verdict::BadSignature)
    }
}

/// `iss` and `aud`, when configured. A token minted for another issuer or audience is not
/// authentic here; the verdict vocabulary files that under `bad-signature`.
fn claims_match(fam: &FamilyConfig, claims: &Map<String, Value>) -> bool {
    if let Some(iss) = &fam.issuer
        && claims.get("iss").and_then(Value::as_str) != Some(iss.as_str())
    {
        return false;
    }
    if !fam.audience.is_empty() {
        let ok = match claims.get("aud") {
            Some(Value::String(a)) => fam.audience.iter().any(|x| x == a),
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .any(|a| fam.audience.iter().any(|x| x == a)),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

fn short_text(v: &Value) -> Option<Arc<str>> {
    match v {
        Value::String(s) if !s.is_empty() && s.len() <= MAX_SUBJECT_BYTES => {
            Some(Arc::from(s.as_str()))
        }
        Value::Number(n) => Some(Arc::from(n.to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::config::{RawAttestation, TokenConfig};

    fn fam(secret: Option<&str>) -> FamilyConfig {
        let raw = RawAttestation {
            secret_base64: secret.map(str::to_owned),
            ..Default::default()
        };
        TokenConfig::from_raw_with_env(&[raw], None, &|_| None)
            .unwrap()
            .families
            .remove(0)
    }

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn structure_failures_are_malformed() {
        let f = fam(None);
        let sets = [&f.static_keys];
        let ok_head = b64(r#"{"alg":"HS256"}"#);
        let ok_claims = b64(r#"{"exp":1}"#);
        for t in [
            String::new(),
            "a.b".into(),
            format!("{ok_head}.{ok_claims}"),
            format!("{ok_head}.{ok_claims}.sig.x.y"),
            format!("{ok_head}.{ok_claims}.s!g"),
            format!("{}.{ok_claims}.sig", b64("not json")),
            format!(
                "{}.{ok_claims}.sig",
                b64(r#"{"alg":"HS256","crit":["b64"],"b64":false}"#)
            ),
            format!("{}.{ok_claims}.sig", b64(r#"{"alg":"HS256","alg":"none"}"#)),
            format!("{ok_head}.{}.sig", b64(r#"{"did":"x"}"#)),
            format!("{ok_head}.{}.sig", b64(r#"{"exp":"tomorrow"}"#)),
            format!("{ok_head}.{}.sig", b64(r#"{"exp":1,"nbf":"x"}"#)),
            format!("{ok_head}.{}.sig", b64("[1]")),
            format!(
                "{ok_head}.{}.sig",
                b64(&format!(r#"{{"exp":1,"x":"{}"}}"#, "a".repeat(5000)))
            ),
        ] {
            assert_eq!(
                inspect(&t, &f, &sets, None).verdict,
                Verdict::Malformed,
                "{t}"
            );
        }
    }

    #[test]
    fn unverified_mode_decodes_claims() {
        let f = fam(None);
        let t = format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"HS256","jku":"https://evil.example/jwks"}"#),
            b64(r#"{"exp":1795000000.5,"did":"dev-1","ip":"192.0.2.1","pay":"x"}"#)
        );
        let i = inspect(&t, &f, &[&f.static_keys], None);
        assert_eq!(i.verdict, Verdict::Unverified);
        assert_eq!(i.exp, 1795000000.5);
        assert_eq!(i.subject.as_deref(), Some("dev-1"));
        assert_eq!(i.ip.as_deref(), Some("192.0.2.1"));
        assert_eq!(i.pay, Pay::Invalid);
        let none = format!("{}.{}.c2ln", b64(r#"{"alg":"none"}"#), b64(r#"{"exp":1}"#));
        assert_eq!(
            inspect(&none, &f, &[&f.static_keys], None).verdict,
            Verdict::AlgNotAllowed
        );
    }

    #[test]
    fn signature_checked_with_the_configured_secret() {
        use aws_lc_rs::hmac;
        let f = fam(Some("c2VjcmV0LWtleS1ieXRlcw"));
        let input = format!(
            "{}.{}",
            b64(r#"{"alg":"HS256","typ":"JWT"}"#),
            b64(r#"{"exp":5}"#)
        );
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"secret-key-bytes");
        let sig = URL_SAFE_NO_PAD.encode(hmac::sign(&key, input.as_bytes()).as_ref());
        let good = format!("{input}.{sig}");
        assert_eq!(
            inspect(&good, &f, &[&f.static_keys], None).verdict,
            Verdict::Valid
        );
        let bad = format!("{input}.{}", URL_SAFE_NO_PAD.encode([0u8; 32]));
        assert_eq!(
            inspect(&bad, &f, &[&f.static_keys], None).verdict,
            Verdict::BadSignature
        );
        // A `kid` naming no configured key is checked with the unnamed secret (Approov's
        // `-setKeyID`): valid when signed with it, a forgery otherwise.
        let kid_input = format!(
            "{}.{}",
            b64(r#"{"alg":"HS256","kid":"0001"}"#),
            b64(r#"{"exp":5}"#)
        );
        let kid_sig = URL_SAFE_NO_PAD.encode(hmac::sign(&key, kid_input.as_bytes()).as_ref());
        assert_eq!(
            inspect(
                &format!("{kid_input}.{kid_sig}"),
                &f,
                &[&f.static_keys],
                None
            )
            .verdict,
            Verdict::Valid
        );
        assert_eq!(
            inspect(&format!("{kid_input}.{sig}"), &f, &[&f.static_keys], None).verdict,
            Verdict::BadSignature
        );
    }
}
