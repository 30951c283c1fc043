//! Excessive data exposure: what each response gives away.
//!
//! Workers scan response bodies ([`scan`]): JSON is walked with field paths (`$.user.home.lat`,
//! arrays as `[]`) under depth, node and size caps; other text bodies are searched by value
//! patterns. Each value is classified by its field name and its shape ([`classify`]): e-mail,
//! phone, payment card (Luhn), IBAN (mod 97), national id (US SSN), date of birth, precise
//! geolocation, street address, password hash (every usual storage format, or any value
//! under a password's field name), secret (JWTs, cloud keys, private keys, API keys),
//! internal IP address. Only field paths, classes and masked samples leave this
//! module; values never do. JSON is walked in place, in one pass, by a hand-written reader
//! that accepts exactly what serde_json accepted (the serde walker is its test oracle);
//! its buffers are per-thread scratch, so a scan allocates only what it returns. gRPC
//! responses ([`scan_grpc`]) are walked message by message as protobuf, by field names
//! when the method's descriptor is known and by field numbers otherwise, into the same
//! [`Scan`] under the same caps.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use regex::Regex;

use crate::http::{Headers, header};
use crate::redact;

/// Largest body scanned.
const MAX_SCAN_BYTES: usize = 512 * 1024;
/// Deepest JSON nesting walked.
const MAX_DEPTH: usize = 32;
/// Most JSON values visited per body.
const MAX_NODES: usize = 20_000;
/// Most distinct sensitive field paths reported per body.
const MAX_FINDINGS: usize = 64;

pub use crate::exposure_class::Class;

/// A sensitive value found: where, what, and a masked sample (never the value).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Finding {
    pub path: Arc<str>,
    pub class: Class,
    pub masked: Arc<str>,
    /// Keyed hashes of the first values found at this path (at most [`MAX_DIGESTS`]):
    /// the same value served to many principals is public data (a shop's address), not
    /// someone's personal data. Never the values themselves.
    pub digests: smallvec::SmallVec<[u64; 4]>,
}

/// Value digests kept per finding.
pub const MAX_DIGESTS: usize = 8;

/// A value's digest: fixed seed, so workers and the detect thread agree.
fn digest(value: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x7075_626c_6963).hash_one(value)
}

/// What one response gave away.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Scan {
    /// Sensitive fields, one per (path, class).
    pub findings: Vec<Finding>,
    /// Every field path of the JSON body (for the inventory), up to 64 KiB of them,
    /// separated by newlines. Shared: an endpoint answers with the same few shapes, so the
    /// worker hands out one copy per shape (no allocation per response, a reference in
    /// every event the ordering buffer holds) and the inventory knows a shape by pointer.
    pub fields: Arc<str>,
    /// The longest array: records per response.
    pub records: u32,
    /// A cap cut the walk short.
    pub truncated: bool,
    /// Object ids the body returns (BOLA): the top-level `id` (field `None`), and the `id`
    /// of objects in arrays (field: the array's name; `None` for a top-level array).
    pub ids: Vec<(Option<Arc<str>>, Arc<str>)>,
    /// The first top-level owner field of a JSON object body (`$.user_id`, `$.owner_id`,
    /// `$.customer_id`, `$.account_id`, or their camelCase), when ids are wanted: whose
    /// object this is, by the server's own answer.
    pub owner: Option<Arc<str>>,
    /// The response says any cache may keep it and serve it to anyone
    /// (`Cache-Control: public` or `s-maxage`, without `private` or `no-store`): the
    /// server declares it nobody's in particular, like a store locator's answer.
    pub shared_cache: bool,
}

/// Whether `Cache-Control` lets shared caches serve the response to every client.
pub fn shared_cacheable(headers: &Headers) -> bool {
    let mut public = false;
    for h in headers.iter().filter(|h| h.name.is("cache-control")) {
        // Directive names are ASCII tokens: compared as bytes, nothing allocated.
        for d in h.value[..].split(|b| *b == b',') {
            let name = d
                .split(|b| *b == b'=')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            if name.eq_ignore_ascii_case(b"private") || name.eq_ignore_ascii_case(b"no-store") {
                return false;
            }
            public |=
                name.eq_ignore_ascii_case(b"public") || name.eq_ignore_ascii_case(b"s-maxage");
        }
    }
    public
}

/// Most returned ids kept per body.
const MAX_IDS: usize = 64;

/// Top-level fields naming the owner of the object a response describes (lower-cased).
const OWNER_FIELDS: &[&str] = &[
    "user_id",
    "userid",
    "owner_id",
    "ownerid",
    "customer_id",
    "customerid",
    "account_id",
    "accountid",
];

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    // The patterns are constants of this file; a test compiles every one.
    cell.get_or_init(|| {
        Regex::new(pattern).unwrap_or_else(|_| Regex::new("$^").unwrap_or_else(|_| unreachable!()))
    })
}

/// Password hashes by their storage format, anchored (one alternative per family):
/// - modular crypt and PHC strings, `$id$[params$]salt$hash`: bcrypt `$2a/2b/2x/2y$`,
///   `$1$` md5-crypt, `$5$`/`$6$` sha-crypt, `$y$`/`$gy$` yescrypt, `$7$` scrypt, `$sha1$`,
///   `$md5$`, phpass `$P$`/`$H$`, Drupal `$S$`, PHC `$argon2id|i|d$`, `$pbkdf2[-shaN]$`,
///   `$scrypt$`, passlib `$bcrypt-sha256$`;
/// - Django's `algorithm$...`: `pbkdf2_sha256`, `pbkdf2_sha1`, `argon2`, `bcrypt_sha256`,
///   `bcrypt`, `scrypt`, `md5`, `sha1`, `unsalted_md5`, `unsalted_sha1`, `crypt`;
/// - Werkzeug (Flask) `pbkdf2:sha256:N$salt$hex`, `scrypt:N:r:p$salt$hex`;
/// - LDAP `{SSHA}`, `{SHA}`, `{SSHA512}`, `{CRYPT}`, `{PBKDF2-...}`, Atlassian `{PKCS5S2}`...;
/// - PostgreSQL `md5<hex>` and `SCRAM-SHA-256$iter:salt$stored:server`, MySQL `*<HEX40>`.
///
/// The last field must be a digest (16 or more characters of a hash alphabet), so a price
/// (`$1,299`), a template (`${name}`) or a regex replacement (`$1$2`) never matches.
fn password_hash() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    re(
        &R,
        concat!(
            r"^(?:",
            r"\$(?:2[abxy]?|1|5|6|7|y|gy|sha1|md5|P|H|S|argon2(?:id|i|d)",
            r"|pbkdf2(?:-sha(?:1|224|256|384|512))?|scrypt|bcrypt-sha256)",
            r"\$(?:[A-Za-z0-9./+=,-]*\$)*[A-Za-z0-9./+]{16,}={0,2}",
            r"|(?:pbkdf2_sha(?:1|256)|argon2|bcrypt(?:_sha256)?|scrypt|md5|sha1|unsalted_md5",
            r"|unsalted_sha1|crypt)\$(?:[A-Za-z0-9./+=,-]*\$)*[A-Za-z0-9./+]{16,}={0,2}",
            r"|(?:pbkdf2:sha(?:1|224|256|384|512)(?::\d+)?|scrypt:\d+:\d+:\d+)",
            r"\$[^$\s]{1,64}\$[0-9a-f]{32,}",
            r"|(?i:\{(?:S?SHA(?:256|384|512)?|S?MD5|CRYPT|PKCS5S2|ARGON2|BCRYPT",
            r"|PBKDF2(?:[-_]SHA(?:1|256|512))?)\})[A-Za-z0-9./+=$,-]{16,}",
            r"|md5[0-9a-f]{32}",
            r"|SCRAM-SHA-(?:1|256)\$\d+:[A-Za-z0-9+/]+={0,2}\$[A-Za-z0-9+/]+={0,2}:[A-Za-z0-9+/]+={0,2}",
            r"|\*[0-9A-F]{40}",
            // Argon2's parameters are telling enough to admit short (truncated) digests.
            r"|(?:argon2)?\$argon2(?:id|i|d)\$(?:v=\d+\$)?m=\d+,t=\d+,p=\d+[^$]*\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]{4,}",
            r")$"
        ),
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
/// Whether `b` opens like one of [`cloud_key`]'s alternatives: prose that starts with a
/// capital A or an s never reaches the regex.
fn cloud_key_prefix(b: &[u8]) -> bool {
    b.starts_with(b"AKIA")
        || b.starts_with(b"ASIA")
        || b.starts_with(b"AIza")
        || b.starts_with(b"sk_live_")
        || b.starts_with(b"rk_live_")
        || (b.starts_with(b"gh") && b.get(3) == Some(&b'_'))
        || b.starts_with(b"xox")
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
        r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*|\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}|(?:\$(?:argon2(?:id|i|d)|pbkdf2(?:-sha\d+)?|scrypt|[156y])|\b(?:pbkdf2_sha(?:1|256)|argon2|bcrypt(?:_sha256)?))\$[A-Za-z0-9./+=,$-]{20,}|-----BEGIN [A-Z ]*PRIVATE KEY-----|\b(?:\d[ -]?){12,18}\d\b",
    )
}

/// Whether `name` contains any of `words`. Field names are short: comparing windows
/// beats setting up a substring searcher per word, and this runs on most values.
fn name_has(name: &str, words: &[&str]) -> bool {
    let n = name.as_bytes();
    words
        .iter()
        .any(|w| n.windows(w.len()).any(|x| x == w.as_bytes()))
}

fn iban_valid(v: &str) -> bool {
    // The pattern opens with two capitals and two digits: most capitalised text (a
    // title, a name) fails here, before a copy without spaces is made.
    let mut head = v.chars().filter(|c| !c.is_whitespace());
    let opens = head.next().is_some_and(|c| c.is_ascii_uppercase())
        && head.next().is_some_and(|c| c.is_ascii_uppercase())
        && head.next().is_some_and(|c| c.is_ascii_digit())
        && head.next().is_some_and(|c| c.is_ascii_digit());
    if !opens {
        return false;
    }
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
    let v4 = |a: std::net::Ipv4Addr| a.is_private() || a.is_loopback() || a.is_link_local();
    match v.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => v4(a),
        // Unique local, loopback, link local, or an internal IPv4 address written mapped
        // (`::ffff:10.0.0.1`).
        Ok(IpAddr::V6(a)) => {
            (a.segments()[0] & 0xfe00) == 0xfc00
                || a.is_loopback()
                || a.is_unicast_link_local()
                || a.to_ipv4_mapped().is_some_and(v4)
        }
        Err(_) => false,
    }
}

