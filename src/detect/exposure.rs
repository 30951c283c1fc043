//! Excessive data exposure: what each response gives away.
//!
//! Workers scan response bodies ([`scan`]): JSON is walked with field paths (`$.user.home.lat`,
//! arrays as `[]`) under depth, node and size caps; other text bodies are searched by value
//! patterns. Each value is classified by its field name and its shape ([`classify`]): e-mail,
//! phone, payment card (Luhn), IBAN (mod 97), national id (US SSN), date of birth, precise
//! geolocation, street address, password hash, secret (JWTs, cloud keys, private keys, API
//! keys), internal IP address. Only field paths, classes and masked samples leave this
//! module; values never do.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use regex::Regex;
use serde_json::Value;

use crate::http::{Header, header};
use crate::output::redact;

/// Largest body scanned.
const MAX_SCAN_BYTES: usize = 512 * 1024;
/// Deepest JSON nesting walked.
const MAX_DEPTH: usize = 32;
/// Most JSON values visited per body.
const MAX_NODES: usize = 20_000;
/// Most distinct sensitive field paths reported per body.
const MAX_FINDINGS: usize = 64;

/// Kinds of sensitive data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    Email,
    Phone,
    PaymentCard,
    Iban,
    NationalId,
    DateOfBirth,
    Geolocation,
    StreetAddress,
    PasswordHash,
    Secret,
    InternalIp,
}

impl Class {
    pub const ALL: [Class; 11] = [
        Class::Email,
        Class::Phone,
        Class::PaymentCard,
        Class::Iban,
        Class::NationalId,
        Class::DateOfBirth,
        Class::Geolocation,
        Class::StreetAddress,
        Class::PasswordHash,
        Class::Secret,
        Class::InternalIp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Email => "email",
            Class::Phone => "phone",
            Class::PaymentCard => "payment-card",
            Class::Iban => "iban",
            Class::NationalId => "national-id",
            Class::DateOfBirth => "date-of-birth",
            Class::Geolocation => "geolocation",
            Class::StreetAddress => "street-address",
            Class::PasswordHash => "password-hash",
            Class::Secret => "secret",
            Class::InternalIp => "internal-ip",
        }
    }

    pub fn from_name(s: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Classes no route may expose, whatever its `expose_only` says.
    pub fn always_denied(self) -> bool {
        matches!(self, Class::PasswordHash | Class::Secret)
    }
}

/// A sensitive value found: where, what, and a masked sample (never the value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub path: Arc<str>,
    pub class: Class,
    pub masked: Arc<str>,
}

/// What one response gave away.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Sensitive fields, one per (path, class).
    pub findings: Vec<Finding>,
    /// Every field path of the JSON body (for the inventory), at most `MAX_FINDINGS * 4`.
    pub fields: Vec<Arc<str>>,
    /// The longest array: records per response.
    pub records: u32,
    /// A cap cut the walk short.
    pub truncated: bool,
}

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    // The patterns are constants of this file; a test compiles every one.
    cell.get_or_init(|| {
        Regex::new(pattern).unwrap_or_else(|_| Regex::new("$^").unwrap_or_else(|_| unreachable!()))
    })
}

fn bcrypt() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    re(&R, r"^\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}$")
}
fn crypt() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    re(
        &R,
        r"^\$(argon2(id|i|d)\$v=\d+\$|[156]\$|pbkdf2[-_]sha\d+\$|scrypt\$)",
    )
}
fn jwt() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    re(
        &R,
        r"^eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*$",
    )
}
fn cloud_key() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    re(
        &R,
        r"^(AKIA|ASIA)[0-9A-Z]{16}$|^AIza[0-9A-Za-z_-]{35}$|^(sk|rk)_live_[0-9A-Za-z]{16,}$|^gh[pousr]_[0-9A-Za-z]{36}$|^xox[abpr]-[0-9A-Za-z-]{10,}$",
    )
}
fn ssn() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    re(&R, r"^(\d{3})-(\d{2})-(\d{4})$")
}
fn iban() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    re(&R, r"^[A-Z]{2}\d{2}[A-Z0-9]{11,30}$")
}
fn date() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    re(
        &R,
        r"^(19|20)\d\d-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$|^(0?[1-9]|[12]\d|3[01])[/.](0?[1-9]|1[0-2])[/.](19|20)\d\d$",
    )
}
fn text_patterns() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    re(
        &R,
        r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*|\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}|-----BEGIN [A-Z ]*PRIVATE KEY-----|\b(?:\d[ -]?){12,18}\d\b",
    )
}

fn name_has(name: &str, words: &[&str]) -> bool {
    words.iter().any(|w| name.contains(w))
}

