//! Shared by the fuzz targets that check no token is echoed (`token`, `packet_path`).

/// Three non-empty base64url segments (a JWS): a token, as opposed to other text. The echo
/// checks look only at these: libFuzzer sees the comparisons made, so it can write a header
/// value that equals a piece of the output it is compared with (a verdict's Debug text, an
/// alert's timestamp), which is no leak.
pub fn jws_shaped(v: &[u8]) -> bool {
    let mut parts = 0;
    v.split(|b| *b == b'.').all(|p| {
        parts += 1;
        !p.is_empty()
            && p.iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
    }) && parts == 3
}