/// Whether a field name (lower case) names a password, passphrase or password hash:
/// separators dropped, up to two qualifiers stripped from each end (`hashed_password`,
/// `user_password_hash`, `encrypted_password`, `password_digest`, `userPassword`), what is
/// left must be the word itself. `pass`, `pw` and `secret` count only with a hash-like
/// suffix (`pass_hash`, `pw_hash`, `secret_hash`), so `bypass`, `pass_rate` or `secret_key`
/// do not; settings about passwords (`password_policy`, `has_password`,
/// `password_min_length`, `password_changed_at`, `passwordless`) keep other words and do not.
/// No allocation: this runs on every string of every response.
fn password_field(name: &str) -> bool {
    const PREFIXES: &[&[u8]] = &[
        b"hashed",
        b"encrypted",
        b"crypted",
        b"salted",
        b"user",
        b"account",
        b"admin",
        b"login",
        b"current",
        b"old",
        b"new",
        b"stored",
        b"db",
        b"root",
        b"member",
    ];
    const SUFFIXES: &[&[u8]] = &[
        b"hashed",
        b"hash",
        b"digest",
        b"crypted",
        b"crypt",
        b"encrypted",
        b"enc",
        b"sha1",
        b"sha256",
        b"sha512",
        b"md5",
        b"bcrypt",
        b"confirmation",
        b"confirm",
    ];
    let mut buf = [0u8; 48];
    let mut n = 0;
    for b in name.bytes() {
        if matches!(b, b'_' | b'-' | b'.' | b' ') {
            continue;
        }
        let Some(slot) = buf.get_mut(n) else {
            return false;
        };
        *slot = b.to_ascii_lowercase();
        n += 1;
    }
    let mut s = &buf[..n];
    // Every word that qualifies holds `pass`, `pw` or `secret`: most names stop here,
    // before the qualifiers are tried.
    let holds = |w: &[u8]| s.windows(w.len()).any(|x| x == w);
    if !(holds(b"pass") || holds(b"pw") || holds(b"secret")) {
        return false;
    }
    for _ in 0..2 {
        if let Some(rest) = PREFIXES.iter().find_map(|p| s.strip_prefix(*p)) {
            s = rest;
        }
    }
    let mut qualified = false;
    for _ in 0..2 {
        if let Some(rest) = SUFFIXES.iter().find_map(|p| s.strip_suffix(*p)) {
            s = rest;
            qualified = true;
        }
    }
    match s {
        b"password" | b"passwd" | b"pwd" | b"passphrase" | b"passcode" | b"passwort" => true,
        b"pass" | b"pw" | b"secret" => qualified,
        _ => false,
    }
}

/// A value that stands in for a password without being one: a mask (`********`) or a
/// placeholder word (`[REDACTED]`, `null`, an API schema's `string`).
fn placeholder(v: &str) -> bool {
    const WORDS: &[&str] = &[
        "null",
        "none",
        "nil",
        "n/a",
        "undefined",
        "redacted",
        "filtered",
        "hidden",
        "masked",
        "removed",
        "string",
        "required",
        "optional",
        "true",
        "false",
        "set",
        "unset",
    ];
    let w = v.trim_matches(|c: char| matches!(c, '[' | ']' | '<' | '>' | '(' | ')' | '{' | '}'));
    v.chars()
        .all(|c| matches!(c, '*' | '•' | '●' | 'x' | 'X' | '#' | '-' | '.' | ' '))
        || WORDS.iter().any(|p| w.eq_ignore_ascii_case(p))
}

/// What a field name (lower case) says about its values, worked out once per name: the
/// JSON walker meets the same names in every record of every response, and the word
/// searches are most of what classifying a value under a name costs.
#[derive(Clone, Copy, Default)]
struct NameFlags(u8);

impl NameFlags {
    /// A password's name, for a hex digest under it.
    const PASSWORD_HEX: u8 = 1;
    /// [`password_field`].
    const PASSWORD: u8 = 1 << 1;
    const SECRET: u8 = 1 << 2;
    const NATIONAL_ID: u8 = 1 << 3;
    const BIRTH: u8 = 1 << 4;
    const PHONE: u8 = 1 << 5;
    const ADDRESS: u8 = 1 << 6;

    fn of(name: &str) -> NameFlags {
        let mut f = 0;
        let mut set = |bit: u8, on: bool| {
            if on {
                f |= bit;
            }
        };
        set(
            Self::PASSWORD_HEX,
            name_has(
                name,
                &["password", "passwd", "pwd", "pass_hash", "passhash"],
            ),
        );
        set(Self::PASSWORD, password_field(name));
        set(
            Self::SECRET,
            name_has(
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
            ),
        );
        set(
            Self::NATIONAL_ID,
            name_has(name, &["ssn", "social_security"]),
        );
        set(Self::BIRTH, name_has(name, &["birth", "dob", "birthday"]));
        set(
            Self::PHONE,
            name_has(name, &["phone", "mobile", "msisdn", "tel", "cell"]),
        );
        set(
            Self::ADDRESS,
            name_has(name, &["address", "street", "addr_line", "address_line"]),
        );
        NameFlags(f)
    }

    fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

/// What a JSON key says about the value under it, worked out from its lower-case name once
/// per name: records in a list repeat the same keys, and these tests (a lower-case copy of
/// the name, the coordinate names, the owner fields, the name's [`NameFlags`]) were a third
/// of what walking a key cost.
#[derive(Clone, Copy, Default)]
struct KeyFacts {
    flags: NameFlags,
    /// `id`: a returned object's id.
    id: bool,
    /// One of [`OWNER_FIELDS`].
    owner: bool,
    /// A latitude's or a longitude's name ([`LAT`], [`LON`]).
    lat: bool,
    lon: bool,
}

impl KeyFacts {
    /// The facts of a key named `lower` (in ASCII lower case).
    fn of(lower: &str) -> KeyFacts {
        KeyFacts {
            flags: NameFlags::of(lower),
            id: lower == "id",
            owner: OWNER_FIELDS.contains(&lower),
            lat: is_any(lower, LAT),
            lon: is_any(lower, LON),
        }
    }
}

/// Keys' [`KeyFacts`] by their names as sent, kept per thread: a JSON API has a few
/// hundred names, so the memo stays small; a body inventing names by the thousand only
/// makes it start over.
#[derive(Default)]
struct NameMemo(std::collections::HashMap<Box<str>, KeyFacts, foldhash::fast::RandomState>);

/// Names the memo holds before it starts over.
const NAME_MEMO_MAX: usize = 4096;
/// Longest name the memo keeps (a hostile body's megabyte-long keys are worked out each
/// time instead: the memo stays within `NAME_MEMO_MAX` short names).
const NAME_MEMO_MAX_LEN: usize = 64;

impl NameMemo {
    /// The facts of the key `name` (as sent, in any case).
    fn get(&mut self, name: &str) -> KeyFacts {
        if name.len() > NAME_MEMO_MAX_LEN {
            return KeyFacts::of(&name.to_ascii_lowercase());
        }
        if let Some(f) = self.0.get(name) {
            return *f;
        }
        let f = KeyFacts::of(&name.to_ascii_lowercase());
        if self.0.len() >= NAME_MEMO_MAX {
            self.0.clear();
        }
        self.0.insert(name.into(), f);
        f
    }
}

/// The class of one value under a field name (lower case), if it is sensitive.
pub fn classify(name: &str, value: &str) -> Option<Class> {
    classify_named(NameFlags::of(name), value)
}

/// [`classify`] with the name's flags already worked out. Cheap byte tests come first:
/// this runs on every string and number of every response.
fn classify_named(name: NameFlags, value: &str) -> Option<Class> {
    let v = value.trim();
    let b = v.as_bytes();
    if b.is_empty() || b.len() > 4096 {
        return None;
    }
    let first = b[0];
    let shape = Shape::of(b);
    // Every format in `password_hash` holds a `$`, or starts with `{`, `*` or `md5`.
    if b.len() >= 20
        && (shape.has(Shape::DOLLAR) || matches!(first, b'{' | b'*') || b.starts_with(b"md5"))
        && password_hash().is_match(v)
    {
        return Some(Class::PasswordHash);
    }
    let hex = matches!(b.len(), 32 | 40 | 56 | 64 | 96 | 128) && !shape.has(Shape::NOT_HEX);
    if hex && name.has(NameFlags::PASSWORD_HEX) {
        return Some(Class::PasswordHash);
    }
    if (b.starts_with(b"eyJ") && jwt().is_match(v))
        || (b.len() >= 16 && cloud_key_prefix(b) && cloud_key().is_match(v))
        || (first == b'-' && v.contains("PRIVATE KEY-----"))
    {
        return Some(Class::Secret);
    }
    // Under a password's name anything is one (plaintext, a hex or base64 digest, an
    // ASP.NET Identity blob), unless it is a mask or placeholder.
    if name.has(NameFlags::PASSWORD) && !placeholder(v) {
        return Some(Class::PasswordHash);
    }
    let digits = shape.digits;
    if b.len() >= 16 && name.has(NameFlags::SECRET) && digits > 0 && shape.has(Shape::ALPHA) {
        return Some(Class::Secret);
    }
    let at = shape.has(Shape::AT);
    // Without an `@`, a letter makes `kind` answer `Other` (timestamps, ids, prices with
    // a currency): only a value of digits and separators can be a card or a phone.
    let numeric = !shape.has(Shape::ALPHA);
    if at || (digits >= 7 && numeric) {
        match redact::kind(v) {
            redact::Kind::Email => return Some(Class::Email),
            redact::Kind::Card => return Some(Class::PaymentCard),
            _ => {}
        }
    }
    if b.len() >= 15 && first.is_ascii_uppercase() && iban_valid(v) {
        return Some(Class::Iban);
    }
    if (b.len() == 11 && b[3] == b'-' && ssn_valid(v))
        || (b.len() == 9 && digits == 9 && name.has(NameFlags::NATIONAL_ID))
    {
        return Some(Class::NationalId);
    }
    if digits >= 6 && name.has(NameFlags::BIRTH) && date().is_match(v) {
        return Some(Class::DateOfBirth);
    }
    if digits >= 7
        && numeric
        && (first == b'+' || name.has(NameFlags::PHONE))
        && redact::kind(v) == redact::Kind::Phone
    {
        return Some(Class::Phone);
    }
    if digits > 0
        && shape.has(Shape::SPACE)
        && !at
        && name.has(NameFlags::ADDRESS)
        && v.chars().any(char::is_alphabetic)
    {
        return Some(Class::StreetAddress);
    }
    if digits >= 2
        && shape.has(Shape::DOT_OR_COLON)
        && !shape.has(Shape::NOT_IP)
        && b.len() <= 45
        && internal_ip(v)
    {
        return Some(Class::InternalIp);
    }
    None
}

/// What [`classify_named`] asks of a value's bytes, gathered in one pass (it ran up to
/// eight scans of every string of every response).
struct Shape {
    /// ASCII digits.
    digits: usize,
    flags: u8,
}

/// Per byte: the [`Shape`] flags it sets (bit 0 marks a digit, counted apart).
static BYTE_SHAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        let mut f = 0;
        if b.is_ascii_digit() {
            f |= Shape::DIGIT;
        }
        if b.is_ascii_alphabetic() {
            f |= Shape::ALPHA;
        }
        if !b.is_ascii_hexdigit() {
            f |= Shape::NOT_HEX;
        }
        // What an IP address is made of (all `IpAddr::from_str` accepts).
        if !(b.is_ascii_hexdigit() || b == b'.' || b == b':') {
            f |= Shape::NOT_IP;
        }
        f |= match b {
            b'$' => Shape::DOLLAR,
            b'@' => Shape::AT,
            b' ' => Shape::SPACE,
            b'.' | b':' => Shape::DOT_OR_COLON,
            _ => 0,
        };
        t[c] = f;
        c += 1;
    }
    t
};

impl Shape {
    const DIGIT: u8 = 1;
    const ALPHA: u8 = 1 << 1;
    const NOT_HEX: u8 = 1 << 2;
    const DOLLAR: u8 = 1 << 3;
    const AT: u8 = 1 << 4;
    const SPACE: u8 = 1 << 5;
    const DOT_OR_COLON: u8 = 1 << 6;
    const NOT_IP: u8 = 1 << 7;