fn iban_valid(v: &str) -> bool {
    let s: String = v.chars().filter(|c| !c.is_whitespace()).collect();
    if !iban().is_match(&s) {
        return false;
    }
    let moved = format!("{}{}", &s[4..], &s[..4]);
    let mut rem: u32 = 0;
    for c in moved.chars() {
        let d = match c.to_digit(36) {
            Some(d) => d,
            None => return false,
        };
        rem = if d >= 10 {
            (rem * 100 + d) % 97
        } else {
            (rem * 10 + d) % 97
        };
    }
    rem == 1
}

fn ssn_valid(v: &str) -> bool {
    let Some(c) = ssn().captures(v) else {
        return false;
    };
    let area = &c[1];
    area != "000" && area != "666" && !area.starts_with('9') && &c[2] != "00" && &c[3] != "0000"
}

fn internal_ip(v: &str) -> bool {
    match v.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => a.is_private() || a.is_loopback() || a.is_link_local(),
        Ok(IpAddr::V6(a)) => (a.segments()[0] & 0xfe00) == 0xfc00 || a.is_loopback(),
        Err(_) => false,
    }
}

fn hexlike(v: &str) -> bool {
    matches!(v.len(), 32 | 40 | 56 | 64 | 96 | 128) && v.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The class of one value under a field name (lower case), if it is sensitive.
pub fn classify(name: &str, value: &str) -> Option<Class> {
    let v = value.trim();
    if v.is_empty() || v.len() > 4096 {
        return None;
    }
    if bcrypt().is_match(v) || crypt().is_match(v) {
        return Some(Class::PasswordHash);
    }
    if name_has(
        name,
        &["password", "passwd", "pwd", "pass_hash", "passhash"],
    ) && hexlike(v)
    {
        return Some(Class::PasswordHash);
    }
    if jwt().is_match(v) || cloud_key().is_match(v) || v.contains("PRIVATE KEY-----") {
        return Some(Class::Secret);
    }
    if name_has(
        name,
        &[
            "secret",
            "api_key",
            "apikey",
            "access_key",
            "private_key",
            "client_secret",
            "access_token",
            "refresh_token",
        ],
    ) && v.len() >= 16
        && v.chars().any(|c| c.is_ascii_digit())
        && v.chars().any(|c| c.is_ascii_alphabetic())
    {
        return Some(Class::Secret);
    }
    match redact::kind(v) {
        redact::Kind::Email => return Some(Class::Email),
        redact::Kind::Card => return Some(Class::PaymentCard),
        _ => {}
    }
    if iban_valid(v) {
        return Some(Class::Iban);
    }
    if ssn_valid(v)
        || (name_has(name, &["ssn", "social_security"])
            && v.len() == 9
            && v.bytes().all(|b| b.is_ascii_digit()))
    {
        return Some(Class::NationalId);
    }
    if name_has(name, &["birth", "dob", "birthday"]) && date().is_match(v) {
        return Some(Class::DateOfBirth);
    }
    let phone_name = name_has(name, &["phone", "mobile", "msisdn", "tel", "cell"]);
    if redact::kind(v) == redact::Kind::Phone && (phone_name || v.starts_with('+')) {
        return Some(Class::Phone);
    }
    if name_has(name, &["address", "street", "addr_line", "address_line"])
        && v.contains(' ')
        && v.chars().any(|c| c.is_ascii_digit())
        && v.chars().any(|c| c.is_alphabetic())
        && !v.contains('@')
    {
        return Some(Class::StreetAddress);
    }
    if internal_ip(v) {
        return Some(Class::InternalIp);
    }
    None
}

fn masked(class: Class, v: &str) -> Arc<str> {
    Arc::from(match class {
        Class::Email | Class::Phone | Class::PaymentCard => redact::mask(v),
        Class::PasswordHash | Class::Secret => format!("hash:{}", redact::token(v)),
        _ => {
            let first: String = v.chars().take(1).collect();
            format!("{first}***")
        }
    })
}

struct Walker<'a> {
    scan: &'a mut Scan,
    nodes: usize,
}

