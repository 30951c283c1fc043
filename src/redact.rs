//! Redaction: the one place that decides how a secret or a personal value may be shown.
//!
//! Every output (alerts, webhooks, logs, transaction records) goes through these functions
//! before a value that came from traffic leaves the process: tokens become short hashes,
//! personal data is masked so an analyst can still tell two values apart or recognise one
//! they already know (`j***@example.com`, a card's last four), and field names are kept.

use std::fmt;

use serde::Serialize;

/// The first 48 bits of a token's SHA-256, shown as 12 hex digits: enough to correlate
/// requests, useless for replaying the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenHash([u8; 6]);

impl TokenHash {
    pub fn of_digest(d: &[u8; 32]) -> TokenHash {
        let mut h = [0u8; 6];
        h.copy_from_slice(&d[..6]);
        TokenHash(h)
    }

    /// The hash of `token` as it would be shown.
    pub fn of(token: &str) -> TokenHash {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        TokenHash::of_digest(&out)
    }

    /// The six bytes as one number (for hashing: equal hashes give equal numbers).
    pub fn as_u64(self) -> u64 {
        let [a, b, c, d, e, f] = self.0;
        u64::from_le_bytes([a, b, c, d, e, f, 0, 0])
    }
}

impl fmt::Display for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl Serialize for TokenHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for TokenHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TokenHash, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let bad = || serde::de::Error::custom("a token hash is 12 hex digits");
        if s.len() != 12 {
            return Err(bad());
        }
        let mut h = [0u8; 6];
        for (i, b) in h.iter_mut().enumerate() {
            *b = u8::from_str_radix(s.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
                .map_err(|_| bad())?;
        }
        Ok(TokenHash(h))
    }
}

/// A token (attestation, bearer, API key) as it may be shown: the short hash of its text.
/// The same token always gives the same hash, so it can be followed across alerts.
pub fn token(text: &str) -> String {
    if let Some((_, hash)) = unwrap_pseudonym(text) {
        return hash.to_string();
    }
    TokenHash::of(text).to_string()
}

/// Marks a pseudonym (a control character no identifier or username of real traffic
/// carries in practice; a value that does is pseudonymized too).
const PSEUDONYM: char = '\u{1}';

/// A personal value as it may travel between shieldtap processes (scale-out messages):
/// its mask and the short hash of its text. Two values stay apart (by the hash), and every
/// output shows the pseudonym exactly as it would show the value: [`mask`] and
/// [`identifier`] give the mask, [`token`] the hash.
pub fn pseudonym(value: &str) -> String {
    let masked = match unwrap_pseudonym(value) {
        Some((m, _)) => m.to_string(),
        None => mask(value),
    };
    format!("{PSEUDONYM}{masked}{PSEUDONYM}{}", token(value))
}

/// Whether a value would be masked when shown as an identifier (a user id that is an
/// e-mail address, a card or a phone number), or is a pseudonym already.
pub fn is_personal_identifier(id: &str) -> bool {
    id.starts_with(PSEUDONYM) || identifier(id) != id
}

/// The mask and hash of a pseudonym.
fn unwrap_pseudonym(v: &str) -> Option<(&str, &str)> {
    let rest = v.strip_prefix(PSEUDONYM)?;
    let (m, h) = rest.split_once(PSEUDONYM)?;
    (h.len() == 12 && h.bytes().all(|b| b.is_ascii_hexdigit())).then_some((m, h))
}

/// Whether `v` may be an e-mail address or a card number by [`kind`]: it holds an `@`, or
/// 13 digits or more. False settles it; true needs [`kind`].
fn may_be_email_or_card(v: &str) -> bool {
    const CARD_DIGITS: usize = 13;
    let b = v.as_bytes();
    // A plain search, inlined: this runs on every segment of every path (a few bytes
    // each), where the vector search's call and set-up cost more than the bytes.
    b.contains(&b'@')
        || (b.len() >= CARD_DIGITS
            && b.iter().filter(|c| c.is_ascii_digit()).count() >= CARD_DIGITS)
}