    fn of(b: &[u8]) -> Shape {
        let mut digits = 0;
        let mut flags = 0;
        for &c in b {
            let f = BYTE_SHAPE[usize::from(c)];
            digits += usize::from(f & Shape::DIGIT);
            flags |= f;
        }
        Shape { digits, flags }
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

fn masked(class: Class, v: &str) -> Arc<str> {
    Arc::from(match class {
        Class::Email | Class::Phone | Class::PaymentCard => redact::mask(v),
        Class::PasswordHash | Class::Secret => format!("hash:{}", redact::token(v)),
        _ => match v.chars().next() {
            Some(first) => format!("{first}***"),
            None => "***".to_string(),
        },
    })
}

/// Hashes of the field paths listed so far in one body: a set, as a page of records looks
/// every path up once per record.
type SeenPaths = hashbrown::HashSet<u64, foldhash::fast::FixedState>;

struct Walker<'a> {
    scan: &'a mut Scan,
    /// The field list being built (the scan's is set from it, shared, at the end).
    fields: &'a mut String,
    nodes: usize,
    /// Hashes of the field paths already listed: arrays repeat the same paths, and
    /// comparing hashes keeps the walk linear in the body.
    seen: &'a mut SeenPaths,
    /// Field paths and array names, shared across responses (an endpoint answers with
    /// the same paths every time): a finding costs a reference count, not a copy.
    names: &'a mut crate::intern::Interner,
    /// Collect returned ids (only BOLA's learning needs them).
    want_ids: bool,
    /// The array field the last returned id was listed under: lists repeat it.
    id_field: Option<Arc<str>>,
}

impl Walker<'_> {
    fn add(&mut self, path: &str, class: Class, value: &str) {
        let s = &mut *self.scan;
        if let Some(f) = s
            .findings
            .iter_mut()
            .find(|f| &*f.path == path && f.class == class)
        {
            if f.digests.len() < MAX_DIGESTS {
                let d = digest(value);
                if !f.digests.contains(&d) {
                    f.digests.push(d);
                }
            }
            return;
        }
        if s.findings.len() < MAX_FINDINGS {
            s.findings.push(Finding {
                path: self.names.name(path),
                class,
                masked: masked(class, value),
                digests: smallvec::smallvec![digest(value)],
            });
        } else {
            s.truncated = true;
        }
    }

    /// A field at `path` holding `v`, one level down (callers skip deeper values, a cheap
    /// first cut): the response's owner when it is a top-level field (`$.name`), its name
    /// is one of [`OWNER_FIELDS`] (`owner`) and none came before.
    fn owner_field(&mut self, path: &str, owner: bool, v: &str) {
        if !self.want_ids || self.scan.owner.is_some() || !owner {
            return;
        }
        match path.strip_prefix("$.") {
            Some(key) if !key.contains(['.', '[']) => self.scan.owner = Some(Arc::from(v)),
            _ => {}
        }
    }

    /// An `id` at `path` (`$.id`, `$[].id`, `$.orders[].id`): a returned object.
    fn returned_id(&mut self, path: &str, id: &str) {
        if !self.want_ids {
            return;
        }
        let Some(prefix) = path.strip_suffix(".id") else {
            return;
        };
        let field = if prefix == "$" || prefix == "$[]" {
            None
        } else if let Some(arr) = prefix.strip_suffix("[]") {
            let name = arr.rsplit('.').next().unwrap_or(arr).trim_end_matches("[]");
            match &self.id_field {
                Some(f) if **f == *name => Some(f.clone()),
                _ => {
                    let f: Arc<str> = self.names.name(name);
                    self.id_field = Some(f.clone());
                    Some(f)
                }
            }
        } else {
            return;
        };
        if self.scan.ids.len() < MAX_IDS {
            self.scan.ids.push((field, Arc::from(id)));
        }
    }

    fn field(&mut self, path: &str) {
        let h = {
            use std::hash::BuildHasher;
            foldhash::fast::FixedState::with_seed(7).hash_one(path)
        };
        if self.seen.insert(h) {
            if self.fields.len() < 64 * 1024 {
                if !self.fields.is_empty() {
                    self.fields.push('\n');
                }
                self.fields.push_str(path);
            } else {
                self.scan.truncated = true;
            }
        }
    }
}

const LAT: &[&str] = &["lat", "latitude"];
const LON: &[&str] = &["lon", "lng", "long", "longitude"];

fn is_any(k: &str, names: &[&str]) -> bool {
    names.iter().any(|n| k.eq_ignore_ascii_case(n))
}

/// At least three decimals and within range: a precise coordinate.
fn precise(f: f64) -> bool {
    f.abs() <= 180.0
        && f.fract() != 0.0
        && format!("{f}")
            .split('.')
            .nth(1)
            .is_some_and(|d| d.len() >= 3)
}

/// Scratch buffers of the JSON walker, kept per thread so that scanning a response
/// allocates only what the [`Scan`] it returns holds.
#[derive(Default)]
struct Scratch {
    /// The field path being walked (`$.orders[].id`).
    path: String,
    /// Hashes of the field paths listed so far.
    seen: SeenPaths,
    /// A string value with escapes, unescaped.
    text: String,
    /// Open containers of a value skipped past a cap (`[` or `{`), so skipping is not
    /// recursive however deep the body nests.
    frames: Vec<u8>,
    /// The field list being built (then shared through `names`).
    fields: String,
    /// Shared field paths (bounded: see [`crate::intern`]).
    names: crate::intern::Interner,
    /// What the field names seen say about their values (JSON keys and gRPC fields).
    memo: NameMemo,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// The body is not JSON (after what was walked).
struct NotJson;

type Walked<T = ()> = Result<T, NotJson>;

/// serde_json's nesting limit, kept so the same bodies count as JSON as before.
const SERDE_DEPTH: u8 = 128;

/// Walks JSON keys and scalars in place: values are classified as borrowed slices of the
/// body (unescaped into scratch only when they hold escapes), numbers are looked at as
/// text, and nothing is built for values that are only listed. Accepts exactly what
/// serde_json's `Deserializer::from_slice` accepted for the first value of the body
/// (trailing bytes ignored), including its number range and string rules, so a body is
/// JSON or text as it always was: the serde walker stays as the test oracle.
struct Json<'b, 'w, 'a> {
    b: &'b [u8],
    i: usize,
    w: Walker<'a>,
    path: &'w mut String,
    text: &'w mut String,
    frames: &'w mut Vec<u8>,
    memo: &'w mut NameMemo,
    /// Containers that may still open before serde_json's limit.
    remaining: u8,
    /// The whole body when it is valid UTF-8 (checked once; strings are then slices of
    /// it, as their quotes are ASCII).
    utf8: Option<&'b str>,
}

const fn hex_val(c: u8) -> Option<u16> {
    match c {
        b'0'..=b'9' => Some((c - b'0') as u16),
        b'a'..=b'f' => Some((c - b'a' + 10) as u16),
        b'A'..=b'F' => Some((c - b'A' + 10) as u16),
        _ => None,
    }
}

fn hex4(b: &[u8], i: &mut usize) -> Walked<u16> {
    let Some(d) = b.get(*i..*i + 4) else {
        return Err(NotJson);
    };
    *i += 4;
    d.iter()
        .try_fold(0u16, |acc, &c| Some(acc << 4 | hex_val(c)?))
        .ok_or(NotJson)
}

/// Where the first byte from `from` on is that a JSON string's contents cannot simply
/// hold: its closing quote, an escape, or a control character.
///
/// Eight bytes at a time, in a register: a JSON string is a few to a few dozen bytes, and
/// a search for the quote and the escape followed by a pass for control characters (two
/// calls and a second read) cost three times as much per string. Each test marks the
/// lowest matching byte of a word exactly (a borrow only runs upwards from a match).
fn string_stop(b: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let mut at = from;
    while let Some(word) = b.get(at..at + 8) {
        let v = u64::from_le_bytes(word.try_into().ok()?);
        let quote = zero_byte(v ^ (ONES * u64::from(b'"')));
        let escape = zero_byte(v ^ (ONES * u64::from(b'\\')));
        let control = v.wrapping_sub(ONES * 0x20) & !v & HIGH;
        let stops = quote | escape | control;
        if stops != 0 {
            return Some(at + (stops.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    b.get(at..)?
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map(|j| at + j)
}

/// Scans a string whose opening quote was consumed; `*i` ends after the closing quote.
/// Returns the raw contents and whether they hold escapes. `strict` is serde_json's
/// `parse_str` (UTF-8, paired surrogates), otherwise its `ignore_str` (escapes checked
/// for form only).
fn json_str<'b>(b: &'b [u8], i: &mut usize, strict: bool, utf8: bool) -> Walked<(&'b [u8], bool)> {
    let start = *i;
    let mut escaped = false;
    loop {
        let at = string_stop(b, *i).ok_or(NotJson)?;
        *i = at + 1;
        match b.get(at) {
            Some(b'"') => break,
            Some(b'\\') => {}
            // A control character inside a string.
            _ => return Err(NotJson),
        }
        escaped = true;
        let c = *b.get(*i).ok_or(NotJson)?;
        *i += 1;
        match c {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
            b'u' => {
                let n = hex4(b, i)?;
                if strict {
                    if (0xDC00..=0xDFFF).contains(&n) {
                        return Err(NotJson);
                    }
                    if (0xD800..=0xDBFF).contains(&n) {
                        if b.get(*i..*i + 2) != Some(b"\\u") {
                            return Err(NotJson);
                        }
                        *i += 2;
                        if !(0xDC00..=0xDFFF).contains(&hex4(b, i)?) {
                            return Err(NotJson);
                        }
                    }
                }
            }
            _ => return Err(NotJson),
        }
    }
    let raw = &b[start..*i - 1];
    // Escapes are ASCII: the raw bytes are valid UTF-8 exactly when the unescaped
    // string is (as serde_json checks it).
    if strict && !utf8 && std::str::from_utf8(raw).is_err() {
        return Err(NotJson);
    }
    Ok((raw, escaped))
}

/// Appends the unescaped form of `raw` (checked by [`json_str`] in strict mode).
fn unescape(raw: &[u8], out: &mut String) {
    let Ok(s) = std::str::from_utf8(raw) else {
        return;
    };
    let mut rest = s;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let b = rest.as_bytes();
        let mut i = at + 2;
        let ch = match b.get(at + 1) {
            Some(b'b') => Some('\u{8}'),
            Some(b'f') => Some('\u{c}'),
            Some(b'n') => Some('\n'),
            Some(b'r') => Some('\r'),
            Some(b't') => Some('\t'),
            Some(b'u') => hex4(b, &mut i).ok().and_then(|n| {
                if (0xD800..=0xDBFF).contains(&n) {
                    i += 2;
                    let lo = hex4(b, &mut i).ok()?;
                    char::from_u32(
                        ((u32::from(n) - 0xD800) << 10 | (u32::from(lo) - 0xDC00)) + 0x1_0000,
                    )
                } else {
                    char::from_u32(u32::from(n))
                }
            }),
            Some(&c) => Some(char::from(c)),
            None => None,
        };
        out.extend(ch);
        rest = rest.get(i..).unwrap_or_default();
    }
    out.push_str(rest);
}

/// A number token: its grammar checked, `*i` after it. `Some(v)` for an unsigned integer
/// that fits u64 (what serde_json hands to `visit_u64`).
struct Number<'b> {
    text: &'b [u8],
    unsigned: Option<u64>,
    /// Has a fraction or an exponent (serde_json parses it as f64).
    float: bool,
}

fn json_number<'b>(b: &'b [u8], i: &mut usize) -> Walked<Number<'b>> {
    let start = *i;
    let neg = b.get(*i) == Some(&b'-');
    if neg {
        *i += 1;
    }
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    let int_start = *i;
    match b.get(*i) {
        Some(b'0') => {
            *i += 1;
            if digit(*i) {
                return Err(NotJson);
            }
        }
        Some(b'1'..=b'9') => {
            while digit(*i) {
                *i += 1;
            }
        }
        _ => return Err(NotJson),
    }
    let int_end = *i;
    let mut float = false;
    if b.get(*i) == Some(&b'.') {
        float = true;
        *i += 1;
        if !digit(*i) {
            return Err(NotJson);
        }
        while digit(*i) {
            *i += 1;
        }
    }
    if matches!(b.get(*i), Some(b'e' | b'E')) {
        float = true;
        *i += 1;
        if matches!(b.get(*i), Some(b'+' | b'-')) {
            *i += 1;
        }
        if !digit(*i) {
            return Err(NotJson);
        }
        while digit(*i) {
            *i += 1;
        }
    }
    let digits = &b[int_start..int_end];
    let fits = (!float)
        .then(|| {
            digits.iter().try_fold(0u64, |acc, &c| {
                acc.checked_mul(10)?.checked_add(u64::from(c - b'0'))
            })
        })
        .flatten();
    Ok(Number {
        text: &b[start..*i],
        unsigned: fits.filter(|_| !neg),
        float: float || fits.is_none(),
    })
}