impl Walker<'_> {
    fn add(&mut self, path: &str, class: Class, value: &str) {
        let s = &mut *self.scan;
        if s.findings
            .iter()
            .any(|f| &*f.path == path && f.class == class)
        {
            return;
        }
        if s.findings.len() < MAX_FINDINGS {
            s.findings.push(Finding {
                path: Arc::from(path),
                class,
                masked: masked(class, value),
            });
        } else {
            s.truncated = true;
        }
    }

    fn field(&mut self, path: &str) {
        let s = &mut *self.scan;
        if !s.fields.iter().any(|f| &**f == path) {
            if s.fields.len() < MAX_FINDINGS * 4 {
                s.fields.push(Arc::from(path));
            } else {
                s.truncated = true;
            }
        }
    }

    fn walk(&mut self, v: &Value, path: &mut String, name: &str, depth: usize) {
        self.nodes += 1;
        if depth > MAX_DEPTH || self.nodes > MAX_NODES {
            self.scan.truncated = true;
            return;
        }
        match v {
            Value::Object(o) => {
                // A latitude next to a longitude is a location.
                let coord = |keys: &[&str]| {
                    o.iter().find(|(k, x)| {
                        keys.contains(&k.to_ascii_lowercase().as_str())
                            && x.as_f64().is_some_and(|f| {
                                let t = x.to_string();
                                f.abs() <= 180.0
                                    && t.split('.').nth(1).is_some_and(|d| d.len() >= 3)
                            })
                    })
                };
                let located = coord(&["lat", "latitude"]).is_some()
                    && coord(&["lon", "lng", "long", "longitude"]).is_some();
                for (k, x) in o {
                    let len = path.len();
                    path.push('.');
                    path.push_str(k);
                    let lk = k.to_ascii_lowercase();
                    if located
                        && ["lat", "latitude", "lon", "lng", "long", "longitude"]
                            .contains(&lk.as_str())
                    {
                        self.field(path);
                        self.add(path, Class::Geolocation, &x.to_string());
                    } else {
                        self.walk(x, path, &lk, depth + 1);
                    }
                    path.truncate(len);
                }
            }
            Value::Array(items) => {
                self.scan.records = self
                    .scan
                    .records
                    .max(items.len().min(u32::MAX as usize) as u32);
                let len = path.len();
                path.push_str("[]");
                for x in items {
                    self.walk(x, path, name, depth + 1);
                }
                path.truncate(len);
            }
            Value::String(s) => {
                self.field(path);
                if let Some(c) = classify(name, s) {
                    self.add(path, c, s);
                }
            }
            Value::Number(n) => {
                self.field(path);
                let t = n.to_string();
                if let Some(c) = classify(name, &t) {
                    self.add(path, c, &t);
                }
            }
            _ => self.field(path),
        }
    }
}

