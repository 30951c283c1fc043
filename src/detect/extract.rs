//! What detectors need from a request beyond its head: the object number a walk steps
//! through, and the username a login attempt tries. Bounded work: only login routes'
//! bodies are read (their top-level fields, without building a tree), only up to the body
//! cap the HTTP stage already applied.

use std::sync::Arc;

use regex::RegexSet;

use crate::http::{Headers, header};

/// Query parameters that number a page or an object.
const NUMBER_PARAMS: &[&str] = &["page", "offset", "id", "start", "p"];
/// Longest username kept (attackers choose its length).
const MAX_USERNAME: usize = 256;

/// The object number of a request target: the last all-digit path segment, else the first
/// numeric `page`/`offset`/`id`/`start`/`p` query parameter.
pub fn object_number(target: &str) -> Option<u64> {
    let (path, query) = crate::route::split_query(target);
    // Over the bytes, from the end (`str::rsplit` runs a reverse char searcher per
    // segment: it was most of this function's cost). Nineteen digits always fit in a u64.
    let from_path = crate::route::segments_from_end(path)
        .find(|s| !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()))
        .map(|s| s.bytes().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')));
    from_path.or_else(|| {
        form_urlencoded::parse(query.as_bytes())
            .filter(|(k, v)| NUMBER_PARAMS.contains(&k.as_ref()) && v.len() <= 19)
            .find_map(|(_, v)| v.parse().ok())
    })
}

/// Where usernames are looked for (config `[detect] login_routes`, `username_fields`).
#[derive(Clone, Debug)]
pub struct LoginConfig {
    /// Templated routes of login endpoints.
    pub routes: RegexSet,
    /// JSON or form fields that carry the username, in order of preference.
    pub fields: Vec<String>,
}