/// A float token's value as serde_json computes it (its own rounding, and an error out
/// of f64's range). Floats are rare in responses; this costs no allocation.
fn json_float(text: &[u8]) -> Walked<f64> {
    serde_json::from_slice::<f64>(text).map_err(|_| NotJson)
}

impl<'b> Json<'b, '_, '_> {
    fn ws(&mut self) -> Option<u8> {
        while let Some(&c) = self.b.get(self.i) {
            if !matches!(c, b' ' | b'\n' | b'\t' | b'\r') {
                return Some(c);
            }
            self.i += 1;
        }
        None
    }

    /// The raw contents of a string (without escapes) starting at `start`, as text.
    fn text_at(&self, start: usize, raw: &'b [u8]) -> Walked<&'b str> {
        match self.utf8 {
            Some(body) => body.get(start..start + raw.len()),
            None => std::str::from_utf8(raw).ok(),
        }
        .ok_or(NotJson)
    }

    fn ident(&mut self, word: &[u8]) -> Walked {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(NotJson)
        }
    }

    fn enter(&mut self) -> Walked {
        self.remaining -= 1;
        if self.remaining == 0 {
            return Err(NotJson);
        }
        self.i += 1;
        Ok(())
    }

    /// After an element: `,` then more (`true`), or the closing byte (`false`).
    fn next(&mut self, close: u8, first: &mut bool) -> Walked<bool> {
        let c = self.ws().ok_or(NotJson)?;
        if c == close {
            self.i += 1;
            return Ok(false);
        }
        if *first {
            *first = false;
            return Ok(true);
        }
        if c != b',' {
            return Err(NotJson);
        }
        self.i += 1;
        match self.ws() {
            Some(c) if c != close => Ok(true),
            _ => Err(NotJson),
        }
    }

    /// A key (opening quote next) and its colon: where its contents start, the contents,
    /// and whether they hold escapes.
    fn key(&mut self, strict: bool) -> Walked<(usize, &'b [u8], bool)> {
        if self.ws() != Some(b'"') {
            return Err(NotJson);
        }
        self.i += 1;
        let start = self.i;
        let (raw, escaped) = json_str(self.b, &mut self.i, strict, self.utf8.is_some())?;
        if self.ws() != Some(b':') {
            return Err(NotJson);
        }
        self.i += 1;
        Ok((start, raw, escaped))
    }

    /// One value at `depth` under a key with `facts` (serde's `Stream::deserialize`).
    fn value(&mut self, facts: KeyFacts, depth: usize) -> Walked {
        self.w.nodes += 1;
        if depth > MAX_DEPTH || self.w.nodes > MAX_NODES {
            self.w.scan.truncated = true;
            return self.skip();
        }
        match self.ws().ok_or(NotJson)? {
            b'n' => self.ident(b"null")?,
            b't' => self.ident(b"true")?,
            b'f' => self.ident(b"false")?,
            b'"' => {
                self.i += 1;
                let (raw, escaped) = json_str(self.b, &mut self.i, true, self.utf8.is_some())?;
                let v = if escaped {
                    self.text.clear();
                    unescape(raw, self.text);
                    self.text.as_str()
                } else {
                    self.text_at(self.i - 1 - raw.len(), raw)?
                };
                self.w.field(self.path);
                if !v.is_empty() && v.len() <= 128 {
                    if facts.id {
                        self.w.returned_id(self.path, v);
                    }
                    if depth == 1 {
                        self.w.owner_field(self.path, facts.owner, v);
                    }
                }
                if let Some(c) = classify_named(facts.flags, v) {
                    self.w.add(self.path, c, v);
                }
                return Ok(());
            }
            b'-' | b'0'..=b'9' => {
                let n = json_number(self.b, &mut self.i)?;
                if n.float {
                    json_float(n.text)?;
                }
                self.w.field(self.path);
                if let (Some(v), Ok(t)) = (n.unsigned, std::str::from_utf8(n.text)) {
                    if facts.id && self.w.want_ids {
                        self.w.returned_id(self.path, t);
                    }
                    if depth == 1 {
                        self.w.owner_field(self.path, facts.owner, t);
                    }
                    // Only long integers can be sensitive (cards, national ids, phones).
                    if v >= 1_000_000
                        && let Some(c) = classify_named(facts.flags, t)
                    {
                        self.w.add(self.path, c, t);
                    }
                }
                return Ok(());
            }
            b'[' => {
                self.enter()?;
                let len = self.path.len();
                self.path.push_str("[]");
                let mut n: u32 = 0;
                let mut first = true;
                while self.next(b']', &mut first)? {
                    self.value(facts, depth + 1)?;
                    n = n.saturating_add(1);
                }
                self.path.truncate(len);
                self.w.scan.records = self.w.scan.records.max(n);
                self.remaining += 1;
                return Ok(());
            }
            b'{' => {
                self.enter()?;
                self.object(depth)?;
                self.remaining += 1;
                return Ok(());
            }
            _ => return Err(NotJson),
        }
        self.w.field(self.path);
        Ok(())
    }

    fn object(&mut self, depth: usize) -> Walked {
        // Coordinates are only known to be a location once both are seen.
        let mut lat: Option<(String, f64)> = None;
        let mut lon: Option<(String, f64)> = None;
        let mut first = true;
        while self.next(b'}', &mut first)? {
            let (start, raw, escaped) = self.key(true)?;
            let len = self.path.len();
            self.path.push('.');
            if escaped {
                unescape(raw, self.path);
            } else {
                self.path.push_str(self.text_at(start, raw)?);
            }
            let facts = self.memo.get(self.path.get(len + 1..).unwrap_or_default());
            let is_lat = facts.lat;
            if is_lat || facts.lon {
                let f = self.strict()?;
                self.w.field(self.path);
                if let Some(f) = f.filter(|f| precise(*f)) {
                    let slot = if is_lat { &mut lat } else { &mut lon };
                    *slot = Some((self.path.clone(), f));
                }
            } else {
                self.value(facts, depth + 1)?;
            }
            self.path.truncate(len);
        }
        if let (Some((pa, a)), Some((po, o))) = (lat, lon)
            && a.abs() <= 90.0
        {
            self.w.add(&pa, Class::Geolocation, &a.to_string());
            self.w.add(&po, Class::Geolocation, &o.to_string());
        }
        Ok(())
    }

    /// A value parsed in full but not walked (serde_json building a `Value`): strings
    /// checked as strings, numbers in range, nesting limited. Returns a float's value.
    fn strict(&mut self) -> Walked<Option<f64>> {
        match self.ws().ok_or(NotJson)? {
            b'n' => self.ident(b"null")?,
            b't' => self.ident(b"true")?,
            b'f' => self.ident(b"false")?,
            b'"' => {
                self.i += 1;
                json_str(self.b, &mut self.i, true, self.utf8.is_some())?;
            }
            b'-' | b'0'..=b'9' => {
                let n = json_number(self.b, &mut self.i)?;
                return if n.float {
                    json_float(n.text).map(Some)
                } else {
                    Ok(None)
                };
            }
            b'[' => {
                self.enter()?;
                let mut first = true;
                while self.next(b']', &mut first)? {
                    self.strict()?;
                }
                self.remaining += 1;
            }
            b'{' => {
                self.enter()?;
                let mut first = true;
                while self.next(b'}', &mut first)? {
                    self.key(true)?;
                    self.strict()?;
                }
                self.remaining += 1;
            }
            _ => return Err(NotJson),
        }
        Ok(None)
    }

    /// A value past a cap, skipped as serde_json's `ignore_value` does: no nesting limit
    /// (not recursive), strings and numbers checked for form only.
    fn skip(&mut self) -> Walked {
        self.frames.clear();
        loop {
            let c = self.ws().ok_or(NotJson)?;
            match c {
                b'[' | b'{' => {
                    self.i += 1;
                    let close = if c == b'[' { b']' } else { b'}' };
                    if self.ws().ok_or(NotJson)? == close {
                        self.i += 1;
                    } else {
                        self.frames.push(c);
                        if c == b'{' {
                            self.key(false)?;
                        }
                        continue;
                    }
                }
                b'"' => {
                    self.i += 1;
                    json_str(self.b, &mut self.i, false, true)?;
                }
                b'n' => self.ident(b"null")?,
                b't' => self.ident(b"true")?,
                b'f' => self.ident(b"false")?,
                b'-' | b'0'..=b'9' => {
                    json_number(self.b, &mut self.i)?;
                }
                _ => return Err(NotJson),
            }
            // A value ended: close what it ends, or go on to the next element.
            loop {
                let Some(&top) = self.frames.last() else {
                    return Ok(());
                };
                match self.ws() {
                    Some(b',') => {
                        self.i += 1;
                        if top == b'{' {
                            self.key(false)?;
                        }
                        break;
                    }
                    Some(b']') if top == b'[' => {}
                    Some(b'}') if top == b'{' => {}
                    _ => return Err(NotJson),
                }
                self.i += 1;
                self.frames.pop();
            }
        }
    }
}

/// Walks a JSON body into `out`; `Err` when it is not JSON (what was found stands).
fn walk_json(out: &mut Scan, body: &[u8], want_ids: bool) -> Walked {
    SCRATCH.with(|s| {
        let mut guard = s.try_borrow_mut();
        let mut fresh = Scratch::default();
        let s = match guard.as_deref_mut() {
            Ok(s) => s,
            Err(_) => &mut fresh,
        };
        s.path.clear();
        s.path.push('$');
        s.seen.clear();
        s.fields.clear();
        let mut j = Json {
            b: body,
            i: 0,
            w: Walker {
                scan: out,
                fields: &mut s.fields,
                nodes: 0,
                seen: &mut s.seen,
                names: &mut s.names,
                want_ids,
                id_field: None,
            },
            path: &mut s.path,
            text: &mut s.text,
            frames: &mut s.frames,
            memo: &mut s.memo,
            remaining: SERDE_DEPTH,
            utf8: simdutf8::basic::from_utf8(body).ok(),
        };
        let root = j.memo.get("");
        let walked = j.value(root, 0);
        // The field list is built in scratch; the scan shares the shape's one copy.
        out.fields = s.names.name(&s.fields);
        walked
    })
}

