//! Verification keys: HMAC secrets from the config and public keys from JWKS documents.
//!
//! Input: decoded secrets, JWKS JSON bytes (file or fetched). Output: typed [`Key`]s, each
//! with its own algorithm allow-list (the family's list, narrowed to the key's kind and to the
//! JWK `alg` when present). A key's kind fixes which algorithms may ever use it, so an RSA or
//! EC public key cannot serve as an HMAC secret. Symmetric (`oct`) keys in a JWKS are ignored:
//! secrets come only from the config. [`select`] picks the keys for a token: those its `kid`
//! names, else the keys configured without an id (Approov tokens carry a `kid` once the account
//! sets one, and are still checked with the one account secret). Limits: at most
//! [`MAX_JWKS_KEYS`] keys per document and [`MAX_JWKS_BYTES`] bytes; RSA moduli under 2048
//! bits are refused; at most [`MAX_KEYS_TRIED_WITHOUT_KID`] keys tried when the `kid` does not
//! decide. Unusable keys are skipped (counted in the parse result), a document that is not a
//! JWKS is an error.

use std::fmt;
use std::sync::Arc;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};

/// Key material that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

/// Largest JWKS document read (file or HTTPS body).
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Most keys taken from one JWKS document.
pub const MAX_JWKS_KEYS: usize = 64;
/// Keys tried for a token whose `kid` names no key, or that has none (each try costs a
/// signature check).
pub const MAX_KEYS_TRIED_WITHOUT_KID: usize = 4;
/// Smallest RSA modulus accepted, in bytes (2048 bits).
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// What a key is, which decides the algorithms it can ever serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Hmac,
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl KeyKind {
    fn serves(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyKind::Hmac => matches!(alg, HS256 | HS384 | HS512),
            KeyKind::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::EcP256 => alg == ES256,
            KeyKind::EcP384 => alg == ES384,
            KeyKind::Ed25519 => alg == EdDSA,
        }
    }
}

/// One verification key with the algorithms allowed to use it.
pub struct Key {
    pub kid: Option<String>,
    pub kind: KeyKind,
    algorithms: Vec<Algorithm>,
    decoding: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key bytes stay out of logs (HMAC keys are secrets).
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("algorithms", &self.algorithms)
            .finish()
    }
}

impl Key {
    /// An HMAC key; `None` for an empty secret.
    pub fn hmac(
        kid: Option<String>,
        secret: Secret,
        family_algs: &[Algorithm],
    ) -> Option<Arc<Key>> {
        let algorithms = family_algs
            .iter()
            .copied()
            .filter(|a| KeyKind::Hmac.serves(*a))
            .collect();
        let decoding = DecodingKey::from_secret(secret.bytes()).ok()?;
        Some(Arc::new(Key {
            kid,
            kind: KeyKind::Hmac,
            algorithms,
            decoding,
        }))
    }

    pub fn allows(&self, alg: Algorithm) -> bool {
        self.kind.serves(alg) && self.algorithms.contains(&alg)
    }

    /// Checks the signature over `message` (`header.payload` as sent). Never panics; any
    /// decoding problem is a failed check.
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature_b64: &str) -> bool {
        self.allows(alg)
            && jsonwebtoken::crypto::verify(signature_b64, message, &self.decoding, alg)
                .unwrap_or(false)
    }
}

/// An ordered list of keys.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    keys: Vec<Arc<Key>>,
    /// Keys in the document that could not be used (bad parameters, unsupported curve, ...).
    pub skipped: usize,
}

/// Which keys may check a token.
pub enum Selection<'k> {
    Keys(Vec<&'k Arc<Key>>),
    /// The `kid` names no key (or no key exists for the algorithm).
    UnknownKey,
    /// The `kid` names a key that may not be used with the token's algorithm.
    AlgNotAllowed,
}

impl KeySet {
    pub fn push(&mut self, key: Arc<Key>) {
        self.keys.push(key);
    }
    pub fn extend(&mut self, other: KeySet) {
        self.keys.extend(other.keys);
        self.skipped += other.skipped;
    }
    pub fn len(&self) -> usize {
        self.keys.len()
    }
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
    pub fn keys(&self) -> &[Arc<Key>] {
        &self.keys
    }

