//! A strict reader of an HTTP/1.1 request head, for the TCP edge (see [`crate::edge`]).
//!
//! Strict on purpose: a head this reader accepts is forwarded as raw bytes to a game
//! process, with no HTTP codec behind it, so anything a codec could read differently from us
//! (request smuggling) must be refused here. A refused head is not an error for the client:
//! the connection goes to Envoy's HTTP connection manager, which applies its own rules.
//! So this reader only has to be right about what it accepts.

/// Why a head is not read (the connection then goes to the HTTP connection manager).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No end of head within the size limit.
    TooLarge,
    /// A line ends in `\n` without `\r`, or a `\r` stands alone.
    BareLineEnding,
    /// A header line starts with a space or tab (obsolete line folding).
    ObsFold,
    /// The request line is not `METHOD SP origin-form-target SP HTTP/1.1`.
    RequestLine,
    /// A header name is empty, not a token, or followed by whitespace before the colon.
    HeaderName,
    /// A header line without a colon, or a value with control or non-ASCII bytes.
    HeaderValue,
}

/// One header as read: the name as sent, the value with surrounding whitespace trimmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub name: &'a str,
    pub value: &'a str,
}

/// A complete, well-formed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head<'a> {
    pub method: &'a str,
    /// The request target as sent (origin form: starts with `/`).
    pub target: &'a str,
    pub headers: Vec<Header<'a>>,
    /// Bytes of the head, the blank line included; what follows is not part of it.
    pub len: usize,
}

impl<'a> Head<'a> {
    /// Every value of a header, by case-insensitive name.
    pub fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a str> + 's {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }
}

/// What reading the bytes received so far gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read<'a> {
    /// No end of head yet, and nothing wrong so far: wait for more bytes.
    Incomplete,
    Complete(Head<'a>),
    Refused(Refusal),
}