/// Scans a response body: JSON by field paths, other text by value patterns.
pub fn scan(headers: &Headers, body: &[u8]) -> Scan {
    scan_with(headers, body, true)
}

/// [`scan`], collecting returned ids only when `want_ids` (a POST, or a request naming an
/// object: the only ones ownership can learn from).
pub fn scan_with(headers: &Headers, body: &[u8], want_ids: bool) -> Scan {
    let ctype = header(headers, "content-type").unwrap_or_default();
    scan_typed(ctype, shared_cacheable(headers), body, want_ids)
}

/// [`scan_with`] on what it reads of the headers: the `Content-Type` value and
/// [`shared_cacheable`].
pub(crate) fn scan_typed(ctype: &[u8], shared_cache: bool, body: &[u8], want_ids: bool) -> Scan {
    let mut out = Scan {
        shared_cache,
        ..Scan::default()
    };
    if body.is_empty() {
        return out;
    }
    if body.len() > MAX_SCAN_BYTES {
        out.truncated = true;
        return out;
    }
    let jsonish = crate::http::mentions_json(ctype) || matches!(body.first(), Some(b'{' | b'['));
    // A body that is not JSON after all keeps what was found; it is scanned as text.
    if jsonish && walk_json(&mut out, body, want_ids).is_ok() {
        out.findings
            .sort_by(|a, b| (&a.path, a.class).cmp(&(&b.path, b.class)));
        return out;
    }
    scan_text(&mut out, ctype, body, want_ids);
    out
}

/// Scans a gRPC body: its messages in the normalised form of
/// [`crate::grpc::decode_messages`], each walked as protobuf ([`crate::grpc::walk`]) under
/// the same caps, classes and helpers as JSON. Paths start at `$` like JSON's: with the
/// method's message descriptor they are field names (`$.email`, `$.address.street`,
/// `$.orders[].card_number`), so findings, the field inventory and returned ids read as a
/// REST API's would; without one they are field numbers (`$.3`, `$.5.1`) and values are
/// classified by their shape alone (an e-mail, a `+` phone number, a card number, a
/// token). `records` is the longest repeated field, or the number of messages of a
/// streamed response when larger; ids are the `id` of each message (`None` field) and of
/// the elements of repeated messages (the field's name), as for JSON.
pub fn scan_grpc(
    headers: &Headers,
    body: &[u8],
    desc: Option<&prost_reflect::MessageDescriptor>,
    want_ids: bool,
) -> Scan {
    let mut out = Scan {
        shared_cache: shared_cacheable(headers),
        ..Scan::default()
    };
    if body.is_empty() {
        return out;
    }
    if body.len() > MAX_SCAN_BYTES {
        out.truncated = true;
        return out;
    }
    SCRATCH.with(|s| {
        let mut guard = s.try_borrow_mut();
        let mut fresh = Scratch::default();
        let s = match guard.as_deref_mut() {
            Ok(s) => s,
            Err(_) => &mut fresh,
        };
        s.seen.clear();
        s.fields.clear();
        let mut w = Walker {
            scan: &mut out,
            fields: &mut s.fields,
            nodes: 0,
            seen: &mut s.seen,
            names: &mut s.names,
            want_ids,
            id_field: None,
        };
        let (path, memo) = (&mut s.path, &mut s.memo);
        let mut count: u32 = 0;
        let mut records: u32 = 0;
        for msg in crate::grpc::messages(body) {
            count = count.saturating_add(1);
            let Some(budget) = u32::try_from(MAX_NODES.saturating_sub(w.nodes))
                .ok()
                .filter(|b| *b > 0)
            else {
                w.scan.truncated = true;
                break;
            };
            let limits = crate::grpc::Limits {
                max_depth: MAX_DEPTH,
                max_nodes: budget,
            };
            // Coordinates are a location once both of one message are seen: (parent
            // path, path, value).
            let mut lat: Option<(String, String, f64)> = None;
            let mut lon: Option<(String, String, f64)> = None;
            let stats = crate::grpc::walk_with(msg, desc, limits, &mut |p, v| {
                path.clear();
                path.push_str("$.");
                path.push_str(p);
                w.field(path);
                let name = path.rsplit('.').next().unwrap_or_default();
                let facts = memo.get(name.strip_suffix("[]").unwrap_or(name));
                match v {
                    crate::grpc::Scalar::Str(v) => {
                        if facts.id && !v.is_empty() && v.len() <= 128 {
                            w.returned_id(path, v);
                        }
                        if let Some(c) = classify_named(facts.flags, v) {
                            w.add(path, c, v);
                        }
                    }
                    crate::grpc::Scalar::Int(_) | crate::grpc::Scalar::Uint(_) => {
                        let mut digits = itoa::Buffer::new();
                        let (n, big) = match v {
                            crate::grpc::Scalar::Int(i) => (digits.format(i), i >= 1_000_000),
                            crate::grpc::Scalar::Uint(u) => (digits.format(u), u >= 1_000_000),
                            _ => return,
                        };
                        if facts.id && w.want_ids {
                            w.returned_id(path, n);
                        }
                        // Only long integers can be sensitive (cards, national ids, phones).
                        if big && let Some(c) = classify_named(facts.flags, n) {
                            w.add(path, c, n);
                        }
                    }
                    crate::grpc::Scalar::Float(f) => {
                        let is_lat = facts.lat;
                        if (is_lat || facts.lon) && precise(f) {
                            let parent = path.rsplit_once('.').map_or("", |(a, _)| a);
                            let (mine, other) = if is_lat {
                                (&mut lat, &mut lon)
                            } else {
                                (&mut lon, &mut lat)
                            };
                            match other.take() {
                                Some((op, opath, of)) if op == parent => {
                                    let latitude = if is_lat { f } else { of };
                                    if latitude.abs() <= 90.0 {
                                        w.add(path, Class::Geolocation, &f.to_string());
                                        w.add(&opath, Class::Geolocation, &of.to_string());
                                    }
                                }
                                o => {
                                    *other = o;
                                    *mine = Some((parent.to_string(), path.clone(), f));
                                }
                            }
                        }
                    }
                    crate::grpc::Scalar::Bytes(_) | crate::grpc::Scalar::Bool(_) => {}
                }
            });
            w.nodes += usize::try_from(stats.nodes).unwrap_or(usize::MAX);
            records = records.max(stats.records);
            w.scan.truncated |= stats.truncated;
        }
        // A streamed response's messages are its records when they outnumber any list.
        if count > 1 {
            records = records.max(count);
        }
        w.scan.records = records;
        out.fields = s.names.name(&s.fields);
    });
    out.findings
        .sort_by(|a, b| (&a.path, a.class).cmp(&(&b.path, b.class)));
    out
}

/// Value patterns over a text body (or one that turned out not to be JSON).
fn scan_text(out: &mut Scan, ctype: &[u8], body: &[u8], want_ids: bool) {
    let texty = ctype.len() >= 5 && ctype[..5].eq_ignore_ascii_case(b"text/")
        || ctype.windows(3).any(|w| w.eq_ignore_ascii_case(b"xml"))
        || ctype.is_empty();
    if texty {
        let text = String::from_utf8_lossy(body);
        let mut seen = SeenPaths::default();
        let mut w = Walker {
            scan: out,
            fields: &mut String::new(),
            nodes: 0,
            seen: &mut seen,
            names: &mut Default::default(),
            want_ids,
            id_field: None,
        };
        for m in text_patterns().find_iter(&text).take(MAX_FINDINGS) {
            let v = m.as_str();
            if let Some(c) = classify("", v) {
                w.add("text", c, v);
            }
        }
    }
}

/// The serde_json walker this scanner replaced, kept as the oracle the hand-written walker
/// is compared with (same findings, fields, ids, records and caps): by the tests, and by
/// the `scan` fuzz target through the `oracle` feature, never in a production build.
#[cfg(any(test, feature = "oracle"))]
#[doc(hidden)]
pub mod oracle {
    use super::*;
    use serde_json::Value;

    /// Walks JSON as it is parsed (no tree is built: keys and strings are borrowed from the
    /// body where they need no unescaping), classifying each value under its field path.
    struct Stream<'w, 'a> {
        w: &'w mut Walker<'a>,
        path: &'w mut String,
        name: &'w str,
        depth: usize,
    }

