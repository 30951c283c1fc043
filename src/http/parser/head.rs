//! Head parsing: start lines and header fields through httparse (and its configuration),
//! the lenient reader of start lines httparse rejects but real peers accept, judging a
//! start line as it arrives, a start line cut by the head cap, and trailer sections.

use super::*;

/// The start line of a parsed head.
#[derive(Debug)]
pub(super) enum StartLine {
    Request {
        method: compact_str::CompactString,
        target: compact_str::CompactString,
        version: u8,
    },
    Response {
        status: u16,
        version: u8,
    },
}

/// The head could not be parsed even leniently.
#[derive(Debug)]
pub(super) struct Unparsable;

#[derive(Debug)]
pub(super) enum HeadError {
    TooManyHeaders,
    Invalid,
}

pub(super) fn parser_config(lenient: bool) -> httparse::ParserConfig {
    let mut c = httparse::ParserConfig::default();
    if lenient {
        c.allow_spaces_after_header_name_in_responses(true)
            .allow_obsolete_multiline_headers_in_responses(true)
            .allow_multiple_spaces_in_request_line_delimiters(true)
            .allow_multiple_spaces_in_response_status_delimiters(true)
            .allow_space_before_first_header_name(true)
            .ignore_invalid_headers_in_requests(true)
            .ignore_invalid_headers_in_responses(true);
    }
    c
}

/// A head as parsed.
#[derive(Debug)]
pub(super) struct ParsedHead {
    pub(super) line: StartLine,
    pub(super) headers: Headers,
    pub(super) anomalies: AnomalySet,
    /// Bytes of the input it spans (less than all for a request line without a version).
    pub(super) len: usize,
}

/// Parses a complete head with httparse (see [`parse_head_httparse`]); when httparse
/// rejects the start line, with the lenient fallback ([`lenient_start_line`]): the odd line
/// is read leniently, flagged by what was odd, and the header fields after it are parsed
/// by httparse as usual. A request line without a version is the whole head.
pub(super) fn parse_head(
    role: Role,
    head: &[u8],
    max_headers: usize,
) -> Result<ParsedHead, Unparsable> {
    if let Ok((line, headers, anomalies)) = parse_head_httparse(role, head, max_headers) {
        return Ok(ParsedHead {
            line,
            headers,
            anomalies,
            len: head.len(),
        });
    }
    let nl = memchr(b'\n', head).ok_or(Unparsable)?;
    let first = head.get(..=nl).ok_or(Unparsable)?;
    let odd = lenient_start_line(role, first).ok_or(Unparsable)?;
    if odd.alone {
        return Ok(ParsedHead {
            line: odd.line,
            headers: Headers::new(),
            anomalies: odd.anomalies,
            len: first.len(),
        });
    }
    // The fields after the odd line, parsed by httparse behind a start line it accepts
    // (copied: this path is rare).
    let stand_in: &[u8] = match role {
        Role::Request => b"GET / HTTP/1.1\r\n",
        Role::Response => b"HTTP/1.1 200 OK\r\n",
    };
    let mut copy = Vec::with_capacity(stand_in.len() + head.len() - first.len());
    copy.extend_from_slice(stand_in);
    copy.extend_from_slice(head.get(first.len()..).unwrap_or_default());
    let (_, headers, mut anomalies) = parse_head_httparse(role, &copy, max_headers)?;
    anomalies.0 |= odd.anomalies.0;
    Ok(ParsedHead {
        line: odd.line,
        headers,
        anomalies,
        len: head.len(),
    })
}