impl Default for LoginConfig {
    fn default() -> Self {
        LoginConfig {
            // `**/login` and friends; compiled from fixed globs, so it cannot fail.
            routes: RegexSet::new([
                r"^.*/(login|signin|sign-in|sign_in|authenticate|sessions?)$",
                r"^.*/oauth2?/token$",
            ])
            .unwrap_or_else(|_| RegexSet::empty()),
            fields: ["username", "email", "login", "user", "user_name", "phone"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// The username a login request tries, from a JSON object or a form body.
pub fn login_username(
    cfg: &LoginConfig,
    route: &str,
    headers: &Headers,
    body: &[u8],
) -> Option<Arc<str>> {
    if !cfg.routes.is_match(route) {
        return None;
    }
    login_route_username(cfg, headers, body)
}

/// [`login_username`] of a request whose route the caller already knows is a login route.
pub fn login_route_username(cfg: &LoginConfig, headers: &Headers, body: &[u8]) -> Option<Arc<str>> {
    if body.is_empty() {
        return None;
    }
    let ctype = header(headers, "content-type").unwrap_or_default();
    // Read where it lies (borrowed unless escaped or percent-encoded): the username is the
    // only copy made.
    let found: std::borrow::Cow<'_, str> =
        if crate::http::mentions_json(ctype) || body.first() == Some(&b'{') {
            // The first configured field whose value (its last, if repeated) is a string.
            let named = super::json_fields::top_level(body, |k| cfg.fields.iter().any(|f| f == k))?;
            let named = super::json_fields::last_of_each(named);
            cfg.fields.iter().find_map(|f| {
                named.iter().find_map(|(k, v)| match v {
                    super::json_fields::Scalar::Str(s) if k == f => Some(s.clone()),
                    _ => None,
                })
            })
        } else if crate::http::mentions(ctype, b"x-www-form-urlencoded") {
            // The first configured field present, at its first occurrence.
            cfg.fields.iter().find_map(|f| {
                form_urlencoded::parse(body).find_map(|(k, v)| (k == f.as_str()).then_some(v))
            })
        } else {
            None
        }?;
    let trimmed = found.trim();
    if trimmed.is_empty() {
        return None;
    }
    let end = trimmed
        .char_indices()
        .nth(MAX_USERNAME)
        .map_or(trimmed.len(), |(i, _)| i);
    Some(Arc::from(&trimmed[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The number read over bytes is the one `str::rsplit` and `parse` gave, for any
        /// target (long digit runs, empty segments, queries, multi-byte characters).
        #[test]
        fn object_numbers_as_split_and_parsed(
            segs in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(String::new()),
                    "[0-9]{1,22}",
                    "[a-z0-9]{1,6}",
                    "\\PC{0,4}",
                ],
                0..6,
            ),
            query in proptest::option::of("(page|id|x)=[0-9a-z]{0,4}"),
        ) {
            let mut target = segs.join("/");
            if let Some(q) = &query {
                target.push('?');
                target.push_str(q);
            }
            let (path, q) = target.split_once('?').unwrap_or((&target, ""));
            let by_split: Option<u64> = path
                .split('/')
                .rev()
                .find(|s| !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse().ok())
                .or_else(|| {
                    form_urlencoded::parse(q.as_bytes())
                        .filter(|(k, v)| NUMBER_PARAMS.contains(&k.as_ref()) && v.len() <= 19)
                        .find_map(|(_, v)| v.parse().ok())
                });
            proptest::prop_assert_eq!(object_number(&target), by_split);
        }
    }

    #[test]
    fn numbers_from_paths_and_queries() {
        assert_eq!(object_number("/api/v1/users/42"), Some(42));
        assert_eq!(object_number("/api/v1/users/42/orders"), Some(42));
        assert_eq!(object_number("/api/v1/orders?page=7&size=20"), Some(7));
        assert_eq!(object_number("/api/v1/orders?sort=asc"), None);
        assert_eq!(object_number("/api/v1/orders?id=abc&page=7"), Some(7));
        assert_eq!(object_number("/api/v2/catalog"), None);
        assert_eq!(object_number("/x/99999999999999999999999"), None);
    }

    #[test]
    fn usernames_from_json_and_form_logins_only() {
        let cfg = LoginConfig::default();
        let json = crate::http::Headers::from_iter([("Content-Type", "application/json")]);
        let body = br#"{"username":"victim01@example.com","password":"x"}"#;
        assert_eq!(
            login_username(&cfg, "/api/v1/login", &json, body).as_deref(),
            Some("victim01@example.com")
        );
        // Not a login route: bodies are not read.
        assert_eq!(login_username(&cfg, "/api/v1/orders", &json, body), None);
        let form = crate::http::Headers::from_iter([(
            "Content-Type",
            "application/x-www-form-urlencoded",
        )]);
        assert_eq!(
            login_username(
                &cfg,
                "/oauth/token",
                &form,
                b"grant_type=password&username=a%40b.co&password=p"
            )
            .as_deref(),
            Some("a@b.co")
        );
        assert_eq!(login_username(&cfg, "/login", &json, b"{not json"), None);
        // Padding the body with nesting deeper than a parsed tree allows (which servers
        // accept) does not hide the username; a repeated field's last value counts, and
        // the first configured field holding a string.
        let padded = format!(
            r#"{{"password":"x","pad":{}{},"username":"v2@example.com"}}"#,
            "[".repeat(300),
            "]".repeat(300)
        );
        assert_eq!(
            login_username(&cfg, "/login", &json, padded.as_bytes()).as_deref(),
            Some("v2@example.com")
        );
        assert_eq!(
            login_username(
                &cfg,
                "/login",
                &json,
                br#"{"username":"first","email":"e@x.co","username":"last"}"#
            )
            .as_deref(),
            Some("last")
        );
        assert_eq!(
            login_username(&cfg, "/login", &json, br#"{"username":7,"email":"e@x.co"}"#).as_deref(),
            Some("e@x.co")
        );
        assert_eq!(
            login_username(&cfg, "/login", &json, br#"{"password":"x"}"#),
            None
        );
        // Escapes are undone; the value is trimmed.
        assert_eq!(
            login_username(&cfg, "/login", &json, br#"{"username":" v\u0040x.co "}"#).as_deref(),
            Some("v@x.co")
        );
        // Content types in any case; in a form, the first configured field present (in the
        // configuration's order), at its first occurrence.
        let form = crate::http::Headers::from_iter([(
            "Content-Type",
            "Application/X-WWW-Form-URLEncoded; charset=UTF-8",
        )]);
        assert_eq!(
            login_username(
                &cfg,
                "/login",
                &form,
                b"email=e%40x.co&username=first&username=second"
            )
            .as_deref(),
            Some("first")
        );
        assert_eq!(login_username(&cfg, "/login", &form, b"password=p"), None);
        let upper_json = crate::http::Headers::from_iter([("content-type", "APPLICATION/JSON")]);
        assert_eq!(
            login_username(&cfg, "/login", &upper_json, br#"  {"email":"e@x.co"}"#).as_deref(),
            Some("e@x.co")
        );
        assert!(crate::http::mentions(b"Application/JSON", b"json"));
        assert!(crate::http::mentions(b"", b""));
        assert!(!crate::http::mentions(b"js", b"json"));
        // Neither JSON nor a form: not read.
        let text = crate::http::Headers::from_iter([("Content-Type", "text/plain")]);
        assert_eq!(login_username(&cfg, "/login", &text, b"username=u"), None);
    }
}
