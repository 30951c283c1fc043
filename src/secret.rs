//! Secrets given in config: inline, in a file (trimmed of surrounding whitespace: editors add
//! a newline) or in an environment variable, exactly one of the three. Shared by every config
//! section that takes one (`[[webhook]] secret`, `[enforce]` keys), so the three ways and
//! their errors read the same everywhere. The value is never part of an error.

/// Why a secret could not be read: the key to blame (`secret`, `secret_file`,
/// `secret_env`, with the section's prefix) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretError {
    pub key: String,
    pub message: String,
}

/// The secret named `key` from `key` (inline), `key_file` or `key_env`; `None` when none of
/// them is set.
pub fn read(
    key: &str,
    inline: Option<&str>,
    file: Option<&str>,
    env: Option<&str>,
) -> Result<Option<Vec<u8>>, SecretError> {
    let err = |k: String, message: String| SecretError { key: k, message };
    match (inline, file, env) {
        (None, None, None) => Ok(None),
        (Some(s), None, None) => Ok(Some(s.as_bytes().to_vec())),
        (None, Some(f), None) => std::fs::read(f)
            .map(|b| Some(b.trim_ascii().to_vec()))
            .map_err(|e| err(format!("{key}_file"), format!("cannot read {f}: {e}"))),
        (None, None, Some(v)) => std::env::var(v)
            .map(|s| Some(s.into_bytes()))
            .map_err(|_| err(format!("{key}_env"), format!("variable {v} is not set"))),
        _ => Err(err(
            key.to_string(),
            format!("give one of {key}, {key}_file, {key}_env"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_of_three_ways() {
        assert_eq!(read("secret", None, None, None), Ok(None));
        assert_eq!(
            read("secret", Some("inline-value-0123"), None, None),
            Ok(Some(b"inline-value-0123".to_vec()))
        );
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), b"  from-a-file-0123\n").unwrap();
        let p = f.path().to_str().unwrap();
        assert_eq!(
            read("api_key", None, Some(p), None),
            Ok(Some(b"from-a-file-0123".to_vec()))
        );
        let e = read("api_key", None, Some("/nonexistent/key"), None).unwrap_err();
        assert_eq!(e.key, "api_key_file");
        assert!(e.message.starts_with("cannot read /nonexistent/key"));
        let e = read("secret", None, None, Some("SHIELDTAP_TEST_UNSET_VAR")).unwrap_err();
        assert_eq!(e.key, "secret_env");
        let e = read("secret", Some("a"), Some(p), None).unwrap_err();
        assert_eq!(
            (e.key.as_str(), e.message.as_str()),
            ("secret", "give one of secret, secret_file, secret_env")
        );
    }
}