/// Parses a complete head: strictly first; a head only a lenient parser accepts is kept
/// and flagged BadHead; past `max_headers` the first fields are kept (TooManyHeaders).
pub(super) fn parse_head_httparse(
    role: Role,
    head: &[u8],
    max_headers: usize,
) -> Result<(StartLine, Headers, AnomalySet), Unparsable> {
    let mut anomalies = AnomalySet::default();
    let mut lenient = false;
    let mut shortened: Option<Vec<u8>> = None;
    for _ in 0..4 {
        let bytes = shortened.as_deref().unwrap_or(head);
        match parse_once(role, bytes, max_headers, lenient) {
            Ok((line, headers, _)) => return Ok((line, headers, anomalies)),
            Err(HeadError::TooManyHeaders) if shortened.is_none() => {
                anomalies.insert(Anomaly::TooManyHeaders);
                shortened = Some(first_lines(head, max_headers.saturating_add(1)));
            }
            Err(HeadError::Invalid) if !lenient => {
                anomalies.insert(Anomaly::BadHead);
                lenient = true;
            }
            Err(_) => return Err(Unparsable),
        }
    }
    Err(Unparsable)
}

/// The first `lines` lines of a head, closed with an empty line.
pub(super) fn first_lines(head: &[u8], lines: usize) -> Vec<u8> {
    let end = memchr_iter(b'\n', head)
        .nth(lines.saturating_sub(1))
        .map_or(head.len(), |i| i + 1);
    let mut v = Vec::with_capacity(end + 2);
    v.extend_from_slice(head.get(..end).unwrap_or(head));
    v.extend_from_slice(b"\r\n");
    v
}

/// The fields httparse parsed from `head`, kept with one copy of the bytes they span.
pub(super) fn owned_headers(head: &[u8], parsed: &[httparse::Header<'_>]) -> Headers {
    let mut out = crate::http::recycled_headers();
    out.extend_parsed(head, parsed);
    out
}

/// Parses one head with httparse (strict, or with the lenient options). `Ok` with httparse's
/// length of the head when it is complete in `head`; the fields are kept with one copy of
/// the bytes up to that length.
pub(super) fn parse_once(
    role: Role,
    head: &[u8],
    max_headers: usize,
    lenient: bool,
) -> Result<(StartLine, Headers, usize), HeadError> {
    let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADER_SLOTS];
    let mut heap = Vec::new();
    let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if max_headers <= STACK_HEADER_SLOTS {
        stack.get_mut(..max_headers).unwrap_or_default()
    } else {
        heap.resize_with(max_headers, MaybeUninit::uninit);
        &mut heap
    };
    let config = parser_config(lenient);
    let status = match role {
        Role::Request => {
            let mut req = httparse::Request::new(&mut []);
            let status = config.parse_request_with_uninit_headers(&mut req, head, slots);
            if let Ok(httparse::Status::Complete(n)) = status {
                let line = StartLine::Request {
                    method: req.method.unwrap_or_default().into(),
                    target: req.path.unwrap_or_default().into(),
                    version: req.version.unwrap_or(1),
                };
                let used = head.get(..n).unwrap_or(head);
                return Ok((line, owned_headers(used, req.headers), used.len()));
            }
            status
        }
        Role::Response => {
            let mut resp = httparse::Response::new(&mut []);
            let status = config.parse_response_with_uninit_headers(&mut resp, head, slots);
            if let Ok(httparse::Status::Complete(n)) = status {
                let line = StartLine::Response {
                    status: resp.code.unwrap_or(0),
                    version: resp.version.unwrap_or(1),
                };
                let used = head.get(..n).unwrap_or(head);
                return Ok((line, owned_headers(used, resp.headers), used.len()));
            }
            status
        }
    };
    match status {
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooManyHeaders),
        _ => Err(HeadError::Invalid),
    }
}

/// A head that is whole at the start of `input` and that strict httparse accepts, parsed
/// in one pass: it ends where httparse's parse ended, so the empty line is not searched
/// for first (that search was 2% of the pipeline's instructions, for heads that nearly
/// always arrive whole). Gives what [`parse_head`] gives for the head [`find_head_end`]
/// finds. `None` for anything else, which then takes that way: a head cut short, one
/// httparse rejects or that has too many fields, and input starting with a line break
/// (httparse skips empty lines before a start line; the head search ends at them).
pub(super) fn parse_whole_head(role: Role, input: &[u8], max_headers: usize) -> Option<ParsedHead> {
    if matches!(input.first(), None | Some(b'\r' | b'\n')) {
        return None;
    }
    let (line, headers, len) = parse_once(role, input, max_headers, false).ok()?;
    Some(ParsedHead {
        line,
        headers,
        anomalies: AnomalySet::default(),
        len,
    })
}