/// Reads the request head at the start of `buf`, looking at no more than `max_len` bytes.
pub fn read(buf: &[u8], max_len: usize) -> Read<'_> {
    let window = &buf[..buf.len().min(max_len)];
    let Some(end) = find(window, b"\r\n\r\n") else {
        // A bare LF (or lone CR) already seen is refused now, not after the deadline.
        if let Some(refusal) = bad_line_endings(window) {
            return Read::Refused(refusal);
        }
        return if buf.len() >= max_len {
            Read::Refused(Refusal::TooLarge)
        } else {
            Read::Incomplete
        };
    };
    let head = &window[..end];
    if let Some(refusal) = bad_line_endings(head) {
        return Read::Refused(refusal);
    }
    // Only ASCII is accepted below, so this fails only on bytes that are refused anyway.
    let Ok(text) = std::str::from_utf8(head) else {
        return Read::Refused(Refusal::HeaderValue);
    };
    let mut lines = text.split("\r\n");
    let Some((method, target)) = lines.next().and_then(request_line) else {
        return Read::Refused(Refusal::RequestLine);
    };
    let mut headers = Vec::new();
    for line in lines {
        match header(line) {
            Ok(h) => headers.push(h),
            Err(refusal) => return Read::Refused(refusal),
        }
    }
    Read::Complete(Head {
        method,
        target,
        headers,
        len: end + 4,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A `\n` not preceded by `\r`, or a `\r` not followed by `\n` (a `\r` at the very end may
/// still get its `\n`).
fn bad_line_endings(bytes: &[u8]) -> Option<Refusal> {
    for (i, &b) in bytes.iter().enumerate() {
        let bad = match b {
            b'\n' => i == 0 || bytes[i - 1] != b'\r',
            b'\r' => bytes.get(i + 1).is_some_and(|&next| next != b'\n'),
            _ => false,
        };
        if bad {
            return Some(Refusal::BareLineEnding);
        }
    }
    None
}

/// `METHOD SP /target SP HTTP/1.1`, single spaces, nothing else.
fn request_line(line: &str) -> Option<(&str, &str)> {
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let ok = parts.next().is_none()
        && !method.is_empty()
        && method.bytes().all(is_tchar)
        && target.starts_with('/')
        && target.bytes().all(|b| b.is_ascii_graphic())
        && version == "HTTP/1.1";
    ok.then_some((method, target))
}

fn header(line: &str) -> Result<Header<'_>, Refusal> {
    if line.starts_with([' ', '\t']) {
        return Err(Refusal::ObsFold);
    }
    let (name, value) = line.split_once(':').ok_or(Refusal::HeaderValue)?;
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(Refusal::HeaderName);
    }
    if !value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return Err(Refusal::HeaderValue);
    }
    Ok(Header {
        name,
        value: value.trim_matches([' ', '\t']),
    })
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1024;

    fn complete(bytes: &[u8]) -> Head<'_> {
        match read(bytes, MAX) {
            Read::Complete(h) => h,
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(bytes)),
        }
    }

    fn refused(bytes: &[u8]) -> Refusal {
        match read(bytes, MAX) {
            Read::Refused(r) => r,
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(bytes)),
        }
    }

    #[test]
    fn reads_a_websocket_upgrade() {
        let bytes = b"GET /p1/r1?sessionId=s HTTP/1.1\r\nHost: a:1\r\nUpgrade:websocket\r\nX-A:  v v \t\r\n\r\nFRAME";
        let head = complete(bytes);
        assert_eq!((head.method, head.target), ("GET", "/p1/r1?sessionId=s"));
        assert_eq!(head.len, bytes.len() - 5);
        assert_eq!(head.values("upgrade").collect::<Vec<_>>(), ["websocket"]);
        assert_eq!(head.values("x-a").collect::<Vec<_>>(), ["v v"]);
        assert_eq!(head.headers.len(), 3);
    }

    #[test]
    fn waits_for_the_rest() {
        for partial in [
            &b""[..],
            b"GET / HTTP/1.1",
            b"GET / HTTP/1.1\r",
            b"GET / HTTP/1.1\r\nHost: a\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\r",
        ] {
            assert_eq!(read(partial, MAX), Read::Incomplete, "{partial:?}");
        }
    }

    #[test]
    fn refuses_what_a_codec_could_read_differently() {
        assert_eq!(
            refused(b"GET / HTTP/1.1\nHost: a\r\n\r\n"),
            Refusal::BareLineEnding
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nHost: a\n\n"),
            Refusal::BareLineEnding
        );
        // Refused before the head ends, not at the deadline.
        assert_eq!(refused(b"GET / HTTP/1.1\nHo"), Refusal::BareLineEnding);
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n"),
            Refusal::BareLineEnding
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n"),
            Refusal::ObsFold
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\n\tA: b\r\n\r\n"),
            Refusal::ObsFold
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nA : b\r\n\r\n"),
            Refusal::HeaderName
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\n: b\r\n\r\n"),
            Refusal::HeaderName
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nA(: b\r\n\r\n"),
            Refusal::HeaderName
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nAb\r\n\r\n"),
            Refusal::HeaderValue
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nA: \x00\r\n\r\n"),
            Refusal::HeaderValue
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nA: \xc3\xa9\r\n\r\n"),
            Refusal::HeaderValue
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nA: \xff\r\n\r\n"),
            Refusal::HeaderValue
        );
        for line in [
            &b"GET http://evil/ HTTP/1.1"[..],
            b"GET * HTTP/1.1",
            b"GET  / HTTP/1.1",
            b"GET / HTTP/1.0",
            b"GET / HTTP/1.1 ",
            b"GET /\x7f HTTP/1.1",
            b"GET / x HTTP/1.1",
            b"G(T / HTTP/1.1",
            b"/ HTTP/1.1",
            b"",
        ] {
            let mut bytes = line.to_vec();
            bytes.extend_from_slice(b"\r\nHost: a\r\n\r\n");
            assert_eq!(refused(&bytes), Refusal::RequestLine, "{line:?}");
        }
    }

    #[test]
    fn bounds_the_head() {
        let mut big = b"GET / HTTP/1.1\r\nA: ".to_vec();
        big.resize(MAX, b'a');
        assert_eq!(refused(&big), Refusal::TooLarge);
        // The end past the limit is not looked for.
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(refused(&big), Refusal::TooLarge);
        let mut fits = b"GET / HTTP/1.1\r\nA: ".to_vec();
        fits.resize(MAX - 4, b'a');
        fits.extend_from_slice(b"\r\n\r\n");
        assert_eq!(complete(&fits).len, MAX);
    }
}