    /// Parses a JWKS document, keeping the signature keys usable with `family_algs`.
    pub fn from_jwks(bytes: &[u8], family_algs: &[Algorithm]) -> Result<KeySet, String> {
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(format!("JWKS larger than {MAX_JWKS_BYTES} bytes"));
        }
        #[derive(serde::Deserialize)]
        struct Doc {
            keys: Vec<serde_json::Value>,
        }
        let doc: Doc = serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS: {e}"))?;
        let mut set = KeySet::default();
        for value in doc.keys.into_iter().take(MAX_JWKS_KEYS) {
            match key_from_jwk(value, family_algs) {
                Some(key) => set.keys.push(Arc::new(key)),
                None => set.skipped += 1,
            }
        }
        Ok(set)
    }
}

fn key_from_jwk(value: serde_json::Value, family_algs: &[Algorithm]) -> Option<Key> {
    let jwk: Jwk = serde_json::from_value(value).ok()?;
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyKind::Rsa,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => KeyKind::EcP256,
            EllipticCurve::P384 => KeyKind::EcP384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            KeyKind::Ed25519
        }
        // `oct` keys would be HMAC secrets published in a key set: refused by design.
        _ => return None,
    };
    let jwk_alg = match jwk.common.key_algorithm {
        None => None,
        Some(ka) => Some(key_algorithm(ka)?),
    };
    let algorithms: Vec<Algorithm> = family_algs
        .iter()
        .copied()
        .filter(|a| kind.serves(*a) && jwk_alg.is_none_or(|j| j == *a))
        .collect();
    if algorithms.is_empty() {
        return None;
    }
    let decoding = DecodingKey::from_jwk(&jwk).ok()?;
    if let DecodingKeyKind::RsaModulusExponent { n, .. } = decoding.kind() {
        let significant = n.iter().skip_while(|b| **b == 0).count();
        if significant < MIN_RSA_MODULUS_BYTES {
            return None;
        }
    }
    Some(Key {
        kid: jwk.common.key_id.clone(),
        kind,
        algorithms,
        decoding,
    })
}