/// What a complete start line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LineVerdict {
    /// httparse accepts it; the head goes on to an empty line.
    Strict,
    /// Only the lenient fallback reads it (a quirk real servers accept); the head goes on
    /// to an empty line.
    Lenient,
    /// A request line without a version (HTTP/0.9 style): the line is the whole head.
    /// Holds the line's length with its break.
    Alone(usize),
    /// Not a start line.
    Bad,
}

impl LineVerdict {
    pub(super) fn parses(self) -> bool {
        matches!(self, LineVerdict::Strict | LineVerdict::Lenient)
    }
}

/// Judges the start line of a head being accumulated once its line break is there
/// (`Some`); `None` while it is still incomplete. Without `lenient` (a resync hunting
/// through bytes that may be a body) only what httparse accepts is a start line. Bytes before `new_from` are known to hold
/// no line break. Judging at the first line break drops false starts early instead of
/// after a whole head cap of bytes.
pub(super) fn judge_start_line(
    role: Role,
    head: &[u8],
    new_from: usize,
    lenient: bool,
) -> Option<LineVerdict> {
    let i = head.get(new_from..).and_then(|s| memchr(b'\n', s))?;
    let line = head.get(..=new_from + i).unwrap_or(head);
    let config = parser_config(true);
    // Zero header slots: a valid start line leaves the parser wanting headers.
    let status = match role {
        Role::Request => config.parse_request(&mut httparse::Request::new(&mut []), line),
        Role::Response => config.parse_response(&mut httparse::Response::new(&mut []), line),
    };
    if matches!(status, Ok(httparse::Status::Partial)) {
        return Some(LineVerdict::Strict);
    }
    if !lenient {
        return Some(LineVerdict::Bad);
    }
    Some(match lenient_start_line(role, line) {
        Some(l) if l.alone => LineVerdict::Alone(line.len()),
        Some(_) => LineVerdict::Lenient,
        None => LineVerdict::Bad,
    })
}

/// A start line httparse rejects but real servers or clients accept, read leniently.
#[derive(Debug)]
pub(super) struct LenientLine {
    pub(super) line: StartLine,
    /// What was odd about it.
    pub(super) anomalies: AnomalySet,
    /// A request line without a version: no header section follows.
    pub(super) alone: bool,
}

/// The minor version of `HTTP/1.0` or `HTTP/1.1`.
pub(super) fn http1_minor(word: &[u8]) -> Option<u8> {
    match word {
        b"HTTP/1.0" => Some(0),
        b"HTTP/1.1" => Some(1),
        _ => None,
    }
}

pub(super) fn trim_spaces(mut b: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' '] = b {
        b = rest;
    }
    b
}

