//! Helpers shared by Herald's fuzz targets: a readable text form of an HTTP request (so corpus
//! files can be written and read by hand), the server's query decoding, and a byte cursor.

/// A request as the OpenAPI handler sees it, decoded from the fuzz input.
///
/// The input format is HTTP/1 with `\n` line ends:
///
/// ```text
/// METHOD SP path[?query] \n
/// Name: value \n          (zero or more; the one space after ':' is dropped, nothing else)
/// \n
/// body bytes
/// ```
///
/// The head is read as lossy UTF-8; the path and query are percent-decoded the way the server
/// decodes them (`+` is a space, `%XX` a byte, anything else itself).
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn parse(data: &[u8]) -> Request {
        let (head, body) = match find(data, b"\n\n") {
            Some(i) => (&data[..i], &data[i + 2..]),
            None => (data, &[][..]),
        };
        let head = String::from_utf8_lossy(head);
        let mut lines = head.split('\n');
        let first = lines.next().unwrap_or("");
        let (method, target) = first.split_once(' ').unwrap_or((first, ""));
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let headers = lines
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                (name.to_owned(), value.to_owned())
            })
            .collect();
        Request {
            method: method.to_owned(),
            path: percent_decode(path),
            query: parse_query(query),
            headers,
            body: body.to_vec(),
        }
    }

    /// The text form [`Request::parse`] reads back (for writing seeds). The query must already be
    /// encoded (`herald_proto::sign::encode_query`).
    pub fn render(
        method: &str,
        target: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Vec<u8> {
        let mut out = format!("{method} {target}\n").into_bytes();
        for (n, v) in headers {
            out.extend_from_slice(format!("{n}: {v}\n").as_bytes());
        }
        out.push(b'\n');
        out.extend_from_slice(body);
        out
    }

    /// The first header named `name` (case-insensitive), as the verifier reads it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The server's query parsing (`herald_proto::sign::decode_query`, as `herald-server` reads a
/// request). Empty pairs are skipped; a pair without `=` has an empty value.
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    herald_proto::sign::decode_query(q)
}

/// The server's percent-decoding of one component.
pub fn percent_decode(s: &str) -> String {
    herald_proto::sign::percent_decode(s)
}

/// True when `name` can be an HTTP header name (an RFC 9110 token).
pub fn is_http_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// True when `value` reaches the server unchanged as an HTTP header value: visible ASCII, spaces
/// and tabs, none at either end (HTTP strips them; `HeaderValue::to_str` refuses the rest).
pub fn is_http_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        && !value.starts_with([' ', '\t'])
        && !value.ends_with([' ', '\t'])
}

/// Replaces the character at char index `at % len` with a different ASCII character. Returns
/// false for an empty string.
pub fn change_one_char(s: &mut String, at: usize) -> bool {
    let n = s.chars().count();
    if n == 0 {
        return false;
    }
    let at = at % n;
    let mut out = String::with_capacity(s.len());
    for (i, c) in s.chars().enumerate() {
        if i == at {
            out.push(if c == 'a' { 'b' } else { 'a' });
        } else {
            out.push(c);
        }
    }
    *s = out;
    true
}

/// A cursor over fuzz bytes that yields zeros once they run out, so every input is a program.
pub struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Cursor { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// `len` bytes (fewer when the input ends).
    pub fn take(&mut self, len: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(len.min(self.data.len()));
        self.data = tail;
        head
    }

    /// A length byte and that many bytes.
    pub fn chunk(&mut self) -> &'a [u8] {
        let len = usize::from(self.u8());
        self.take(len)
    }

    /// A length (u16) and that many bytes.
    pub fn long_chunk(&mut self) -> &'a [u8] {
        let len = usize::from(self.u16());
        self.take(len)
    }

    /// A string from a length byte and that many bytes (lossy UTF-8).
    pub fn string(&mut self) -> String {
        String::from_utf8_lossy(self.chunk()).into_owned()
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}