/// `matches!(kind(v), Kind::Email | Kind::Card)`, settled without classifying `v` when it
/// has neither an `@` nor enough digits (most path segments and paths).
pub fn is_email_or_card(v: &str) -> bool {
    may_be_email_or_card(v) && matches!(kind(v), Kind::Email | Kind::Card)
}

/// What kind of personal value a string looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Email,
    Card,
    Phone,
    Other,
}

/// Classifies a value by shape alone (no dictionary): an e-mail address, a payment card
/// number (13 to 19 digits passing the Luhn check), a phone number (7 to 15 digits, with
/// the usual `+`, spaces, dashes, dots and parentheses), or anything else.
pub fn kind(value: &str) -> Kind {
    let v = value.trim();
    if is_email(v) {
        return Kind::Email;
    }
    // Bytes, not chars: every character a card or phone number may hold is ASCII, and any
    // other (a letter, or any byte of a non-ASCII character) settles it. Most values
    // classified (path segments, names, words) settle at their first letter.
    let mut digits = 0usize;
    for b in v.bytes() {
        match b {
            b'0'..=b'9' => digits += 1,
            b' ' | b'-' | b'.' | b'(' | b')' | b'+' => {}
            _ => return Kind::Other,
        }
    }
    if digits == 0 {
        return Kind::Other;
    }
    if (13..=19).contains(&digits) && luhn(v) && !v.starts_with('+') {
        return Kind::Card;
    }
    if (7..=15).contains(&digits) {
        return Kind::Phone;
    }
    Kind::Other
}

/// Masks a personal value for display: `j***@example.com`, `****1234` for a card,
/// `***89` for a phone number, and the first character then `***` for anything else
/// (the length is hidden too, since it can identify short values).
pub fn mask(value: &str) -> String {
    if let Some((m, _)) = unwrap_pseudonym(value) {
        return m.to_string();
    }
    let v = value.trim();
    match kind(v) {
        Kind::Email => {
            let (local, domain) = v.rsplit_once('@').unwrap_or((v, ""));
            let first = local.chars().next().unwrap_or('*');
            format!("{first}***@{domain}")
        }
        Kind::Card => format!("****{}", last_digits(v, 4)),
        Kind::Phone => format!("***{}", last_digits(v, 2)),
        Kind::Other => match v.chars().next() {
            Some(c) => format!("{c}***"),
            None => String::new(),
        },
    }
}

/// An identifier (a user id from a token claim) as it may be shown: opaque ids
/// (`user-123`, a UUID, a numeric account id) are kept so the analyst can act on them;
/// ids that are themselves personal data (an e-mail address, an international phone
/// number, a card number used as the subject) are masked.
pub fn identifier(id: &str) -> String {
    if let Some((m, _)) = unwrap_pseudonym(id) {
        return m.to_string();
    }
    match kind(id) {
        Kind::Email | Kind::Card => mask(id),
        Kind::Phone if id.trim_start().starts_with('+') => mask(id),
        _ => id.to_string(),
    }
}

/// A URL path as it may be shown: segments that are e-mail addresses or card numbers are
/// masked (`/users/j***@example.com/orders`); everything else, ids included, is kept.
/// Borrowed unchanged in the common case.
pub fn path(p: &str) -> std::borrow::Cow<'_, str> {
    // A segment's `@` or its digits are the whole path's too: most paths are settled here,
    // without classifying each segment.
    if !may_be_email_or_card(p) {
        return std::borrow::Cow::Borrowed(p);
    }
    let personal = is_email_or_card;
    if !p.split('/').any(personal) {
        return std::borrow::Cow::Borrowed(p);
    }
    let masked: Vec<String> = p
        .split('/')
        .map(|seg| {
            if personal(seg) {
                mask(seg)
            } else {
                seg.to_string()
            }
        })
        .collect();
    std::borrow::Cow::Owned(masked.join("/"))
}