/// Scans a response body: JSON by field paths, other text by value patterns.
pub fn scan(headers: &[Header], body: &[u8]) -> Scan {
    let mut out = Scan::default();
    if body.is_empty() {
        return out;
    }
    if body.len() > MAX_SCAN_BYTES {
        out.truncated = true;
        return out;
    }
    let ctype = header(headers, "content-type")
        .map(|c| String::from_utf8_lossy(c).to_ascii_lowercase())
        .unwrap_or_default();
    let jsonish = ctype.contains("json") || matches!(body.first(), Some(b'{' | b'['));
    if jsonish && let Ok(v) = serde_json::from_slice::<Value>(body) {
        let mut w = Walker {
            scan: &mut out,
            nodes: 0,
        };
        let mut path = String::from("$");
        w.walk(&v, &mut path, "", 0);
        return out;
    }
    if ctype.starts_with("text/") || ctype.contains("xml") || ctype.is_empty() {
        let text = String::from_utf8_lossy(body);
        let mut w = Walker {
            scan: &mut out,
            nodes: 0,
        };
        for m in text_patterns().find_iter(&text).take(MAX_FINDINGS) {
            let v = m.as_str();
            if let Some(c) = classify("", v) {
                w.add("text", c, v);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, v: &str) -> Option<&'static str> {
        classify(name, v).map(Class::as_str)
    }

    #[test]
    fn every_pattern_compiles() {
        for r in [
            bcrypt(),
            crypt(),
            jwt(),
            cloud_key(),
            ssn(),
            iban(),
            date(),
            text_patterns(),
        ] {
            assert_ne!(r.as_str(), "$^");
        }
    }

    #[test]
    fn classifiers_true_and_false() {
        // e-mail
        assert_eq!(c("contact", "jane.doe@example.com"), Some("email"));
        assert_eq!(c("contact", "jane.doe@localhost"), None);
        // phone: international anywhere, national under a phone-like name
        assert_eq!(c("x", "+44 7700 900123"), Some("phone"));
        assert_eq!(c("mobile", "(555) 010-9999"), Some("phone"));
        assert_eq!(c("count", "5550109999"), None);
        // payment card (Luhn)
        assert_eq!(c("pan", "4111 1111 1111 1111"), Some("payment-card"));
        assert_eq!(c("n", "4111111111111112"), None);
        // IBAN (mod 97)
        assert_eq!(c("account", "GB82 WEST 1234 5698 7654 32"), Some("iban"));
        assert_eq!(c("account", "GB82 WEST 1234 5698 7654 33"), None);
        // US SSN
        assert_eq!(c("x", "123-45-6789"), Some("national-id"));
        assert_eq!(c("x", "666-45-6789"), None);
        assert_eq!(c("ssn", "123456789"), Some("national-id"));
        // date of birth: a date under a birth-like name only
        assert_eq!(c("date_of_birth", "1985-04-12"), Some("date-of-birth"));
        assert_eq!(c("dob", "12/04/1985"), Some("date-of-birth"));
        assert_eq!(c("created_at", "1985-04-12"), None);
        // street address
        assert_eq!(c("street", "221B Baker Street"), Some("street-address"));
        assert_eq!(c("street", "Baker Street"), None);
        // password hashes
        assert_eq!(
            c(
                "x",
                "$2b$12$KIXQJbtWlnnkv1ENcP8Bbe2bRtVp7rX3N3jjSH.Xq4PwO/3P0j3pW"
            ),
            Some("password-hash")
        );
        assert_eq!(
            c("x", "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"),
            Some("password-hash")
        );
        assert_eq!(
            c("password", "5f4dcc3b5aa765d61d8327deb882cf99"),
            Some("password-hash")
        );
        assert_eq!(c("etag", "5f4dcc3b5aa765d61d8327deb882cf99"), None);
        // secrets
        assert_eq!(
            c("x", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl"),
            Some("secret")
        );
        assert_eq!(c("x", "AKIAIOSFODNN7EXAMPLE"), Some("secret"));
        assert_eq!(
            c("x", "-----BEGIN RSA PRIVATE KEY-----\nMIIE"),
            Some("secret")
        );
        assert_eq!(c("api_key", "k3y-9f8e7d6c5b4a3210"), Some("secret"));
        assert_eq!(c("api_key", "short"), None);
        // internal addresses
        assert_eq!(c("upstream", "10.2.3.4"), Some("internal-ip"));
        assert_eq!(c("upstream", "fd00::1"), Some("internal-ip"));
        assert_eq!(c("upstream", "8.8.8.8"), None);
        // ordinary values
        assert_eq!(c("name", "Alice Liddell"), None);
        assert_eq!(c("id", "2001"), None);
    }

    fn json() -> Vec<Header> {
        vec![Header {
            name: "Content-Type".into(),
            value: b"application/json".to_vec(),
        }]
    }

    #[test]
    fn json_walk_names_field_paths_and_never_keeps_values() {
        let body = br#"{"id":2001,"name":"Alice","email":"alice.liddell@example.com",
            "home":{"lat":51.501364,"lon":-0.141890,"street":"12 Buckingham Palace Road"},
            "payment":{"card_number":"4111111111111111"},
            "password_hash":"$2b$12$KIXQJbtWlnnkv1ENcP8Bbe2bRtVp7rX3N3jjSH.Xq4PwO/3P0j3pW",
            "friends":[{"email":"bob@example.net"},{"email":"carol@example.org"}]}"#;
        let s = scan(&json(), body);
        let got: Vec<(String, &str)> = s
            .findings
            .iter()
            .map(|f| (f.path.to_string(), f.class.as_str()))
            .collect();
        assert_eq!(
            got,
            // Keys in name order (serde_json objects are sorted).
            vec![
                ("$.email".to_string(), "email"),
                ("$.friends[].email".to_string(), "email"),
                ("$.home.lat".to_string(), "geolocation"),
                ("$.home.lon".to_string(), "geolocation"),
                ("$.home.street".to_string(), "street-address"),
                ("$.password_hash".to_string(), "password-hash"),
                ("$.payment.card_number".to_string(), "payment-card"),
            ]
        );
        assert_eq!(s.records, 2);
        assert!(s.fields.iter().any(|f| &**f == "$.name"));
        let dump = format!("{s:?}");
        for secret in [
            "alice.liddell",
            "51.501364",
            "Buckingham",
            "4111111111111111",
            "KIXQJ",
            "bob@",
        ] {
            assert!(!dump.contains(secret), "{secret} kept in {dump}");
        }
    }

    #[test]
    fn text_bodies_are_scanned_by_value_and_caps_hold() {
        let s = scan(&[], b"Contact: jane@example.com, card 4111 1111 1111 1111.");
        let classes: Vec<&str> = s.findings.iter().map(|f| f.class.as_str()).collect();
        assert_eq!(classes, vec!["email", "payment-card"]);
        let deep = "[".repeat(100) + &"]".repeat(100);
        let s = scan(&json(), deep.as_bytes());
        assert!(s.truncated);
        let big = vec![b' '; MAX_SCAN_BYTES + 1];
        assert!(scan(&json(), &big).truncated);
    }
}