/// Reads a start line (with or without its line break) that httparse rejected, the way
/// servers that accept it do: a request target with spaces inside (`GET /a b HTTP/1.1`),
/// no version (`GET /path`, HTTP/0.9), no target (`GET HTTP/1.1`, `GET`); a status line
/// whose status is not three digits (`HTTP/1.1 abc OK`, status 0). `None` for anything
/// else, including control bytes, an unknown protocol word, or a line httparse would
/// accept were it not for other bytes (those stay unparsable).
pub(super) fn lenient_start_line(role: Role, line: &[u8]) -> Option<LenientLine> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return None;
    }
    let mut anomalies = AnomalySet::default();
    match role {
        Role::Request => {
            let method_len = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
            let method = line.get(..method_len)?;
            if method.is_empty()
                || method.len() > MAX_METHOD_LEN
                || !method.iter().copied().all(is_method_char)
            {
                return None;
            }
            let rest = trim_spaces(line.get(method_len..).unwrap_or_default());
            let last_start = rest.iter().rposition(|&b| b == b' ').map_or(0, |i| i + 1);
            let last = rest.get(last_start..).unwrap_or_default();
            let (target, version) = match http1_minor(last) {
                Some(v) => (
                    trim_spaces(rest.get(..last_start).unwrap_or_default()),
                    Some(v),
                ),
                // Another protocol word (HTTP/2.0, HTTP/1.2): not a line to guess at.
                None if last.starts_with(b"HTTP/") => return None,
                None => (rest, None),
            };
            if target.is_empty() {
                anomalies.insert(Anomaly::RequestLineNoTarget);
            }
            if target.contains(&b' ') {
                anomalies.insert(Anomaly::RequestLineSpaceInTarget);
            }
            if version.is_none() {
                // Without a version only a known method makes a request (a stray word in
                // a request stream must not become one).
                if !is_known_method(method) {
                    return None;
                }
                anomalies.insert(Anomaly::RequestLineNoVersion);
            }
            if anomalies.is_empty() {
                // Method, target and version as httparse wants them: what it rejected is
                // elsewhere (bytes in the target), not a quirk read here.
                return None;
            }
            Some(LenientLine {
                line: StartLine::Request {
                    method: String::from_utf8_lossy(method).into(),
                    target: String::from_utf8_lossy(target).into(),
                    version: version.unwrap_or(0),
                },
                anomalies,
                alone: version.is_none(),
            })
        }
        Role::Response => {
            let rest = line.strip_prefix(STATUS_LINE_PREFIX)?;
            let (&minor, rest) = rest.split_first()?;
            if !minor.is_ascii_digit() || !(rest.is_empty() || rest.starts_with(b" ")) {
                return None;
            }
            let rest = trim_spaces(rest);
            let code_len = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
            let code = rest.get(..code_len).unwrap_or_default();
            if code.len() == 3 && code.iter().all(u8::is_ascii_digit) {
                return None;
            }
            anomalies.insert(Anomaly::StatusNonNumeric);
            Some(LenientLine {
                line: StartLine::Response {
                    status: 0,
                    version: minor - b'0',
                },
                anomalies,
                alone: false,
            })
        }
    }
}

/// The start line of a head cut by the head cap, if that much of it parses.
pub(super) fn start_line_only(role: Role, partial: &[u8]) -> Option<(StartLine, AnomalySet)> {
    if judge_start_line(role, partial, 0, true) == Some(LineVerdict::Lenient) {
        let line = partial.get(..=memchr(b'\n', partial)?)?;
        return lenient_start_line(role, line).map(|l| (l.line, l.anomalies));
    }
    let config = parser_config(true);
    let line = match role {
        Role::Request => {
            let mut req = httparse::Request::new(&mut []);
            let _ = config.parse_request(&mut req, partial);
            StartLine::Request {
                method: req.method?.into(),
                target: req.path?.into(),
                version: req.version.unwrap_or(1),
            }
        }
        Role::Response => {
            let mut resp = httparse::Response::new(&mut []);
            let _ = config.parse_response(&mut resp, partial);
            StartLine::Response {
                status: resp.code?,
                version: resp.version.unwrap_or(1),
            }
        }
    };
    Some((line, AnomalySet::default()))
}

/// Trailer fields (`section` ends with the empty line). Bad trailers are dropped, flagged.
pub(super) fn parse_trailers(section: &[u8], max_headers: usize) -> (Headers, Option<Anomaly>) {
    if section.len() <= 2 {
        return (Headers::new(), None);
    }
    let mut slots = vec![httparse::EMPTY_HEADER; max_headers];
    match httparse::parse_headers(section, &mut slots) {
        Ok(httparse::Status::Complete((_, parsed))) => (owned_headers(section, parsed), None),
        Err(httparse::Error::TooManyHeaders) => (Headers::new(), Some(Anomaly::TooManyHeaders)),
        _ => (Headers::new(), Some(Anomaly::BadHead)),
    }
}