fn is_email(v: &str) -> bool {
    // A byte search: '@' is ASCII, so the split stays on a char boundary.
    let Some(at) = memchr::memrchr(b'@', v.as_bytes()) else {
        return false;
    };
    let (local, domain) = (&v[..at], &v[at + 1..]);
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !v.contains(char::is_whitespace)
}

fn last_digits(v: &str, n: usize) -> String {
    let digits: Vec<char> = v.chars().filter(char::is_ascii_digit).collect();
    digits[digits.len().saturating_sub(n)..].iter().collect()
}

fn luhn(v: &str) -> bool {
    let mut sum = 0u32;
    let mut double = false;
    for c in v.chars().rev() {
        let Some(d) = c.to_digit(10) else { continue };
        let d = if double {
            let x = d * 2;
            if x > 9 { x - 9 } else { x }
        } else {
            d
        };
        sum += d;
        double = !double;
    }
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_show_as_their_values_and_keep_values_apart() {
        for v in [
            "alice@example.com",
            "4111111111111111",
            "+44 20 7946 0958",
            "bob",
        ] {
            let p = pseudonym(v);
            assert!(!p.contains(v), "{p:?} carries {v:?}");
            assert_eq!(mask(&p), mask(v));
            assert_eq!(identifier(&p), identifier(v).replace(v, &mask(v)));
            assert_eq!(token(&p), token(v));
            assert_eq!(pseudonym(&p), p, "a pseudonym of a pseudonym is itself");
        }
        assert_ne!(
            pseudonym("alice@example.com"),
            pseudonym("anne@example.com")
        );
        assert_eq!(mask("alice@example.com"), mask("anne@example.com"));
        assert!(is_personal_identifier("alice@example.com"));
        assert!(!is_personal_identifier("user-123"));
        // Something that merely looks like one is shown as text.
        assert_eq!(mask("\u{1}x\u{1}nothex"), "\u{1}***");
    }

    #[test]
    fn emails_keep_first_letter_and_domain() {
        assert_eq!(mask("john.smith@example.com"), "j***@example.com");
        assert_eq!(mask(" a@b.co "), "a***@b.co");
        assert_eq!(kind("not an@email.com"), Kind::Other);
        assert_eq!(kind("user@localhost"), Kind::Other);
    }

    #[test]
    fn cards_keep_last_four_only_when_luhn_valid() {
        assert_eq!(mask("4111 1111 1111 1111"), "****1111");
        assert_eq!(mask("5500-0000-0000-0004"), "****0004");
        // 16 digits failing Luhn: a phone-length check does not apply, so it is "other".
        assert_eq!(kind("4111111111111112"), Kind::Other);
    }

    proptest::proptest! {
        /// Classified by bytes, a value gets the kind a walk over its characters gives:
        /// digits, the separators of numbers, and anything else (letters, other scripts'
        /// digits, tabs) settling it as "other".
        #[test]
        fn kinds_are_those_of_a_walk_over_characters(
            v in "[0-9 ()+.\\-]{0,20}|[0-9 \t\u{663}\u{e9}-]{0,20}|[0-9a-z@.+ ]{0,24}"
        ) {
            let t = v.trim();
            let by_chars = if is_email(t) {
                Kind::Email
            } else {
                let digits = t.chars().filter(char::is_ascii_digit).count();
                let other = t
                    .chars()
                    .any(|c| !c.is_ascii_digit() && !" -.()+".contains(c));
                if other || digits == 0 {
                    Kind::Other
                } else if (13..=19).contains(&digits) && luhn(t) && !t.starts_with('+') {
                    Kind::Card
                } else if (7..=15).contains(&digits) {
                    Kind::Phone
                } else {
                    Kind::Other
                }
            };
            proptest::prop_assert_eq!(kind(&v), by_chars, "{:?}", v);
        }
    }

    proptest::proptest! {
        /// The prefilter never settles a value [`kind`] calls an e-mail or a card, and
        /// paths are masked as segment by segment classification says.
        #[test]
        fn email_or_card_prefilter_agrees_with_kind(
            v in "[0-9 ()+.@a-z\\-]{0,24}|[0-9]{11,20}|[0-9 -]{12,24}|[a-z0-9./@-]{0,40}"
        ) {
            proptest::prop_assert_eq!(
                is_email_or_card(&v),
                matches!(kind(&v), Kind::Email | Kind::Card),
                "{:?}", v
            );
            let by_segment: Vec<String> = v
                .split('/')
                .map(|s| if matches!(kind(s), Kind::Email | Kind::Card) { mask(s) } else { s.to_string() })
                .collect();
            proptest::prop_assert_eq!(path(&v).into_owned(), by_segment.join("/"));
        }
    }

    #[test]
    fn paths_mask_emails_and_cards_only() {
        assert!(matches!(
            path("/v1/users/1234/orders"),
            std::borrow::Cow::Borrowed(_)
        ));
        // 13 digits in all, but no segment a card.
        assert!(matches!(
            path("/v1/users/123456/orders/1234567"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            path("/v1/users/jane@example.com/cart"),
            "/v1/users/j***@example.com/cart"
        );
        assert_eq!(path("/v1/cards/4111111111111111"), "/v1/cards/****1111");
        assert_eq!(
            path("/v1/cards/4111111111111112"),
            "/v1/cards/4111111111111112"
        );
    }

    /// Characters that settle a value as "other" anywhere in it, however many digits it
    /// has: a tab, another script's digit, a letter with an accent.
    #[test]
    fn digits_with_anything_else_are_other() {
        assert_eq!(kind("020 7946 0958"), Kind::Phone);
        for v in [
            "020\t7946 0958",
            "020 7946 095\u{663}",
            "020 7946 0958\u{e9}x",
        ] {
            assert_eq!(kind(v), Kind::Other, "{v:?}");
        }
        assert_eq!(kind("4111 1111 1111 1111"), Kind::Card);
        assert_eq!(kind("4111 1111 1111 111\u{663}"), Kind::Other);
    }

    #[test]
    fn phones_keep_last_two() {
        assert_eq!(kind("+44 20 7946 0958"), Kind::Phone);
        assert_eq!(mask("+44 20 7946 0958"), "***58");
        assert_eq!(mask("(555) 010-9999"), "***99");
    }

    #[test]
    fn other_values_hide_length() {
        assert_eq!(mask("Alice Liddell"), "A***");
        assert_eq!(mask("Al"), "A***");
        assert_eq!(mask(""), "");
    }

    #[test]
    fn identifiers_masked_only_when_personal() {
        assert_eq!(identifier("user-123"), "user-123");
        assert_eq!(
            identifier("5f0c8a5e-2b8e-4c35-9a4e-0d7c1f9e6b21"),
            "5f0c8a5e-2b8e-4c35-9a4e-0d7c1f9e6b21"
        );
        assert_eq!(identifier("bob@example.org"), "b***@example.org");
        assert_eq!(identifier("+15550109999"), "***99");
        assert_eq!(identifier("12345678"), "12345678");
    }

    #[test]
    fn paths_mask_personal_segments_only() {
        assert_eq!(path("/api/v1/users/123/orders"), "/api/v1/users/123/orders");
        assert_eq!(
            path("/users/jane.doe@example.com/orders"),
            "/users/j***@example.com/orders"
        );
        assert_eq!(path("/cards/4111111111111111"), "/cards/****1111");
        assert!(matches!(path("/a/b"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn tokens_become_stable_short_hashes() {
        let t = "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9.c2ln";
        assert_eq!(token(t), token(t));
        assert_eq!(token(t).len(), 12);
        assert!(!token(t).contains("eyJ"));
        assert_ne!(token(t), token("other"));
    }
}