    impl<'de> serde::de::DeserializeSeed<'de> for Stream<'_, '_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            self.w.nodes += 1;
            if self.depth > MAX_DEPTH || self.w.nodes > MAX_NODES {
                self.w.scan.truncated = true;
                serde::de::IgnoredAny::deserialize(d)?;
                return Ok(());
            }
            d.deserialize_any(self)
        }
    }

    use serde::Deserialize as _;

    /// A map key, borrowed when the body allows.
    struct Key<'de>(std::borrow::Cow<'de, str>);

    impl<'de> serde::Deserialize<'de> for Key<'de> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Key<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a key")
                }
                fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                    Ok(Key(std::borrow::Cow::Borrowed(v)))
                }
                fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                    Ok(Key(std::borrow::Cow::Owned(v.to_string())))
                }
            }
            d.deserialize_str(V)
        }
    }

    impl<'de> serde::de::Visitor<'de> for Stream<'_, '_> {
        type Value = ();

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }

        fn visit_str<E>(self, v: &str) -> Result<(), E> {
            self.w.field(self.path);
            if !v.is_empty() && v.len() <= 128 {
                if self.name == "id" {
                    self.w.returned_id(self.path, v);
                }
                if self.depth == 1 {
                    self.w
                        .owner_field(self.path, OWNER_FIELDS.contains(&self.name), v);
                }
            }
            if let Some(c) = classify(self.name, v) {
                self.w.add(self.path, c, v);
            }
            Ok(())
        }

        fn visit_u64<E>(self, v: u64) -> Result<(), E> {
            self.w.field(self.path);
            let mut buf = itoa::Buffer::new();
            let t = buf.format(v);
            if self.name == "id" && self.w.want_ids {
                self.w.returned_id(self.path, t);
            }
            if self.depth == 1 {
                self.w
                    .owner_field(self.path, OWNER_FIELDS.contains(&self.name), t);
            }
            // Only long integers can be sensitive (cards, national ids, phone numbers).
            if v >= 1_000_000
                && let Some(c) = classify(self.name, t)
            {
                self.w.add(self.path, c, t);
            }
            Ok(())
        }

        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            self.w.field(self.path);
            Ok(())
        }

        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            self.w.field(self.path);
            Ok(())
        }

        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            self.w.field(self.path);
            Ok(())
        }

        fn visit_unit<E>(self) -> Result<(), E> {
            self.w.field(self.path);
            Ok(())
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let len = self.path.len();
            self.path.push_str("[]");
            let mut n: u32 = 0;
            loop {
                let next = seq.next_element_seed(Stream {
                    w: &mut *self.w,
                    path: &mut *self.path,
                    name: self.name,
                    depth: self.depth + 1,
                })?;
                if next.is_none() {
                    break;
                }
                n = n.saturating_add(1);
            }
            self.path.truncate(len);
            self.w.scan.records = self.w.scan.records.max(n);
            Ok(())
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            // Coordinates are only known to be a location once both are seen.
            let mut lat: Option<(String, f64)> = None;
            let mut lon: Option<(String, f64)> = None;
            while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                let len = self.path.len();
                self.path.push('.');
                self.path.push_str(&k);
                let lk: std::borrow::Cow<'_, str> = if k.bytes().any(|b| b.is_ascii_uppercase()) {
                    std::borrow::Cow::Owned(k.to_ascii_lowercase())
                } else {
                    std::borrow::Cow::Borrowed(&k)
                };
                if is_any(&lk, LAT) || is_any(&lk, LON) {
                    let v: Value = map.next_value()?;
                    self.w.field(self.path);
                    if let Some(f) = v.as_f64().filter(|f| precise(*f)) {
                        let slot = if is_any(&lk, LAT) { &mut lat } else { &mut lon };
                        *slot = Some((self.path.clone(), f));
                    }
                } else {
                    map.next_value_seed(Stream {
                        w: &mut *self.w,
                        path: &mut *self.path,
                        name: &lk,
                        depth: self.depth + 1,
                    })?;
                }
                self.path.truncate(len);
            }
            if let (Some((pa, a)), Some((po, o))) = (lat, lon)
                && a.abs() <= 90.0
            {
                self.w.add(&pa, Class::Geolocation, &a.to_string());
                self.w.add(&po, Class::Geolocation, &o.to_string());
            }
            Ok(())
        }
    }

    /// [`scan`], collecting returned ids only when `want_ids` (a POST, or a request naming an
    /// object: the only ones ownership can learn from).
    pub fn scan_with(headers: &Headers, body: &[u8], want_ids: bool) -> Scan {
        let mut out = Scan {
            shared_cache: shared_cacheable(headers),
            ..Scan::default()
        };
        if body.is_empty() {
            return out;
        }
        if body.len() > MAX_SCAN_BYTES {
            out.truncated = true;
            return out;
        }
        let ctype = header(headers, "content-type").unwrap_or_default();
        let jsonish =
            crate::http::mentions_json(ctype) || matches!(body.first(), Some(b'{' | b'['));
        if jsonish {
            let mut fields = String::new();
            let mut w = Walker {
                scan: &mut out,
                fields: &mut fields,
                nodes: 0,
                seen: &mut SeenPaths::default(),
                names: &mut Default::default(),
                want_ids,
                id_field: None,
            };
            let mut path = String::from("$");
            let mut de = serde_json::Deserializer::from_slice(body);
            let walked = serde::de::DeserializeSeed::deserialize(
                Stream {
                    w: &mut w,
                    path: &mut path,
                    name: "",
                    depth: 0,
                },
                &mut de,
            );
            out.fields = fields.into();
            if walked.is_ok() {
                out.findings
                    .sort_by(|a, b| (&a.path, a.class).cmp(&(&b.path, b.class)));
                return out;
            }
            // Not JSON after all: what was found stands; scan it as text below.
        }
        let texty = ctype.len() >= 5 && ctype[..5].eq_ignore_ascii_case(b"text/")
            || ctype.windows(3).any(|w| w.eq_ignore_ascii_case(b"xml"))
            || ctype.is_empty();
        if texty {
            let text = String::from_utf8_lossy(body);
            let mut w = Walker {
                scan: &mut out,
                fields: &mut String::new(),
                nodes: 0,
                seen: &mut SeenPaths::default(),
                names: &mut Default::default(),
                want_ids,
                id_field: None,
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
}

#[cfg(test)]
mod tests {
    #[test]
    fn shared_cacheable_responses() {
        let h = |v: &str| crate::http::Headers::from_iter([("Cache-Control", v.as_bytes())]);
        assert!(super::shared_cacheable(&h("public, max-age=600")));
        assert!(super::shared_cacheable(&h("max-age=60, S-MAXAGE=600")));
        assert!(!super::shared_cacheable(&h("private, max-age=600")));
        assert!(!super::shared_cacheable(&h("public, no-store")));
        assert!(!super::shared_cacheable(&h("max-age=600")));
        assert!(!super::shared_cacheable(&h("no-cache")));
        assert!(!super::shared_cacheable(&crate::http::Headers::new()));
    }

    use super::*;

    fn c(name: &str, v: &str) -> Option<&'static str> {
        classify(name, v).map(Class::as_str)
    }

    #[test]
    fn the_top_level_owner_field_names_whose_object_is_answered() {
        let h = crate::http::Headers::from_iter([("Content-Type", b"application/json".as_slice())]);
        let json = |b: &str, ids: bool| scan_with(&h, b.as_bytes(), ids).owner;
        let order = r#"{"id":500123,"user_id":100521,"items":[{"id":1,"owner_id":7}]}"#;
        assert_eq!(json(order, true).as_deref(), Some("100521"));
        assert_eq!(
            json(r#"{"customerId":"c-42","id":"o-1"}"#, true).as_deref(),
            Some("c-42")
        );
        assert_eq!(
            json(r#"{"User_ID":"9","user_id":"10"}"#, true).as_deref(),
            Some("9")
        );
        // Only at the top level, only when ids are wanted, only scalars.
        assert_eq!(json(r#"{"order":{"user_id":1}}"#, true), None);
        assert_eq!(json(r#"[{"user_id":1}]"#, true), None);
        assert_eq!(json(r#"{"user_id":{"id":1}}"#, true), None);
        assert_eq!(json(r#"{"user_id":""}"#, true), None);
        assert_eq!(json(r#"{"user_id":-3}"#, true), None);
        assert_eq!(json(order, false), None);
        // The serde walker (the oracle) reads it alike.
        assert_eq!(
            oracle::scan_with(&h, order.as_bytes(), true)
                .owner
                .as_deref(),
            Some("100521")
        );
    }

    #[test]
    fn every_pattern_compiles() {
        for r in [
            password_hash(),
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

    /// `password_field` without its pre-filter (the pre-filter must never change a
    /// verdict).
    fn password_field_unfiltered(name: &str) -> bool {
        let n: Vec<u8> = name
            .bytes()
            .filter(|b| !matches!(b, b'_' | b'-' | b'.' | b' '))
            .map(|b| b.to_ascii_lowercase())
            .collect();
        if n.len() > 48 {
            return false;
        }
        let mut s = &n[..];
        let pre: &[&[u8]] = &[
            b"hashed",
            b"encrypted",
            b"crypted",
            b"salted",
            b"user",
            b"account",
            b"admin",
            b"login",
            b"current",
            b"old",
            b"new",
            b"stored",
            b"db",
            b"root",
            b"member",
        ];
        let suf: &[&[u8]] = &[
            b"hashed",
            b"hash",
            b"digest",
            b"crypted",
            b"crypt",
            b"encrypted",
            b"enc",
            b"sha1",
            b"sha256",
            b"sha512",
            b"md5",
            b"bcrypt",
            b"confirmation",
            b"confirm",
        ];
        for _ in 0..2 {
            if let Some(r) = pre.iter().find_map(|p| s.strip_prefix(*p)) {
                s = r;
            }
        }
        let mut q = false;
        for _ in 0..2 {
            if let Some(r) = suf.iter().find_map(|p| s.strip_suffix(*p)) {
                s = r;
                q = true;
            }
        }
        match s {
            b"password" | b"passwd" | b"pwd" | b"passphrase" | b"passcode" | b"passwort" => true,
            b"pass" | b"pw" | b"secret" => q,
            _ => false,
        }
    }

    proptest::proptest! {
        #[test]
        fn password_field_prefilter_changes_nothing(
            parts in proptest::collection::vec(proptest::sample::select(vec![
                "pass", "word", "pw", "d", "secret", "hash", "user", "old", "new", "_", "-",
                ".", " ", "P", "A", "s", "phrase", "code", "sha256", "confirm", "x", "db",
                "hashed", "enc", "wort",
            ]), 0..6),
        ) {
            let name: String = parts.concat();
            proptest::prop_assert_eq!(password_field(&name), password_field_unfiltered(&name), "{}", name);
        }

        /// The one-pass shape of a value says what the scans it replaced said.
        #[test]
        fn value_shape_matches_scanning(
            v in proptest::string::string_regex("[ -~]{0,40}|[0-9a-fA-F]{32}|[0-9a-fA-F $@.:xyz]{64}|.{0,12}")
                .expect("pattern"),
        ) {
            let b = v.as_bytes();
            let s = Shape::of(b);
            proptest::prop_assert_eq!(s.digits, b.iter().filter(|c| c.is_ascii_digit()).count());
            proptest::prop_assert_eq!(s.has(Shape::ALPHA), b.iter().any(u8::is_ascii_alphabetic));
            proptest::prop_assert_eq!(s.has(Shape::DOLLAR), b.contains(&b'$'));
            proptest::prop_assert_eq!(s.has(Shape::AT), b.contains(&b'@'));
            proptest::prop_assert_eq!(s.has(Shape::SPACE), b.contains(&b' '));
            proptest::prop_assert_eq!(s.has(Shape::DOT_OR_COLON), b.contains(&b'.') || b.contains(&b':'));
            proptest::prop_assert_eq!(!s.has(Shape::NOT_HEX), b.iter().all(u8::is_ascii_hexdigit));
            proptest::prop_assert_eq!(
                !s.has(Shape::NOT_IP),
                b.iter().all(|c| c.is_ascii_hexdigit() || *c == b'.' || *c == b':')
            );
        }

        /// What `classify_named`'s shortcuts assume: a value outside an IP address's bytes
        /// is no IP address, and without an `@` a letter leaves `redact::kind` at `Other`.
        #[test]
        fn classify_shortcuts_change_no_verdict(
            v in proptest::string::string_regex(
                "[0-9.:a-fA-F]{1,45}|[0-9 +()./:-]{7,24}[a-zA-Z]?|[0-9 .+-]{0,10}[g-zG-Z][0-9 .+-]{0,10}|[0-9 .:@a-z+-]{0,30}|.{0,16}",
            )
            .expect("pattern"),
        ) {
            let t = v.trim();
            let s = Shape::of(t.as_bytes());
            if s.has(Shape::NOT_IP) {
                proptest::prop_assert!(t.parse::<IpAddr>().is_err(), "{}", t);
            }
            if !s.has(Shape::AT) && s.has(Shape::ALPHA) {
                proptest::prop_assert_eq!(redact::kind(t), redact::Kind::Other, "{}", t);
            }
        }
    }

    #[test]
    fn card_phone_and_address_values_are_still_classified_past_the_shortcuts() {
        let c = |name: &str, v: &str| classify(name, v).map(|c| c.as_str());
        assert_eq!(c("card", "4111 1111 1111 1111"), Some("payment-card"));
        assert_eq!(c("x", "+44 20 7946 0958"), Some("phone"));
        assert_eq!(c("mobile", "(020) 7946-0958"), Some("phone"));
        assert_eq!(c("upstream", "192.168.10.7"), Some("internal-ip"));
        assert_eq!(c("upstream", "::ffff:10.0.0.1"), Some("internal-ip"));
        assert_eq!(
            c("upstream", "fe80::1ff:fe23:4567:890a"),
            Some("internal-ip")
        );
        assert_eq!(c("upstream", "::ffff:8.8.8.8"), None);
        assert_eq!(c("contact", "jane@example.com"), Some("email"));
        // Letters end each shortcut's candidates: none of these is a card, phone or address.
        assert_eq!(c("created", "2026-12-04T10:00:00Z"), None);
        assert_eq!(c("mobile", "ext 7946-0958"), None);
        assert_eq!(c("upstream", "10.0.0.1x"), None);
    }

    #[test]
    fn name_memo_gives_each_names_flags_and_stays_bounded() {
        let mut memo = NameMemo::default();
        let names = [
            "password",
            "user_password_hash",
            "phone",
            "mobile_number",
            "date_of_birth",
            "street_address",
            "ssn",
            "client_secret",
            "title",
            "id",
        ];
        for n in names {
            // Worked out, then read back from the memo.
            for _ in 0..2 {
                assert_eq!(memo.get(n).flags.0, NameFlags::of(n).0, "{n}");
            }
        }
        for (n, v) in [
            ("password", "hunter22"),
            ("phone", "07700 900123"),
            ("street_address", "221 Baker Street"),
            ("client_secret", "s3cr3tValue0123456789"),
            ("title", "07700 900123"),
        ] {
            assert!(classify(n, v).is_some() || n == "title", "{n}");
            assert_eq!(classify_named(memo.get(n).flags, v), classify(n, v), "{n}");
        }
        // Keys are remembered as sent; their facts are their lower-case name's.
        for n in [
            "Password", "PHONE", "ID", "Latitude", "LNG", "User_Id", "Title",
        ] {
            let lower = n.to_ascii_lowercase();
            let (got, want) = (memo.get(n), KeyFacts::of(&lower));
            assert_eq!(got.flags.0, NameFlags::of(&lower).0, "{n}");
            assert_eq!(
                (got.id, got.owner, got.lat, got.lon),
                (want.id, want.owner, want.lat, want.lon),
                "{n}"
            );
        }
        assert!(memo.get("ID").id && memo.get("User_Id").owner);
        assert!(memo.get("Latitude").lat && memo.get("LNG").lon && !memo.get("Title").lat);
        // A hostile body's long keys are judged but never kept.
        let long = "password".repeat(1000);
        assert!(memo.get(&long).flags.has(NameFlags::PASSWORD_HEX));
        assert!(
            memo.get(&"PASSWORD".repeat(1000))
                .flags
                .has(NameFlags::PASSWORD_HEX)
        );
        assert!(!memo.0.contains_key(long.as_str()));
        for i in 0..NAME_MEMO_MAX + 10 {
            memo.get(&format!("field_{i}"));
        }
        assert!(memo.0.len() <= NAME_MEMO_MAX);
    }

    #[test]
    fn password_fields_by_name_and_placeholders() {
        for name in [
            "password",
            "passwd",
            "pwd",
            "passphrase",
            "password_hash",
            "passwordhash",
            "pass_hash",
            "pw_hash",
            "secret_hash",
            "hashed_password",
            "encrypted_password",
            "password_digest",
            "userpassword",
            "user_password_sha256",
            "new-password",
        ] {
            assert!(password_field(name), "{name}");
            assert_eq!(c(name, "opaque-value"), Some("password-hash"), "{name}");
        }
        for name in [
            "password_policy",
            "password_min_length",
            "has_password",
            "password_changed_at",
            "passwordless",
            "passport",
            "bypass",
            "pass",
            "pass_rate",
            "secret",
            "secret_key",
            "compass_hash",
            "",
            "a_very_long_field_name_that_ends_with_the_word_password",
        ] {
            assert!(!password_field(name), "{name}");
        }
        for v in [
            "********",
            "•••",
            "[REDACTED]",
            "<hidden>",
            "null",
            "string",
        ] {
            assert!(placeholder(v), "{v}");
            assert_eq!(c("password", v), None, "{v}");
        }
        assert!(!placeholder("hunter2"));
        // The Django default this issue was opened for.
        assert_eq!(
            c(
                "x",
                "pbkdf2_sha256$600000$Wm9wQ3VQd2h0R0Fh$3mNKa0bqQ5aJc1c9Dq2nYVQ0vK9aTt5a2r2YbKQ2m1E="
            ),
            Some("password-hash")
        );
        assert_eq!(c("price", "$1,299.00"), None);
        assert_eq!(c("label", "$1$ shipping"), None);
    }

    fn json() -> Headers {
        crate::http::Headers::from_iter([("Content-Type", b"application/json".as_slice())])
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
            // Sorted by path.
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
        assert!(s.fields.split('\n').any(|f| f == "$.name"));
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
        let s = scan(
            &crate::http::Headers::new(),
            b"Contact: jane@example.com, card 4111 1111 1111 1111.",
        );
        let classes: Vec<&str> = s.findings.iter().map(|f| f.class.as_str()).collect();
        assert_eq!(classes, vec!["email", "payment-card"]);
        let deep = "[".repeat(100) + &"]".repeat(100);
        let s = scan(&json(), deep.as_bytes());
        assert!(s.truncated);
        let big = vec![b' '; MAX_SCAN_BYTES + 1];
        assert!(scan(&json(), &big).truncated);
    }
}

/// The in-place walker against the serde walker it replaced: same [`Scan`] (findings with
/// their masks and digests, fields, ids, records, caps) on generated, broken and edge-case
/// bodies.
#[cfg(test)]
mod walker_equivalence {
    use proptest::prelude::*;

    use super::*;

    fn ct(v: &str) -> Headers {
        if v.is_empty() {
            return Headers::new();
        }
        crate::http::Headers::from_iter([("Content-Type", v.as_bytes())])
    }

    fn same(body: &[u8]) {
        for ctype in [
            "application/json",
            "",
            "text/plain",
            "application/octet-stream",
        ] {
            for want_ids in [true, false] {
                let h = ct(ctype);
                let new = scan_with(&h, body, want_ids);
                let old = oracle::scan_with(&h, body, want_ids);
                assert_eq!(
                    new,
                    old,
                    "body {:?} ctype {ctype} want_ids {want_ids}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }

    const KEYS: &[&str] = &[
        "id",
        "ID",
        "Id",
        "user_id",
        "customerId",
        "email",
        "Email",
        "phone",
        "mobile",
        "lat",
        "Lat",
        "latitude",
        "lon",
        "lng",
        "long",
        "LONGITUDE",
        "password",
        "password_hash",
        "ssn",
        "dob",
        "birthday",
        "street",
        "address",
        "api_key",
        "token",
        "name",
        "orders",
        "items",
        "e\\u006dail",
        "k\\\"q",
        "caf\\u00e9",
        "\\ud83d\\ude00",
        "",
        "x.y",
        "a[]",
        "🔑",
    ];
    const STRINGS: &[&str] = &[
        "alice@example.com",
        "+44 7700 900123",
        "(555) 010-9999",
        "4111 1111 1111 1111",
        "4111111111111111",
        "GB82 WEST 1234 5698 7654 32",
        "123-45-6789",
        "123456789",
        "1985-04-12",
        "12 Buckingham Palace Road",
        "$2b$12$KIXQJbtWlnnkv1ENcP8Bbe2bRtVp7rX3N3jjSH.Xq4PwO/3P0j3pW",
        "5f4dcc3b5aa765d61d8327deb882cf99",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl",
        "AKIAIOSFODNN7EXAMPLE",
        "k3y-9f8e7d6c5b4a3210",
        "10.2.3.4",
        "fd00::1",
        "********",
        "hunter2",
        "Widget model 36",
        "",
        "a\\nb",
        "al\\u0069ce@example.com",
        "\\ud83d\\ude00 smile",
        "caf\u{e9}",
        "51.501364",
    ];
    const NUMBERS: &[&str] = &[
        "0",
        "-0",
        "7",
        "2001",
        "1000000",
        "4111111111111111",
        "5550109999",
        "123456789",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "-9223372036854775809",
        "51.501364",
        "-0.141892",
        "12.5",
        "100.0",
        "1e3",
        "1E-3",
        "-2.5e+2",
        "1e400",
        "-1e400",
        "1e-400",
        "0.0",
        "181.123",
        "91.5",
        "123456789012345678901234567890",
        "1.7976931348623157e308",
        "99999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999",
    ];

    fn ws() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["", "", "", " ", "\n  ", "\t", "\r\n"])
    }

    fn scalar() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(STRINGS).prop_map(|s| format!("\"{s}\"")),
            prop::sample::select(NUMBERS).prop_map(str::to_string),
            prop::sample::select(vec!["true", "false", "null"]).prop_map(str::to_string),
            "[a-zA-Z0-9 @.+$-]{0,24}".prop_map(|s| format!("\"{s}\"")),
            (0u64..u64::MAX).prop_map(|n| n.to_string()),
        ]
    }

    fn value() -> impl Strategy<Value = String> {
        scalar().prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                (prop::collection::vec(inner.clone(), 0..6), ws())
                    .prop_map(|(v, w)| format!("[{w}{}{w}]", v.join(&format!(",{w}")))),
                (
                    prop::collection::vec((prop::sample::select(KEYS), inner), 0..6),
                    ws()
                )
                    .prop_map(|(kv, w)| {
                        let body: Vec<String> = kv
                            .into_iter()
                            .map(|(k, v)| format!("{w}\"{k}\"{w}:{w}{v}"))
                            .collect();
                        format!("{{{}{w}}}", body.join(","))
                    }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The word-at-a-time search stops where a byte-by-byte one does, from any start,
        /// on bytes dense in quotes, escapes, control characters and UTF-8.
        #[test]
        fn string_stop_is_the_first_quote_escape_or_control_byte(
            b in prop::collection::vec(
                prop_oneof![
                    4 => prop::sample::select(b"ab \"\\\x1f\x20\x7f\x80\xe9\xff\x00\n".to_vec()),
                    1 => any::<u8>(),
                ],
                0..40,
            ),
            from in 0usize..44,
        ) {
            let naive = b
                .get(from..)
                .and_then(|r| r.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20))
                .map(|j| from + j);
            prop_assert_eq!(string_stop(&b, from), naive);
        }

        #[test]
        fn generated_bodies(v in value(), lead in ws(), tail in ws()) {
            same(format!("{lead}{v}{tail}").as_bytes());
        }

        /// One byte changed, inserted or removed: mostly broken JSON, on every path out.
        #[test]
        fn broken_bodies(
            v in value(),
            at in any::<prop::sample::Index>(),
            op in 0u8..3,
            byte in prop::sample::select(b"{}[]\",:\\ 0-.eu\x01\xff\xc3aZ".to_vec()),
        ) {
            let mut b = v.into_bytes();
            let i = at.index(b.len() + 1);
            match op {
                0 => b.insert(i, byte),
                1 if i < b.len() => { b.remove(i); }
                _ if i < b.len() => b[i] = byte,
                _ => b.push(byte),
            }
            same(&b);
        }
    }

    #[test]
    fn edge_cases() {
        let deep = |n: usize, inner: &str| "[".repeat(n) + inner + &"]".repeat(n);
        let lat_deep = |n: usize| {
            format!(
                r#"{{"lat":{},"lon":-0.141892,"x":"alice@example.com"}}"#,
                deep(n, "1")
            )
        };
        let mut cases: Vec<Vec<u8>> = vec![
            deep(100, "").into_bytes(),
            deep(33, r#"{"email":"a@example.com"}"#).into_bytes(),
            deep(200, "").into_bytes(),
            deep(5000, "").into_bytes(),
            deep(40, "1e400").into_bytes(),
            deep(40, r#""\ud800""#).into_bytes(),
            deep(40, "\"\u{1}\"").into_bytes(),
            deep(40, "01").into_bytes(),
            lat_deep(120).into_bytes(),
            lat_deep(126).into_bytes(),
            lat_deep(127).into_bytes(),
            lat_deep(130).into_bytes(),
            br#"{"lat":51.501364,"lon":-0.141892}"#.to_vec(),
            br#"{"Lat":51.501364,"LNG":-0.141892,"lat":51.5}"#.to_vec(),
            br#"{"lat":"51.501364","lon":-0.141892}"#.to_vec(),
            br#"{"lat":95.501364,"lon":-0.141892}"#.to_vec(),
            br#"{"lat":{"a":[1,2,{"b":"\ud800"}]},"lon":-0.141892}"#.to_vec(),
            br#"{"lat":1e400,"lon":-0.141892}"#.to_vec(),
            br#"{"lat":51.501364,"lon":-0.141892} trailing garbage"#.to_vec(),
            br#"{"email":"a@example.com",}"#.to_vec(),
            br#"[1,2,]"#.to_vec(),
            br#"{"email":"a@example.com" "x":1}"#.to_vec(),
            br#"{"id":"7","items":[{"id":1},{"id":2}],"orders":[{"id":"o-1"}]}"#.to_vec(),
            br#"[{"id":1},{"ID":"x"}]"#.to_vec(),
            br#"{"e\u006dail":"al\u0069ce@example.com","k":"\ud83d\ude00"}"#.to_vec(),
            b"{\"email\":\"\xff@example.com\"}".to_vec(),
            b"{\"\xff\":1}".to_vec(),
            br#"{"a":"\x"}"#.to_vec(),
            br#"{"a":"\u12"}"#.to_vec(),
            br#"{"a":"\udc00"}"#.to_vec(),
            br#"{"a":"\ud800\u0041"}"#.to_vec(),
            br#"{"a":"\ud800x"}"#.to_vec(),
            br#"{"a":-}"#.to_vec(),
            br#"{"a":1.}"#.to_vec(),
            br#"{"a":1e+}"#.to_vec(),
            br#"{"a":nul}"#.to_vec(),
            br#"{"a":tru"#.to_vec(),
            br#"{1:2}"#.to_vec(),
            br#"{"a" 1}"#.to_vec(),
            b"   ".to_vec(),
            b"\xef\xbb\xbf{}".to_vec(),
            b"{\"email\":\"a@example.com\"}\x00".to_vec(),
            br#""alice@example.com""#.to_vec(),
            b"4111111111111111".to_vec(),
            b"Contact: jane@example.com, card 4111 1111 1111 1111.".to_vec(),
        ];
        // Past the node cap: lat/lon keys are still listed, everything else skipped.
        let many: Vec<String> = (0..(MAX_NODES + 10))
            .map(|i| format!(r#"{{"id":{i},"email":"u{i}@example.com"}}"#))
            .collect();
        cases.push(format!(r#"{{"items":[{}]}}"#, many.join(",")).into_bytes());
        let capped: Vec<String> = (0..MAX_NODES).map(|i| i.to_string()).collect();
        cases.push(
            format!(
                r#"{{"a":[{}],"b":{{"lat":51.501364,"lon":-0.141892,"x":[1,"\ud800"]}}}}"#,
                capped.join(",")
            )
            .into_bytes(),
        );
        // Many sensitive fields: the findings cap.
        let wide: Vec<String> = (0..100)
            .map(|i| format!(r#""email{i}":"u{i}@example.com""#))
            .collect();
        cases.push(format!("{{{}}}", wide.join(",")).into_bytes());
        for c in &cases {
            same(c);
        }
    }

    #[test]
    fn recorded_bodies() {
        // Every response body of the recorded samples.
        let mut n = 0;
        for dir in std::fs::read_dir("samples").into_iter().flatten().flatten() {
            let Ok(planted) = std::fs::read(dir.path().join("planted.json")) else {
                continue;
            };
            same(&planted);
            n += 1;
        }
        assert!(n > 0);
    }
}

#[cfg(test)]
mod grpc_tests {
    //! gRPC responses from tests/fixtures/grpc (encoded by Google's Python protobuf from
    //! shop.proto, framed as grpcio frames them): scanned with and without the schema.
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::grpc::{Caps, Descriptors, decode_messages};

    fn dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/grpc")
    }

    fn body(file: &str, enc: Option<&str>) -> Vec<u8> {
        let raw = std::fs::read(dir().join(file)).expect("fixture");
        let m = decode_messages(&raw, enc.map(str::as_bytes), &Caps::default());
        assert_eq!(m.error, None);
        m.data
    }

    fn output(method: &str) -> prost_reflect::MessageDescriptor {
        let d = Descriptors::load(&[dir().join("shop.protoset")]).expect("protoset");
        d.method(method).expect("method").1
    }

    fn found(s: &Scan) -> BTreeSet<(String, Class)> {
        s.findings
            .iter()
            .map(|f| (f.path.to_string(), f.class))
            .collect()
    }

    fn has(s: &Scan, want: &[(&str, Class)]) {
        let got = found(s);
        for (p, c) in want {
            assert!(
                got.contains(&(p.to_string(), *c)),
                "{p} {c:?} not in {got:?}"
            );
        }
    }

    /// No personal value of the fixtures leaves the scan in clear.
    fn no_values(s: &Scan) {
        let text = format!("{:?}", s.findings);
        for v in [
            "jane.roe@example.com",
            "7946 0958",
            "jroe.backup@example.org",
            "Baker Street",
            "4111111111111111",
            "5555555555554444",
            "51.523767",
            "correct horse",
        ] {
            assert!(!text.contains(v), "{v} in {text}");
        }
    }

    #[test]
    fn profile_with_schema_names_the_personal_fields_as_json_would() {
        let b = body("profile.gzip.grpc", Some("gzip"));
        let s = scan_grpc(
            &crate::http::Headers::new(),
            &b,
            Some(&output("/shop.v1.Shop/GetProfile")),
            true,
        );
        has(
            &s,
            &[
                ("$.email", Class::Email),
                ("$.phone", Class::Phone),
                ("$.address.street", Class::StreetAddress),
                ("$.attributes[].value", Class::Email),
                ("$.home.lat", Class::Geolocation),
                ("$.home.lng", Class::Geolocation),
            ],
        );
        assert!(
            !found(&s)
                .iter()
                .any(|(p, _)| p == "$.display_name" || p == "$.address.city")
        );
        no_values(&s);
        let fields: BTreeSet<&str> = s.fields.lines().collect();
        for f in [
            "$.id",
            "$.address.city",
            "$.badge_ids[]",
            "$.attributes[].key",
            "$.tier",
        ] {
            assert!(fields.contains(f), "{f} not in {fields:?}");
        }
        assert_eq!(s.ids, [(None, Arc::from("u-1042"))]);
        assert_eq!(s.records, 3, "three packed badge ids");
        assert!(!s.truncated);
    }

    #[test]
    fn profile_without_schema_names_them_by_number() {
        let b = body("profile.gzip.grpc", Some("gzip"));
        let s = scan_grpc(&crate::http::Headers::new(), &b, None, true);
        has(
            &s,
            &[
                ("$.3", Class::Email),
                ("$.4", Class::Phone),
                ("$.9.2", Class::Email),
            ],
        );
        no_values(&s);
        let fields: BTreeSet<&str> = s.fields.lines().collect();
        for f in ["$.1", "$.5.1", "$.5.2", "$.11.1", "$.12"] {
            assert!(fields.contains(f), "{f} not in {fields:?}");
        }
        // Without names there is no `id` to learn from.
        assert!(s.ids.is_empty());
    }

    #[test]
    fn order_lists_give_records_ids_and_cards() {
        let b = body("orders.deflate.grpc", Some("deflate"));
        let s = scan_grpc(
            &crate::http::Headers::new(),
            &b,
            Some(&output("/shop.v1.Shop/ListOrders")),
            true,
        );
        has(
            &s,
            &[
                ("$.orders[].card_number", Class::PaymentCard),
                ("$.orders[].ship_to.street", Class::StreetAddress),
            ],
        );
        let cards = s
            .findings
            .iter()
            .find(|f| &*f.path == "$.orders[].card_number")
            .expect("cards");
        assert_eq!(cards.digests.len(), 3, "three distinct cards");
        assert_eq!(s.records, 3);
        let ids: Vec<(Option<&str>, &str)> =
            s.ids.iter().map(|(f, i)| (f.as_deref(), &**i)).collect();
        assert_eq!(
            ids,
            [
                (Some("orders"), "o-7000"),
                (Some("orders"), "o-7001"),
                (Some("orders"), "o-7002")
            ]
        );
        no_values(&s);
        // Ids only when asked for.
        let s = scan_grpc(
            &crate::http::Headers::new(),
            &b,
            Some(&output("/shop.v1.Shop/ListOrders")),
            false,
        );
        assert!(s.ids.is_empty());
        let s = scan_grpc(&crate::http::Headers::new(), &b, None, true);
        has(&s, &[("$.1.4", Class::PaymentCard)]);
    }

    #[test]
    fn a_server_stream_counts_its_messages_as_records() {
        let b = body("stream_orders.grpc", None);
        let s = scan_grpc(
            &crate::http::Headers::new(),
            &b,
            Some(&output("/shop.v1.Shop/StreamOrders")),
            true,
        );
        assert_eq!(s.records, 3);
        has(&s, &[("$.card_number", Class::PaymentCard)]);
        let ids: Vec<(Option<&str>, &str)> =
            s.ids.iter().map(|(f, i)| (f.as_deref(), &**i)).collect();
        assert_eq!(ids, [(None, "o-7000"), (None, "o-7001"), (None, "o-7002")]);
        // One field list for all messages.
        assert_eq!(s.fields.lines().filter(|f| *f == "$.id").count(), 1);
    }

    #[test]
    fn a_login_request_shows_its_password_field() {
        let d = Descriptors::load(&[dir().join("shop.protoset")]).expect("protoset");
        let input = d.method("/shop.v1.Shop/Login").expect("login").0;
        let s = scan_grpc(
            &crate::http::Headers::new(),
            &body("login.grpc", None),
            Some(&input),
            false,
        );
        has(
            &s,
            &[
                ("$.password", Class::PasswordHash),
                ("$.username", Class::Email),
            ],
        );
        no_values(&s);
    }

    #[test]
    fn caps_and_cache_headers_apply_as_for_json() {
        let b = body("profile.gzip.grpc", Some("gzip"));
        let h = crate::http::Headers::from_iter([("cache-control", b"public, max-age=60")]);
        assert!(scan_grpc(&h, &b, None, false).shared_cache);
        let big = vec![0u8; MAX_SCAN_BYTES + 1];
        let s = scan_grpc(&crate::http::Headers::new(), &big, None, false);
        assert!(s.truncated && s.findings.is_empty());
        assert_eq!(
            scan_grpc(&crate::http::Headers::new(), &[], None, false),
            Scan::default()
        );
        // Many messages: the node cap stops the walk.
        let one: Vec<u8> = [0u8, 0, 0, 0, 2, 0x08, 0x01].to_vec();
        let many: Vec<u8> = (0..MAX_NODES + 10).flat_map(|_| one.clone()).collect();
        let s = scan_grpc(&crate::http::Headers::new(), &many, None, false);
        assert!(s.truncated);
    }
}