fn key_algorithm(ka: KeyAlgorithm) -> Option<Algorithm> {
    Some(match ka {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// Picks the keys that may check a token with `alg` and `kid`, across several sets (the
/// static keys, then the fetched ones).
///
/// A `kid` naming a key selects the keys with that id (`AlgNotAllowed` when none of them may
/// serve `alg`: a public key's id never lets a token use it as an HMAC secret). A `kid` naming
/// no key, and a token without `kid`, are checked against the keys configured without an id:
/// Approov adds a `kid` to every token once the account runs `approov secret -setKeyID`, while
/// its backends keep verifying with the one account secret. Without `kid` and with no unnamed
/// key, any key able to serve `alg` is tried. At most [`MAX_KEYS_TRIED_WITHOUT_KID`] keys are
/// tried when the `kid` does not decide, since the attacker picks the `kid` and each try costs
/// a signature check.
pub fn select<'k>(sets: &[&'k KeySet], alg: Algorithm, kid: Option<&str>) -> Selection<'k> {
    let all = || sets.iter().flat_map(|s| s.keys.iter());
    if let Some(kid) = kid {
        let mut named = all().filter(|k| k.kid.as_deref() == Some(kid)).peekable();
        if named.peek().is_some() {
            let usable: Vec<&Arc<Key>> = named.filter(|k| k.allows(alg)).collect();
            return if usable.is_empty() {
                Selection::AlgNotAllowed
            } else {
                Selection::Keys(usable)
            };
        }
    }
    let unnamed: Vec<&Arc<Key>> = all()
        .filter(|k| k.kid.is_none() && k.allows(alg))
        .take(MAX_KEYS_TRIED_WITHOUT_KID)
        .collect();
    let chosen = match (unnamed.is_empty(), kid) {
        (false, _) => unnamed,
        // An unknown `kid` with only named keys: none of them is meant.
        (true, Some(_)) => return Selection::UnknownKey,
        (true, None) => all()
            .filter(|k| k.allows(alg))
            .take(MAX_KEYS_TRIED_WITHOUT_KID)
            .collect(),
    };
    if chosen.is_empty() {
        Selection::UnknownKey
    } else {
        Selection::Keys(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EC_JWK: &str = r#"{"kty":"EC","crv":"P-256","kid":"ec1","alg":"ES256","use":"sig",
        "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;

    #[test]
    fn jwks_keys_carry_their_own_algorithms() {
        let doc = format!(
            r#"{{"keys":[{EC_JWK},{{"kty":"oct","k":"c2VjcmV0","kid":"h"}},{{"kty":"EC","crv":"P-521","x":"AA","y":"AA"}},{{"kty":"XYZ"}}]}}"#
        );
        let set = KeySet::from_jwks(doc.as_bytes(), &[Algorithm::ES256, Algorithm::RS256]).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(set.skipped, 3);
        let k = &set.keys()[0];
        assert_eq!(k.kind, KeyKind::EcP256);
        assert!(k.allows(Algorithm::ES256));
        assert!(!k.allows(Algorithm::HS256) && !k.allows(Algorithm::RS256));
        assert!(KeySet::from_jwks(b"[1,2]", &[Algorithm::ES256]).is_err());
    }

    #[test]
    fn selection_by_kid_and_algorithm() {
        let doc = format!(r#"{{"keys":[{EC_JWK}]}}"#);
        let jwks =
            KeySet::from_jwks(doc.as_bytes(), &[Algorithm::ES256, Algorithm::HS256]).unwrap();
        let mut hmac = KeySet::default();
        hmac.push(
            Key::hmac(
                None,
                Secret::new(b"k".to_vec()),
                &[Algorithm::HS256, Algorithm::ES256],
            )
            .unwrap(),
        );
        let sets = [&hmac, &jwks];
        assert!(
            matches!(select(&sets, Algorithm::ES256, Some("ec1")), Selection::Keys(k) if k.len() == 1)
        );
        assert!(matches!(
            select(&sets, Algorithm::ES256, Some("nope")),
            Selection::UnknownKey
        ));
        // The EC key's kid with an HMAC algorithm: refused, never used as a secret.
        assert!(matches!(
            select(&sets, Algorithm::HS256, Some("ec1")),
            Selection::AlgNotAllowed
        ));
        assert!(
            matches!(select(&sets, Algorithm::HS256, None), Selection::Keys(k) if k[0].kind == KeyKind::Hmac)
        );
        assert!(matches!(
            select(&[&jwks], Algorithm::HS256, None),
            Selection::UnknownKey
        ));
    }

    fn hmac_set(keys: &[(Option<&str>, &[u8])]) -> KeySet {
        let mut set = KeySet::default();
        for (kid, secret) in keys {
            set.push(
                Key::hmac(
                    kid.map(str::to_owned),
                    Secret::new(secret.to_vec()),
                    &[Algorithm::HS256],
                )
                .unwrap(),
            );
        }
        set
    }

    fn kids(sel: Selection<'_>) -> Option<Vec<Option<String>>> {
        match sel {
            Selection::Keys(k) => Some(k.iter().map(|k| k.kid.clone()).collect()),
            _ => None,
        }
    }

    #[test]
    fn a_kid_naming_no_key_falls_back_to_the_unnamed_secret() {
        // Approov's `approov secret -setKeyID 0001`: tokens say `kid: 0001`, the config holds
        // the one account secret without an id.
        let one = hmac_set(&[(None, b"account")]);
        assert_eq!(
            kids(select(&[&one], Algorithm::HS256, Some("0001"))),
            Some(vec![None])
        );
        // Named keys and an unnamed one: the named one when the kid says so, else the
        // unnamed one only.
        let mixed = hmac_set(&[
            (Some("k1"), b"one"),
            (None, b"account"),
            (Some("k2"), b"two"),
        ]);
        assert_eq!(
            kids(select(&[&mixed], Algorithm::HS256, Some("k2"))),
            Some(vec![Some("k2".into())])
        );
        assert_eq!(
            kids(select(&[&mixed], Algorithm::HS256, Some("k9"))),
            Some(vec![None])
        );
        // Only named keys: an unknown kid means none of them.
        let named = hmac_set(&[(Some("k1"), b"one"), (Some("k2"), b"two")]);
        assert!(matches!(
            select(&[&named], Algorithm::HS256, Some("k9")),
            Selection::UnknownKey
        ));
        assert_eq!(
            kids(select(&[&named], Algorithm::HS256, None)),
            Some(vec![Some("k1".into()), Some("k2".into())])
        );
    }

    #[test]
    fn an_attacker_chosen_kid_costs_a_bounded_number_of_checks() {
        let secrets: Vec<(Option<&str>, &[u8])> = (0..10).map(|_| (None, &b"s"[..])).collect();
        let many = hmac_set(&secrets);
        for kid in [None, Some("whatever")] {
            match select(&[&many], Algorithm::HS256, kid) {
                Selection::Keys(k) => assert_eq!(k.len(), MAX_KEYS_TRIED_WITHOUT_KID),
                _ => panic!("keys expected"),
            }
        }
    }
}
