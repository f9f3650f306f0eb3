//! The vendor's V4 request signature (HMAC-SHA256), both sides of it (spec §3).
//!
//! The server verifies what the vendor's SDKs send, and the Rust SDK signs the way the Python SDK
//! does, so a request signed here verifies at the vendor's gateway as well as at Herald.
//!
//! The SDKs disagree on which headers they sign: Python signs `content-type` and `host`, Node signs
//! neither. Verification therefore never assumes a header set; it rebuilds the canonical request
//! from the `SignedHeaders` the request itself names (spec §3.2), which makes both styles verify.
//!
//! Two forms exist: the signature in an `Authorization` header ([`sign_request`],
//! [`parse_authorization`], [`verify_request`]) and the presigned URL whose signature travels in the
//! query ([`sign_query`], [`parse_query_authorization`], [`verify_query`]).
//!
//! Everything here is pure: the time comes in as `now_unix`, and the verifiers take the signing key
//! as an argument so the caller can cache it per (secret key, date, region, service) instead of
//! paying four HMACs per request.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The only algorithm the vendor defines; it opens every `Authorization` header.
pub const ALGORITHM: &str = "HMAC-SHA256";

/// How long a presigned URL stays valid when it carries no `X-Expires` (spec §3.1, the vendor's
/// public parameters).
pub const DEFAULT_QUERY_EXPIRES_SECS: i64 = 900;

/// The longest `X-Expires` [`verify_query`] honours: one week. The vendor documents no ceiling, but
/// without one a leaked URL would stay valid for as long as its author asked.
pub const MAX_QUERY_EXPIRES_SECS: i64 = 7 * 24 * 3600;

/// The last element of every credential scope.
const SCOPE_TERMINATOR: &str = "request";

/// What a signer needs: the key pair, the scope it signs for, and an optional STS session token.
#[derive(Clone, Copy)]
pub struct Credentials<'a> {
    /// The access key id (`AK…`); it travels in the clear in the credential.
    pub access_key: &'a str,
    /// The secret key, used only to derive the signing key; never sent.
    pub secret_key: &'a str,
    /// The region of the credential scope, e.g. `cn-north-1`.
    pub region: &'a str,
    /// The service of the credential scope; `rtc` for every messaging API.
    pub service: &'a str,
    /// An STS session token, sent as `X-Security-Token` and signed with the rest.
    pub session_token: Option<&'a str>,
}

/// Why a request's signature was refused. The messages name the rule that failed and never carry
/// a secret or the signature the server expected, so they are safe to return to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The request carries no signature at all.
    #[error("the request is not signed")]
    MissingAuthorization,
    /// The `Authorization` header (or the presigned query parameters) does not have the vendor's
    /// shape; the payload names the part that is wrong.
    #[error("malformed authorization: {0}")]
    MalformedAuthorization(&'static str),
    /// The credential scope (`AK/YYYYMMDD/region/service/request`) is malformed or does not match
    /// the request's `X-Date`; the payload names the part that is wrong.
    #[error("malformed credential: {0}")]
    MalformedCredential(&'static str),
    /// The request has no `X-Date`.
    #[error("the request has no X-Date")]
    MissingDate,
    /// `X-Date` is malformed, or the request is outside the time window it may be used in.
    #[error("X-Date is malformed or outside the allowed time window")]
    InvalidTimestamp,
    /// The credential scope names a service other than the one being called.
    #[error("the credential scope names another service")]
    WrongService,
    /// `X-Content-Sha256` does not match the body, or a presigned URL came with a body it cannot
    /// cover.
    #[error("the body does not match its signed hash")]
    BodyHashMismatch,
    /// The signature is not the one the request's content and the caller's key produce.
    #[error("the signature does not match")]
    SignatureMismatch,
}

// ---------------------------------------------------------------------------------------------
// X-Date
// ---------------------------------------------------------------------------------------------

/// Formats unix seconds as the vendor's `X-Date`, `YYYYMMDDTHHMMSSZ` in UTC (Python's
/// `%Y%m%dT%H%M%SZ`). Years outside 0000–9999 do not fit the format and come out wider; such a
/// value is never produced by a real clock and [`parse_x_date`] refuses it.
pub fn format_x_date(unix: i64) -> String {
    let t = UtcTime::from_unix(unix);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// A calendar date and time of day in UTC, from unix seconds: the one piece of date arithmetic
/// the project has (the `X-Date` here, the webhooks' ISO-8601 `EventTime` in the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    /// Proleptic Gregorian year.
    pub year: i64,
    /// 1–12.
    pub month: i64,
    /// 1–31.
    pub day: i64,
    /// 0–23.
    pub hour: i64,
    /// 0–59.
    pub minute: i64,
    /// 0–59.
    pub second: i64,
}

impl UtcTime {
    /// The UTC date and time `unix` seconds after 1970-01-01T00:00:00Z.
    pub fn from_unix(unix: i64) -> Self {
        let secs = unix.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(unix.div_euclid(86_400));
        UtcTime {
            year,
            month,
            day,
            hour: secs / 3600,
            minute: secs / 60 % 60,
            second: secs % 60,
        }
    }
}

/// Parses an `X-Date` back into unix seconds. Anything that is not exactly `YYYYMMDDTHHMMSSZ` with
/// a real calendar date and time (no leap second) is `None`, because a lenient parse would let two
/// spellings of one instant sign differently.
pub fn parse_x_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        b[range].iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let (year, month, day) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hour, minute, second) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`]: (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

// ---------------------------------------------------------------------------------------------
// The primitives shared by signing and verifying
// ---------------------------------------------------------------------------------------------

fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Derives the signing key: `kSigning = HMAC(HMAC(HMAC(HMAC(sk, date8), region), service),
/// "request")`. Unlike AWS there is no prefix on the secret key (spec §3.1 step 12). It depends on
/// the day, not the instant, so the server caches it per (secret key, date, region, service).
pub fn signing_key(secret_key: &str, date8: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac_sha256(secret_key.as_bytes(), date8.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, SCOPE_TERMINATOR.as_bytes())
}

fn credential_scope(date8: &str, region: &str, service: &str) -> String {
    format!("{date8}/{region}/{service}/{SCOPE_TERMINATOR}")
}

/// RFC 3986 unreserved characters: the only bytes the canonical forms leave unencoded.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// Appends `s` percent-encoded over its UTF-8 bytes, upper-case hex, keeping the bytes `keep`
/// accepts (Python's `quote(s, safe=…)`, so a space is `%20`, never `+`).
fn push_encoded(out: &mut String, s: &str, keep: impl Fn(u8) -> bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if keep(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

/// The canonical query: pairs sorted by key and then by value (byte order of the raw strings, as
/// the SDKs sort), each side strictly percent-encoded, joined `k=v` with `&`. Sorting values of a
/// repeated key follows Go and Node; Python keeps their order, which only matters for repeated
/// keys, which no messaging API uses.
fn canonical_query<'q>(pairs: impl IntoIterator<Item = (&'q str, &'q str)>) -> String {
    let mut pairs: Vec<(&str, &str)> = pairs.into_iter().collect();
    pairs.sort_unstable();
    encode_query(&pairs)
}

/// The canonical path: percent-encoded keeping `/`, and `/` when empty (Python's `norm_uri`).
fn canonical_path(path: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    let mut out = String::with_capacity(path.len());
    push_encoded(&mut out, path, |b| is_unreserved(b) || b == b'/');
    out
}

/// The `host` value as it is signed: a default port (`:80`, `:443`) is dropped, any other port is
/// kept. This is the SDKs' rule to the letter (split on `:`, look at the second piece), so it
/// computes what they computed even for odd values.
fn canonical_host(value: &str) -> &str {
    let mut pieces = value.split(':');
    let host = pieces.next().unwrap_or(value);
    match pieces.next() {
        Some("80" | "443") => host,
        _ => value,
    }
}

/// The canonical request of spec §3.1 step 9. `canonical_headers` is the `name:value\n` block (it
/// ends with a newline, so a blank line precedes `signed_headers`).
fn canonical_request(
    method: &str,
    path: &str,
    query: &str,
    canonical_headers: &str,
    signed_headers: &str,
    body_hash: &str,
) -> String {
    format!("{method}\n{path}\n{query}\n{canonical_headers}\n{signed_headers}\n{body_hash}")
}

fn string_to_sign(x_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{x_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

fn signature(key: &[u8; 32], x_date: &str, scope: &str, canonical_request: &str) -> [u8; 32] {
    hmac_sha256(
        key,
        string_to_sign(x_date, scope, canonical_request).as_bytes(),
    )
}

// ---------------------------------------------------------------------------------------------
// Signing
// ---------------------------------------------------------------------------------------------

/// Signs a request the way the vendor's Python SDK does, so the result verifies at the vendor's
/// gateway too.
///
/// `headers` are the headers the caller will send; they must include `Host` and `Content-Type`
/// (this function adds no defaults). Signed are `content-type`, `content-md5`, `host` and every
/// `x-*` header, matched case-insensitively, values verbatim, with a default port dropped from
/// `host`; a repeated name is signed with its first value. `X-Date`, `X-Content-Sha256` and
/// `X-Security-Token` in `headers` are ignored, because this function sets them.
///
/// `path` and `query` are unencoded; `query` pairs may repeat a key. Returns the headers to add,
/// in this order: `X-Date`, `X-Content-Sha256`, `X-Security-Token` (with a session token only),
/// `Authorization`.
pub fn sign_request(
    creds: &Credentials<'_>,
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    headers: &[(&str, &str)],
    body: &[u8],
    now_unix: i64,
) -> Vec<(String, String)> {
    let x_date = format_x_date(now_unix);
    let date8 = &x_date[..8];
    let body_hash = sha256_hex(body);

    let mut signed: Vec<(String, &str)> = Vec::new();
    for &(name, value) in headers {
        let name = name.to_ascii_lowercase();
        let selected = matches!(name.as_str(), "content-type" | "content-md5" | "host")
            || name.starts_with("x-");
        let set_here = matches!(
            name.as_str(),
            "x-date" | "x-content-sha256" | "x-security-token"
        );
        if selected && !set_here && !signed.iter().any(|(n, _)| *n == name) {
            signed.push((name, value));
        }
    }
    signed.push(("x-date".to_owned(), &x_date));
    signed.push(("x-content-sha256".to_owned(), &body_hash));
    if let Some(token) = creds.session_token {
        signed.push(("x-security-token".to_owned(), token));
    }
    signed.sort_unstable_by(|a, b| a.0.cmp(&b.0));

    let mut canonical_headers = String::new();
    for (name, value) in &signed {
        let value = if name == "host" {
            canonical_host(value)
        } else {
            value
        };
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(value);
        canonical_headers.push('\n');
    }
    let signed_headers = signed
        .iter()
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>()
        .join(";");

    let request = canonical_request(
        method,
        &canonical_path(path),
        &canonical_query(query.iter().copied()),
        &canonical_headers,
        &signed_headers,
        &body_hash,
    );
    let scope = credential_scope(date8, creds.region, creds.service);
    let key = signing_key(creds.secret_key, date8, creds.region, creds.service);
    let sig = hex::encode(signature(&key, &x_date, &scope, &request));
    let authorization = format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={sig}",
        creds.access_key
    );

    let mut out = vec![
        ("X-Date".to_owned(), x_date),
        ("X-Content-Sha256".to_owned(), body_hash),
    ];
    if let Some(token) = creds.session_token {
        out.push(("X-Security-Token".to_owned(), token.to_owned()));
    }
    out.push(("Authorization".to_owned(), authorization));
    out
}

/// Sets `name` in a query the way a Python dict assignment does: an existing key keeps its place
/// and takes the new value (later repeats are dropped), a new key goes to the end.
fn set_param(query: &mut Vec<(String, String)>, name: &str, value: &str) {
    let mut seen = false;
    query.retain_mut(|(k, v)| {
        if k != name {
            return true;
        }
        if seen {
            return false;
        }
        seen = true;
        value.clone_into(v);
        true
    });
    if !seen {
        query.push((name.to_owned(), value.to_owned()));
    }
}

/// Presigns a request for the path `/` the way the Python SDK's `sign_url` does (spec §3.1,
/// "Query-string (presigned) variant"; vector P1).
///
/// Returns every query pair to send, unencoded, in the order Python emits them: the original
/// pairs, then `X-Date`, `X-NotSignBody`, `X-Credential`, `X-Algorithm`, `X-SignedHeaders`,
/// `X-SignedQueries`, `X-Security-Token` (with a session token only) and `X-Signature`.
/// `X-SignedQueries` lists the sorted keys present before the token is added, as Python does; the
/// signature covers every pair but `X-Signature`, the token included. An `X-Expires` in `query`
/// is signed like any other pair and bounds the URL's life (see [`verify_query`]).
/// [`encode_query`] turns the result into a query string.
pub fn sign_query(
    creds: &Credentials<'_>,
    method: &str,
    query: &[(&str, &str)],
    now_unix: i64,
) -> Vec<(String, String)> {
    let x_date = format_x_date(now_unix);
    let date8 = &x_date[..8];
    let scope = credential_scope(date8, creds.region, creds.service);

    let mut out: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| *k != "X-Signature")
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    set_param(&mut out, "X-Date", &x_date);
    set_param(&mut out, "X-NotSignBody", "");
    set_param(
        &mut out,
        "X-Credential",
        &format!("{}/{scope}", creds.access_key),
    );
    set_param(&mut out, "X-Algorithm", ALGORITHM);
    set_param(&mut out, "X-SignedHeaders", "");
    set_param(&mut out, "X-SignedQueries", "");
    let mut keys: Vec<&str> = out.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    let signed_queries = keys.join(";");
    set_param(&mut out, "X-SignedQueries", &signed_queries);
    if let Some(token) = creds.session_token {
        set_param(&mut out, "X-Security-Token", token);
    }

    let request = presigned_canonical_request(
        method,
        "/",
        out.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    let key = signing_key(creds.secret_key, date8, creds.region, creds.service);
    let sig = hex::encode(signature(&key, &x_date, &scope, &request));
    out.push(("X-Signature".to_owned(), sig));
    out
}

/// The presigned canonical request. Python joins a literal `"\n"` where the header block goes and
/// the empty `X-SignedHeaders` after it, and always hashes an empty body, so four newlines precede
/// the hash of nothing (spec §3.1).
fn presigned_canonical_request<'q>(
    method: &str,
    path: &str,
    signed_pairs: impl IntoIterator<Item = (&'q str, &'q str)>,
) -> String {
    canonical_request(
        method,
        &canonical_path(path),
        &canonical_query(signed_pairs),
        "\n",
        "",
        &sha256_hex(b""),
    )
}

/// Encodes query pairs into a query string, in the given order, with the same strict RFC 3986
/// encoding the signature uses (a space is `%20`), so what is sent decodes to what was signed.
pub fn encode_query<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> String {
    let mut out = String::new();
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        push_encoded(&mut out, key.as_ref(), is_unreserved);
        out.push('=');
        push_encoded(&mut out, value.as_ref(), is_unreserved);
    }
    out
}

/// Decodes a query string into pairs, in arrival order, as the server reads a request: empty
/// pairs are skipped, a pair without `=` has an empty value, `+` is a space (as form encoding
/// has it) and a `%` not followed by two hex digits stays as it is.
pub fn decode_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Percent-decodes one query component (see [`decode_query`]); invalid UTF-8 becomes U+FFFD.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Verifying
// ---------------------------------------------------------------------------------------------

/// A parsed signature: the credential scope, the headers it covers and the signature itself.
/// Produced from an `Authorization` header by [`parse_authorization`] or from a presigned query
/// by [`parse_query_authorization`] (whose `signed_headers` is empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The access key id; the server looks the secret key up by it.
    pub access_key: String,
    /// The scope date, `YYYYMMDD`; it must be the date of the request's `X-Date`.
    pub date: String,
    /// The scope region; any region is accepted, since the vendor's docs disagree on the names.
    pub region: String,
    /// The scope service; it must name the service being called.
    pub service: String,
    /// The lower-case header names the signature covers, in the order they were signed.
    pub signed_headers: Vec<String>,
    /// The 32 signature bytes.
    pub signature: [u8; 32],
}

/// The request as the server received it, which is all verification needs.
#[derive(Debug, Clone, Copy)]
pub struct ReceivedRequest<'a> {
    /// The HTTP method, as received (`POST`).
    pub method: &'a str,
    /// The path, percent-decoded (`/`).
    pub path: &'a str,
    /// The query pairs, percent-decoded, in arrival order; keys may repeat.
    pub query: &'a [(String, String)],
    /// Every header, in arrival order; names are matched case-insensitively and a repeated name is
    /// read from its first occurrence.
    pub headers: &'a [(String, String)],
    /// The body bytes exactly as received.
    pub body: &'a [u8],
}

/// Parses `AK/YYYYMMDD/region/service/request`.
fn parse_credential(credential: &str) -> Result<(String, String, String, String), SignError> {
    let parts: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, terminator] = parts[..] else {
        return Err(SignError::MalformedCredential(
            "expected AccessKey/YYYYMMDD/region/service/request",
        ));
    };
    if access_key.is_empty() || region.is_empty() || service.is_empty() {
        return Err(SignError::MalformedCredential(
            "access key, region and service must not be empty",
        ));
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignError::MalformedCredential("the date must be YYYYMMDD"));
    }
    if terminator != SCOPE_TERMINATOR {
        return Err(SignError::MalformedCredential(
            "the scope must end with /request",
        ));
    }
    Ok((
        access_key.to_owned(),
        date.to_owned(),
        region.to_owned(),
        service.to_owned(),
    ))
}

/// Parses 64 lower-case hex digits, the only form the SDKs emit.
fn parse_signature(hex_digits: &str) -> Result<[u8; 32], SignError> {
    let malformed = SignError::MalformedAuthorization("Signature must be 64 lower-case hex digits");
    if hex_digits.len() != 64
        || !hex_digits
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(malformed);
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut out).map_err(|_| malformed)?;
    Ok(out)
}

/// Parses an `Authorization` header. The accepted language is that of the regex of spec §3.2
/// step 1:
///
/// ```text
/// ^HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/request, SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$
/// ```
///
/// with one addition: no name in `SignedHeaders` may be empty. An empty value is
/// [`SignError::MissingAuthorization`].
pub fn parse_authorization(value: &str) -> Result<Authorization, SignError> {
    if value.trim().is_empty() {
        return Err(SignError::MissingAuthorization);
    }
    let rest = value
        .strip_prefix(ALGORITHM)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or(SignError::MalformedAuthorization(
            "the algorithm must be HMAC-SHA256",
        ))?;
    let rest = rest
        .strip_prefix("Credential=")
        .ok_or(SignError::MalformedAuthorization(
            "Credential= must come first",
        ))?;
    // The last ", Signature=" and ", SignedHeaders=" are the real separators: neither the
    // signature (hex) nor the header list (no commas) can contain them.
    let (rest, signature) = rest
        .rsplit_once(", Signature=")
        .ok_or(SignError::MalformedAuthorization("missing ', Signature='"))?;
    let (credential, signed_headers) =
        rest.rsplit_once(", SignedHeaders=")
            .ok_or(SignError::MalformedAuthorization(
                "missing ', SignedHeaders='",
            ))?;
    let signature = parse_signature(signature)?;
    if signed_headers.contains(',') || signed_headers.split(';').any(str::is_empty) {
        return Err(SignError::MalformedAuthorization(
            "SignedHeaders must be ';'-separated names",
        ));
    }
    let (access_key, date, region, service) = parse_credential(credential)?;
    Ok(Authorization {
        access_key,
        date,
        region,
        service,
        signed_headers: signed_headers.split(';').map(str::to_owned).collect(),
        signature,
    })
}

/// The first header named `name`, compared case-insensitively.
fn header<'r>(headers: &'r [(String, String)], name: &str) -> Option<&'r str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Parses `X-Date` and checks it against the scope date. Returns the signing instant.
fn signed_instant(x_date: &str, scope_date: &str) -> Result<i64, SignError> {
    let instant = parse_x_date(x_date).ok_or(SignError::InvalidTimestamp)?;
    // parse_x_date accepted it, so it is 16 ASCII bytes.
    if &x_date[..8] != scope_date {
        return Err(SignError::MalformedCredential(
            "the scope date differs from X-Date",
        ));
    }
    Ok(instant)
}

fn check_signature(expected: &[u8; 32], auth: &Authorization) -> Result<(), SignError> {
    if bool::from(expected.ct_eq(&auth.signature)) {
        Ok(())
    } else {
        Err(SignError::SignatureMismatch)
    }
}

/// Verifies a header-signed request (spec §3.2).
///
/// The canonical request is rebuilt from the request's own `SignedHeaders`, so Python-style
/// requests (which sign `host` and `content-type`) and Node-style ones (which sign neither) both
/// verify. Header values are trimmed and `host` loses a default port. The body is always covered:
/// its hash is computed here, never taken from the request, and an `X-Content-Sha256` that is sent
/// or signed must equal it.
///
/// Checks, in order: the scope names `expected_service`; `X-Date` is present, well formed, on the
/// scope date and within `max_skew_secs` of `now_unix` either way; the body hash; the signature,
/// compared in constant time. `key` is [`signing_key`] of the caller's secret key for
/// (`auth.date`, `auth.region`, `auth.service`).
pub fn verify_request(
    req: &ReceivedRequest<'_>,
    auth: &Authorization,
    key: &[u8; 32],
    expected_service: &str,
    now_unix: i64,
    max_skew_secs: i64,
) -> Result<(), SignError> {
    if auth.service != expected_service {
        return Err(SignError::WrongService);
    }
    let x_date = header(req.headers, "x-date")
        .ok_or(SignError::MissingDate)?
        .trim();
    let instant = signed_instant(x_date, &auth.date)?;
    if now_unix.abs_diff(instant) > u64::try_from(max_skew_secs).unwrap_or(0) {
        return Err(SignError::InvalidTimestamp);
    }

    let body_hash = sha256_hex(req.body);
    let signs_body_hash = auth
        .signed_headers
        .iter()
        .any(|h| h.eq_ignore_ascii_case("x-content-sha256"));
    match header(req.headers, "x-content-sha256") {
        Some(claimed) if claimed.trim() != body_hash => return Err(SignError::BodyHashMismatch),
        None if signs_body_hash => return Err(SignError::BodyHashMismatch),
        _ => {}
    }

    let mut canonical_headers = String::new();
    for name in &auth.signed_headers {
        // A header that was signed but did not arrive (a proxy dropped it) cannot be reproduced.
        let value = header(req.headers, name)
            .ok_or(SignError::SignatureMismatch)?
            .trim();
        let value = if name.eq_ignore_ascii_case("host") {
            canonical_host(value)
        } else {
            value
        };
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(value);
        canonical_headers.push('\n');
    }

    let request = canonical_request(
        req.method,
        &canonical_path(req.path),
        &canonical_query(req.query.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        &canonical_headers,
        &auth.signed_headers.join(";"),
        &body_hash,
    );
    let scope = credential_scope(&auth.date, &auth.region, &auth.service);
    check_signature(&signature(key, x_date, &scope, &request), auth)
}

/// The one value of a signing parameter; a repeated one is refused, since which copy was signed
/// would be a guess.
fn query_param<'q>(
    query: &'q [(String, String)],
    name: &str,
) -> Result<Option<&'q str>, SignError> {
    let mut found = query.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
    match (found.next(), found.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => Ok(Some(v.as_str())),
        (Some(_), Some(_)) => Err(SignError::MalformedAuthorization(
            "a signing parameter appears twice",
        )),
    }
}

/// Parses the signature of a presigned URL from its (decoded) query: `X-Algorithm` must be
/// `HMAC-SHA256`, `X-Credential` a credential scope, `X-Signature` 64 lower-case hex digits, and
/// `X-SignedHeaders`, when present, empty (no SDK signs headers into a URL, and the vendor's
/// layout has no place for them). A query with neither `X-Credential` nor `X-Signature` is
/// [`SignError::MissingAuthorization`]. The result has no `signed_headers`.
pub fn parse_query_authorization(query: &[(String, String)]) -> Result<Authorization, SignError> {
    let credential = query_param(query, "X-Credential")?;
    let signature = query_param(query, "X-Signature")?;
    let (credential, signature) = match (credential, signature) {
        (None, None) => return Err(SignError::MissingAuthorization),
        (None, Some(_)) => return Err(SignError::MalformedAuthorization("missing X-Credential")),
        (Some(_), None) => return Err(SignError::MalformedAuthorization("missing X-Signature")),
        (Some(c), Some(s)) => (c, s),
    };
    if query_param(query, "X-Algorithm")? != Some(ALGORITHM) {
        return Err(SignError::MalformedAuthorization(
            "X-Algorithm must be HMAC-SHA256",
        ));
    }
    if !query_param(query, "X-SignedHeaders")?
        .unwrap_or("")
        .is_empty()
    {
        return Err(SignError::MalformedAuthorization(
            "X-SignedHeaders must be empty",
        ));
    }
    let signature = parse_signature(signature)?;
    let (access_key, date, region, service) = parse_credential(credential)?;
    Ok(Authorization {
        access_key,
        date,
        region,
        service,
        signed_headers: Vec::new(),
        signature,
    })
}

/// Verifies a presigned request (signature in the query), the counterpart of [`verify_request`].
///
/// The canonical request is the one [`sign_query`] builds: every query pair except `X-Signature`
/// (so whatever the URL carries is covered, `X-Security-Token` and `X-Expires` included), no
/// headers, and the hash of an empty body. Because the SDKs never sign a body into a URL, a
/// request with a non-empty body is refused with [`SignError::BodyHashMismatch`]: accepting it
/// would let anyone holding the URL send any body.
///
/// Checks, in order: the scope names `expected_service`; the body is empty; `X-Date` is present,
/// well formed and on the scope date; `now_unix` lies between `X-Date - max_skew_secs` (clock
/// skew) and `X-Date + X-Expires` (default [`DEFAULT_QUERY_EXPIRES_SECS`], at most
/// [`MAX_QUERY_EXPIRES_SECS`]); the signature, compared in constant time.
pub fn verify_query(
    req: &ReceivedRequest<'_>,
    auth: &Authorization,
    key: &[u8; 32],
    expected_service: &str,
    now_unix: i64,
    max_skew_secs: i64,
) -> Result<(), SignError> {
    if auth.service != expected_service {
        return Err(SignError::WrongService);
    }
    if !req.body.is_empty() {
        return Err(SignError::BodyHashMismatch);
    }
    let x_date = query_param(req.query, "X-Date")?.ok_or(SignError::MissingDate)?;
    let instant = signed_instant(x_date, &auth.date)?;
    let expires = match query_param(req.query, "X-Expires")? {
        None => DEFAULT_QUERY_EXPIRES_SECS,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|s| {
                (1..=MAX_QUERY_EXPIRES_SECS).contains(s) && v.bytes().all(|b| b.is_ascii_digit())
            })
            .ok_or(SignError::MalformedAuthorization(
                "X-Expires must be a number of seconds up to one week",
            ))?,
    };
    let earliest = instant.saturating_sub(max_skew_secs.max(0));
    let latest = instant.saturating_add(expires);
    if now_unix < earliest || now_unix > latest {
        return Err(SignError::InvalidTimestamp);
    }

    let request = presigned_canonical_request(
        req.method,
        req.path,
        req.query
            .iter()
            .filter(|(k, _)| k != "X-Signature")
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    let scope = credential_scope(&auth.date, &auth.region, &auth.service);
    check_signature(&signature(key, x_date, &scope, &request), auth)
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- spec §3.3 common inputs ----

    const QUERY: [(&str, &str); 2] = [("Action", "SendUnicast"), ("Version", "2023-07-20")];
    const BODY_A: &[u8] =
        br#"{"AppId":"661e0000543cf","From":"server_bot","To":"user_1","Binary":false,"Message":"hello"}"#;
    const BODY_A_SHA256: &str = "c4667edcb93bb775371007505431a9c7c919579cc71906bfd70c7025435afcdd";
    const BODY_B: &[u8] =
        br#"{"AppId":"661e0000543cf","From":"server_bot","To":"user_2","Binary":true,"Message":"aGVsbG8gd29ybGQ="}"#;
    const BODY_B_SHA256: &str = "dde5768cf494adf54acbc0b8a9d21610dfe08365b0ee3f2d8006f4ac3ca029e5";

    const AK1: &str = "AKLTEXAMPLEAK0000000000000001";
    const SK1: &str = "EXAMPLESK/abc+def==";
    const DATE1: &str = "20240101T000000Z";
    const AK2: &str = "AKLTEXAMPLEAK0000000000000002";
    const SK2: &str = "secretKeyForTests==";
    const TOKEN2: &str = "STSTOKENEXAMPLE123";
    const DATE2: &str = "20231115T083000Z";
    const HOST: &str = "rtc.volcengineapi.com";
    const SKEW: i64 = 900;

    const V1_AUTH: &str = "HMAC-SHA256 Credential=AKLTEXAMPLEAK0000000000000001/20240101/cn-north-1/rtc/request, SignedHeaders=content-type;host;x-content-sha256;x-date, Signature=a3ae6ca55866a9cd1c6324a5748c4c56da566be4b574fa1f38afe48f8dcd68fc";
    const V2_AUTH: &str = "HMAC-SHA256 Credential=AKLTEXAMPLEAK0000000000000002/20231115/cn-north-1/rtc/request, SignedHeaders=content-type;host;x-content-sha256;x-date;x-security-token, Signature=4584e4accc95a65cd50457ea9b31fbc33fd56d2c96d68da02174171f8991b175";
    const V3_AUTH: &str = "HMAC-SHA256 Credential=AKLTEXAMPLEAK0000000000000001/20240101/cn-north-1/rtc/request, SignedHeaders=content-type;host;x-content-sha256;x-date, Signature=fd236a51a52a4f6a7835cf6d6819571696f081b4baffe0ae8407a02c935f8280";
    const N1_AUTH: &str = "HMAC-SHA256 Credential=AKLTEXAMPLEAK0000000000000001/20240101/cn-north-1/rtc/request, SignedHeaders=x-content-sha256;x-date, Signature=eace064f09b97965592e249bfff0cc439011955d59ed5c06cb6a796ba0bd0891";
    const N2_AUTH: &str = "HMAC-SHA256 Credential=AKLTEXAMPLEAK0000000000000002/20231115/cn-north-1/rtc/request, SignedHeaders=x-content-sha256;x-date;x-security-token, Signature=90f2c7d56f612e749ad15c1ea2864def8eac8afc6e0f84a0bdced8c798b8eb3f";

    fn creds1() -> Credentials<'static> {
        Credentials {
            access_key: AK1,
            secret_key: SK1,
            region: "cn-north-1",
            service: "rtc",
            session_token: None,
        }
    }

    fn creds2() -> Credentials<'static> {
        Credentials {
            access_key: AK2,
            secret_key: SK2,
            region: "cn-north-1",
            service: "rtc",
            session_token: Some(TOKEN2),
        }
    }

    fn at(x_date: &str) -> i64 {
        parse_x_date(x_date).unwrap()
    }

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn authorization_of(added: &[(String, String)]) -> &str {
        &added.iter().find(|(k, _)| k == "Authorization").unwrap().1
    }

    /// One request as it arrives at the server, with the secret that should verify it.
    struct Case {
        name: &'static str,
        secret_key: &'static str,
        now: i64,
        query: Vec<(String, String)>,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        authorization: &'static str,
    }

    impl Case {
        fn auth(&self) -> Authorization {
            parse_authorization(self.authorization).unwrap()
        }

        fn key(&self) -> [u8; 32] {
            let a = self.auth();
            signing_key(self.secret_key, &a.date, &a.region, &a.service)
        }

        fn verify(&self) -> Result<(), SignError> {
            self.verify_at(self.now)
        }

        fn verify_at(&self, now: i64) -> Result<(), SignError> {
            let req = ReceivedRequest {
                method: "POST",
                path: "/",
                query: &self.query,
                headers: &self.headers,
                body: &self.body,
            };
            verify_request(&req, &self.auth(), &self.key(), "rtc", now, SKEW)
        }

        fn set_header(&mut self, name: &str, value: &str) {
            let h = self
                .headers
                .iter_mut()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .unwrap();
            h.1 = value.to_owned();
        }

        fn remove_header(&mut self, name: &str) {
            self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        }
    }

    /// The headers the Python SDK sends (V1, V2), or put on the wire to a local server (V3).
    fn python_headers(
        host: &str,
        x_date: &str,
        body_hash: &str,
        token: Option<&str>,
    ) -> Vec<(String, String)> {
        let mut h = owned(&[
            ("User-Agent", "volc-sdk-python/v1.0.229"),
            ("Accept-Encoding", "gzip, deflate"),
            ("Accept", "application/json"),
            ("Connection", "keep-alive"),
            ("Host", host),
            ("Content-Type", "application/json"),
            ("X-Date", x_date),
            ("X-Content-Sha256", body_hash),
        ]);
        if let Some(t) = token {
            h.push(("X-Security-Token".into(), t.into()));
        }
        h
    }

    /// The headers Node's axios sends: Host and Content-Type travel but are not signed.
    fn node_headers(
        x_date: &str,
        body_hash: &str,
        len: usize,
        token: Option<&str>,
    ) -> Vec<(String, String)> {
        let mut h = owned(&[
            ("accept", "application/json, text/plain, */*"),
            ("content-type", "application/json; charset=utf-8"),
            ("X-Date", x_date),
            ("X-Content-Sha256", body_hash),
            ("user-agent", "volc-sdk-nodejs/v1.36.2"),
            ("content-length", &len.to_string()),
            ("host", HOST),
            ("connection", "close"),
        ]);
        if let Some(t) = token {
            h.push(("X-Security-Token".into(), t.into()));
        }
        h
    }

    fn cases() -> Vec<Case> {
        vec![
            Case {
                name: "V1",
                secret_key: SK1,
                now: at(DATE1),
                query: owned(&QUERY),
                headers: python_headers(HOST, DATE1, BODY_A_SHA256, None),
                body: BODY_A.to_vec(),
                authorization: V1_AUTH,
            },
            Case {
                name: "V2",
                secret_key: SK2,
                now: at(DATE2),
                query: owned(&QUERY),
                headers: python_headers(HOST, DATE2, BODY_B_SHA256, Some(TOKEN2)),
                body: BODY_B.to_vec(),
                authorization: V2_AUTH,
            },
            Case {
                name: "V3",
                secret_key: SK1,
                now: at(DATE1),
                query: owned(&QUERY),
                headers: python_headers("127.0.0.1:18080", DATE1, BODY_A_SHA256, None),
                body: BODY_A.to_vec(),
                authorization: V3_AUTH,
            },
            Case {
                name: "N1",
                secret_key: SK1,
                now: at(DATE1),
                query: owned(&QUERY),
                headers: node_headers(DATE1, BODY_A_SHA256, BODY_A.len(), None),
                body: BODY_A.to_vec(),
                authorization: N1_AUTH,
            },
            Case {
                name: "N2",
                secret_key: SK2,
                now: at(DATE2),
                query: owned(&QUERY),
                headers: node_headers(DATE2, BODY_B_SHA256, BODY_B.len(), Some(TOKEN2)),
                body: BODY_B.to_vec(),
                authorization: N2_AUTH,
            },
        ]
    }

    // ---- the vectors of spec §3.3, byte for byte ----

    #[test]
    fn body_hashes_match_the_spec() {
        assert_eq!(sha256_hex(BODY_A), BODY_A_SHA256);
        assert_eq!(BODY_A.len(), 92);
        assert_eq!(sha256_hex(BODY_B), BODY_B_SHA256);
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn v1_canonical_request_and_key_chain() {
        let canonical_headers = format!(
            "content-type:application/json\nhost:{HOST}\nx-content-sha256:{BODY_A_SHA256}\nx-date:{DATE1}\n"
        );
        let request = canonical_request(
            "POST",
            &canonical_path("/"),
            &canonical_query(QUERY),
            &canonical_headers,
            "content-type;host;x-content-sha256;x-date",
            BODY_A_SHA256,
        );
        assert_eq!(
            request,
            "POST\n/\nAction=SendUnicast&Version=2023-07-20\n\
             content-type:application/json\n\
             host:rtc.volcengineapi.com\n\
             x-content-sha256:c4667edcb93bb775371007505431a9c7c919579cc71906bfd70c7025435afcdd\n\
             x-date:20240101T000000Z\n\
             \n\
             content-type;host;x-content-sha256;x-date\n\
             c4667edcb93bb775371007505431a9c7c919579cc71906bfd70c7025435afcdd"
        );
        assert_eq!(
            sha256_hex(request.as_bytes()),
            "3cb863a939fcb696046193c1c28fac8ae5699aedc4393b174403cb9df6bbf808"
        );
        assert_eq!(
            string_to_sign(DATE1, "20240101/cn-north-1/rtc/request", &request),
            "HMAC-SHA256\n20240101T000000Z\n20240101/cn-north-1/rtc/request\n\
             3cb863a939fcb696046193c1c28fac8ae5699aedc4393b174403cb9df6bbf808"
        );

        let k_date = hmac_sha256(SK1.as_bytes(), b"20240101");
        let k_region = hmac_sha256(&k_date, b"cn-north-1");
        let k_service = hmac_sha256(&k_region, b"rtc");
        let k_signing = hmac_sha256(&k_service, b"request");
        assert_eq!(
            hex::encode(k_date),
            "afd4647b428c387542a4fdb30be25a6b7859f293831269c333b12fc3a0230fa0"
        );
        assert_eq!(
            hex::encode(k_region),
            "ce05bd805fdcf65ec4528b770f243dee5b90f022259e40eb69a29042be5e24a6"
        );
        assert_eq!(
            hex::encode(k_service),
            "357bcf4a17f7327777377edd074d4017eb7b9f3573f9e749f6edb5ab14fb3803"
        );
        assert_eq!(
            hex::encode(k_signing),
            "6b94f10339638174ac352eff49ea989513b965b1c470db325a969d8fb2483cb0"
        );
        assert_eq!(signing_key(SK1, "20240101", "cn-north-1", "rtc"), k_signing);
        assert_eq!(
            hex::encode(signature(
                &k_signing,
                DATE1,
                "20240101/cn-north-1/rtc/request",
                &request
            )),
            "a3ae6ca55866a9cd1c6324a5748c4c56da566be4b574fa1f38afe48f8dcd68fc"
        );
    }

    #[test]
    fn v1_sign_request_matches_python_sdk() {
        let headers = [
            ("Accept", "application/json"),
            ("Host", HOST),
            ("User-Agent", "volc-sdk-python/v1.0.229"),
            ("Content-Type", "application/json"),
        ];
        let added = sign_request(&creds1(), "POST", "/", &QUERY, &headers, BODY_A, at(DATE1));
        assert_eq!(
            added,
            owned(&[
                ("X-Date", DATE1),
                ("X-Content-Sha256", BODY_A_SHA256),
                ("Authorization", V1_AUTH),
            ])
        );
    }

    #[test]
    fn v1_default_port_and_header_spelling_do_not_change_the_signature() {
        // Python drops :443 from host before signing; header names are matched case-insensitively.
        for host in [format!("{HOST}:443"), format!("{HOST}:80")] {
            let headers = [
                ("host", host.as_str()),
                ("content-type", "application/json"),
            ];
            let added = sign_request(&creds1(), "POST", "", &QUERY, &headers, BODY_A, at(DATE1));
            assert_eq!(authorization_of(&added), V1_AUTH, "host {host}");
        }
        // Headers the signer sets itself are not taken from the caller.
        let headers = [
            ("Host", HOST),
            ("Content-Type", "application/json"),
            ("X-Date", "19990101T000000Z"),
            ("x-content-sha256", "bogus"),
        ];
        let added = sign_request(&creds1(), "POST", "/", &QUERY, &headers, BODY_A, at(DATE1));
        assert_eq!(authorization_of(&added), V1_AUTH);
    }

    #[test]
    fn v2_session_token_matches_python_sdk() {
        let headers = [
            ("Accept", "application/json"),
            ("Host", HOST),
            ("Content-Type", "application/json"),
        ];
        let added = sign_request(&creds2(), "POST", "/", &QUERY, &headers, BODY_B, at(DATE2));
        assert_eq!(
            added,
            owned(&[
                ("X-Date", DATE2),
                ("X-Content-Sha256", BODY_B_SHA256),
                ("X-Security-Token", TOKEN2),
                ("Authorization", V2_AUTH),
            ])
        );
        let k_date = hmac_sha256(SK2.as_bytes(), b"20231115");
        assert_eq!(
            hex::encode(k_date),
            "ad051f3b56acbd37f1b813b9878acd1e08fb6f3e9c27a011a238fc0202ba0a8c"
        );
        assert_eq!(
            hex::encode(signing_key(SK2, "20231115", "cn-north-1", "rtc")),
            "5f0739dd6217796bae05257d399ca033411682de4c9df275b8890dca04d3e97c"
        );
        let canonical_headers = format!(
            "content-type:application/json\nhost:{HOST}\nx-content-sha256:{BODY_B_SHA256}\n\
             x-date:{DATE2}\nx-security-token:{TOKEN2}\n"
        );
        let request = canonical_request(
            "POST",
            "/",
            &canonical_query(QUERY),
            &canonical_headers,
            "content-type;host;x-content-sha256;x-date;x-security-token",
            BODY_B_SHA256,
        );
        assert_eq!(
            sha256_hex(request.as_bytes()),
            "a23f6e7d8427f79a2fc880fdf8a58f7406b1eae66bc57348cc7b98635cf2c1e9"
        );
    }

    #[test]
    fn v3_host_with_port_matches_python_sdk() {
        let headers = [
            ("Host", "127.0.0.1:18080"),
            ("Content-Type", "application/json"),
        ];
        let added = sign_request(&creds1(), "POST", "/", &QUERY, &headers, BODY_A, at(DATE1));
        assert_eq!(authorization_of(&added), V3_AUTH);
        let canonical_headers = format!(
            "content-type:application/json\nhost:127.0.0.1:18080\n\
             x-content-sha256:{BODY_A_SHA256}\nx-date:{DATE1}\n"
        );
        let request = canonical_request(
            "POST",
            "/",
            &canonical_query(QUERY),
            &canonical_headers,
            "content-type;host;x-content-sha256;x-date",
            BODY_A_SHA256,
        );
        assert_eq!(
            sha256_hex(request.as_bytes()),
            "34966268daec5845b2f9bab45bb5aad1ffb7422b4a7e03a6411c10d6a9530d4e"
        );
    }

    #[test]
    fn n1_canonical_request_matches_node_sdk() {
        let canonical_headers = format!("x-content-sha256:{BODY_A_SHA256}\nx-date:{DATE1}\n");
        let request = canonical_request(
            "POST",
            "/",
            &canonical_query(QUERY),
            &canonical_headers,
            "x-content-sha256;x-date",
            BODY_A_SHA256,
        );
        assert_eq!(
            request,
            format!(
                "POST\n/\nAction=SendUnicast&Version=2023-07-20\nx-content-sha256:{BODY_A_SHA256}\n\
                 x-date:20240101T000000Z\n\nx-content-sha256;x-date\n{BODY_A_SHA256}"
            )
        );
        let key = signing_key(SK1, "20240101", "cn-north-1", "rtc");
        assert_eq!(
            hex::encode(signature(
                &key,
                DATE1,
                "20240101/cn-north-1/rtc/request",
                &request
            )),
            "eace064f09b97965592e249bfff0cc439011955d59ed5c06cb6a796ba0bd0891"
        );
    }

    // ---- verify_request on every vector ----

    #[test]
    fn every_vector_verifies_with_the_right_key() {
        for case in cases() {
            assert_eq!(case.verify(), Ok(()), "{}", case.name);
        }
    }

    #[test]
    fn node_style_requests_do_not_sign_host_or_content_type() {
        for mut case in cases().into_iter().filter(|c| c.name.starts_with('N')) {
            case.set_header("host", "elsewhere.example:8443");
            case.set_header("content-type", "text/plain");
            assert_eq!(case.verify(), Ok(()), "{}", case.name);
        }
        for mut case in cases().into_iter().filter(|c| c.name.starts_with('V')) {
            case.set_header("host", "elsewhere.example:8443");
            assert_eq!(
                case.verify(),
                Err(SignError::SignatureMismatch),
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn a_wrong_key_is_a_signature_mismatch() {
        for case in cases() {
            let auth = case.auth();
            let key = signing_key("not-the-secret", &auth.date, &auth.region, &auth.service);
            let req = ReceivedRequest {
                method: "POST",
                path: "/",
                query: &case.query,
                headers: &case.headers,
                body: &case.body,
            };
            assert_eq!(
                verify_request(&req, &auth, &key, "rtc", case.now, SKEW),
                Err(SignError::SignatureMismatch),
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn a_changed_body_byte_is_detected() {
        for mut case in cases() {
            case.body[10] ^= 1;
            // The claimed hash no longer matches the body...
            assert_eq!(
                case.verify(),
                Err(SignError::BodyHashMismatch),
                "{}",
                case.name
            );
            // ...and recomputing the claim does not help: the hash is inside the signature.
            let forged = sha256_hex(&case.body);
            case.set_header("x-content-sha256", &forged);
            assert_eq!(
                case.verify(),
                Err(SignError::SignatureMismatch),
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn a_changed_signed_header_is_a_signature_mismatch() {
        for mut case in cases() {
            // One second later: same scope date, inside the window, but not what was signed.
            let later = format_x_date(case.now + 1);
            case.set_header("x-date", &later);
            assert_eq!(
                case.verify(),
                Err(SignError::SignatureMismatch),
                "{}",
                case.name
            );
        }
        for mut case in cases().into_iter().filter(|c| c.name.starts_with('V')) {
            case.set_header("content-type", "application/json; charset=utf-8");
            assert_eq!(
                case.verify(),
                Err(SignError::SignatureMismatch),
                "{}",
                case.name
            );
        }
        for mut case in cases().into_iter().filter(|c| c.name.ends_with('2')) {
            case.set_header("x-security-token", "STSTOKENEXAMPLE124");
            assert_eq!(
                case.verify(),
                Err(SignError::SignatureMismatch),
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn a_missing_signed_header_is_a_signature_mismatch() {
        for mut case in cases().into_iter().filter(|c| c.name.starts_with('V')) {
            case.remove_header("host");
            assert_eq!(
                case.verify(),
                Err(SignError::SignatureMismatch),
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn a_changed_query_is_a_signature_mismatch() {
        for mut case in cases() {
            case.query[0].1 = "SendBroadcast".into();
            assert_eq!(
                case.verify(),
                Err(SignError::SignatureMismatch),
                "{}",
                case.name
            );
        }
        for mut case in cases() {
            case.query.push(("Extra".into(), "1".into()));
            assert_eq!(
                case.verify(),
                Err(SignError::SignatureMismatch),
                "{}",
                case.name
            );
        }
        for mut case in cases() {
            // Arrival order does not matter: the canonical query is sorted.
            case.query.reverse();
            assert_eq!(case.verify(), Ok(()), "{}", case.name);
        }
    }

    #[test]
    fn outside_the_skew_is_an_invalid_timestamp() {
        for case in cases() {
            assert_eq!(case.verify_at(case.now + SKEW), Ok(()), "{}", case.name);
            assert_eq!(case.verify_at(case.now - SKEW), Ok(()), "{}", case.name);
            assert_eq!(
                case.verify_at(case.now + SKEW + 1),
                Err(SignError::InvalidTimestamp),
                "{}",
                case.name
            );
            assert_eq!(
                case.verify_at(case.now - SKEW - 1),
                Err(SignError::InvalidTimestamp),
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn a_lying_body_hash_is_a_body_hash_mismatch() {
        for mut case in cases() {
            case.set_header("x-content-sha256", &"0".repeat(64));
            assert_eq!(
                case.verify(),
                Err(SignError::BodyHashMismatch),
                "{}",
                case.name
            );
        }
        for mut case in cases() {
            // Signed but not sent.
            case.remove_header("x-content-sha256");
            assert_eq!(
                case.verify(),
                Err(SignError::BodyHashMismatch),
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn x_date_must_be_present_well_formed_and_on_the_scope_date() {
        for mut case in cases() {
            case.remove_header("x-date");
            assert_eq!(case.verify(), Err(SignError::MissingDate), "{}", case.name);
        }
        for mut case in cases() {
            case.set_header("x-date", "2024-01-01T00:00:00Z");
            assert_eq!(
                case.verify(),
                Err(SignError::InvalidTimestamp),
                "{}",
                case.name
            );
        }
        for mut case in cases() {
            // A day earlier but still inside a generous window: the scope date gives it away.
            let yesterday = format_x_date(case.now - 86_400);
            case.set_header("x-date", &yesterday);
            let req = ReceivedRequest {
                method: "POST",
                path: "/",
                query: &case.query,
                headers: &case.headers,
                body: &case.body,
            };
            assert_eq!(
                verify_request(&req, &case.auth(), &case.key(), "rtc", case.now, 2 * 86_400),
                Err(SignError::MalformedCredential(
                    "the scope date differs from X-Date"
                )),
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn the_scope_must_name_the_expected_service() {
        for case in cases() {
            let req = ReceivedRequest {
                method: "POST",
                path: "/",
                query: &case.query,
                headers: &case.headers,
                body: &case.body,
            };
            assert_eq!(
                verify_request(&req, &case.auth(), &case.key(), "iam", case.now, SKEW),
                Err(SignError::WrongService),
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn header_values_are_trimmed_and_names_are_case_insensitive() {
        for mut case in cases() {
            for (name, value) in &mut case.headers {
                *name = name.to_ascii_uppercase();
                *value = format!(" \t{value} ");
            }
            assert_eq!(case.verify(), Ok(()), "{}", case.name);
        }
    }

    #[test]
    fn a_default_port_on_the_received_host_is_dropped() {
        for mut case in cases()
            .into_iter()
            .filter(|c| c.name == "V1" || c.name == "V2")
        {
            case.set_header("host", &format!("{HOST}:443"));
            assert_eq!(case.verify(), Ok(()), "{}", case.name);
            case.set_header("host", &format!("{HOST}:8443"));
            assert_eq!(
                case.verify(),
                Err(SignError::SignatureMismatch),
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn the_body_is_covered_even_when_its_hash_is_neither_sent_nor_signed() {
        // A client that signs only x-date: the canonical request still ends with sha256(body).
        let key = signing_key(SK1, "20240101", "cn-north-1", "rtc");
        let request = canonical_request(
            "POST",
            "/",
            &canonical_query(QUERY),
            &format!("x-date:{DATE1}\n"),
            "x-date",
            BODY_A_SHA256,
        );
        let sig = hex::encode(signature(
            &key,
            DATE1,
            "20240101/cn-north-1/rtc/request",
            &request,
        ));
        let auth = parse_authorization(&format!(
            "HMAC-SHA256 Credential={AK1}/20240101/cn-north-1/rtc/request, SignedHeaders=x-date, Signature={sig}"
        ))
        .unwrap();
        let query = owned(&QUERY);
        let headers = owned(&[("X-Date", DATE1)]);
        let verify = |body: &[u8]| {
            let req = ReceivedRequest {
                method: "POST",
                path: "/",
                query: &query,
                headers: &headers,
                body,
            };
            verify_request(&req, &auth, &key, "rtc", at(DATE1), SKEW)
        };
        assert_eq!(verify(BODY_A), Ok(()));
        assert_eq!(verify(BODY_B), Err(SignError::SignatureMismatch));
    }

    #[test]
    fn sign_request_round_trips_through_verify_request() {
        let query = [
            ("Action", "SendUnicast"),
            ("Version", "2023-07-20"),
            ("tag", "b"),
            ("tag", "a"),
            ("note", "a b/c+d~é"),
        ];
        let headers = [
            ("Host", "localhost:18080"),
            ("Content-Type", "application/json"),
            ("X-Custom", "yes"),
            ("User-Agent", "herald"),
        ];
        for creds in [creds1(), creds2()] {
            let now = at("20240229T235959Z");
            let added = sign_request(&creds, "POST", "/a b/", &query, &headers, BODY_A, now);
            let mut wire = owned(&headers);
            wire.extend(added.iter().cloned());
            let auth = parse_authorization(authorization_of(&added)).unwrap();
            assert!(auth.signed_headers.contains(&"x-custom".to_owned()));
            assert!(!auth.signed_headers.contains(&"user-agent".to_owned()));
            let key = signing_key(creds.secret_key, &auth.date, &auth.region, &auth.service);
            let mut received_query = owned(&query);
            received_query.reverse();
            let verify = |headers: &[(String, String)]| {
                let req = ReceivedRequest {
                    method: "POST",
                    path: "/a b/",
                    query: &received_query,
                    headers,
                    body: BODY_A,
                };
                verify_request(&req, &auth, &key, "rtc", now, SKEW)
            };
            assert_eq!(verify(&wire), Ok(()));
            wire.retain(|(n, _)| n != "X-Custom");
            assert_eq!(verify(&wire), Err(SignError::SignatureMismatch));
        }
    }

    // ---- canonical forms ----

    #[test]
    fn canonical_query_is_sorted_and_strictly_encoded() {
        assert_eq!(canonical_query([]), "");
        assert_eq!(
            canonical_query([
                ("b", "x y"),
                ("a", "2"),
                ("a", "1"),
                ("c", "-_.~/+*=&"),
                ("é", "ü"),
            ]),
            "a=1&a=2&b=x%20y&c=-_.~%2F%2B%2A%3D%26&%C3%A9=%C3%BC"
        );
        assert_eq!(canonical_path(""), "/");
        assert_eq!(canonical_path("/a b/c~d/é"), "/a%20b/c~d/%C3%A9");
        assert_eq!(
            encode_query(&[("z", "a b"), ("a", "1/2")]),
            "z=a%20b&a=1%2F2"
        );
    }

    #[test]
    fn canonical_host_follows_the_sdk_rule() {
        assert_eq!(canonical_host("h"), "h");
        assert_eq!(canonical_host("h:80"), "h");
        assert_eq!(canonical_host("h:443"), "h");
        assert_eq!(canonical_host("h:4430"), "h:4430");
        assert_eq!(canonical_host("127.0.0.1:18080"), "127.0.0.1:18080");
        assert_eq!(canonical_host("[::1]:443"), "[::1]:443");
    }

    // ---- parse_authorization ----

    #[test]
    fn parse_authorization_reads_the_vendor_format() {
        let a = parse_authorization(V2_AUTH).unwrap();
        assert_eq!(a.access_key, AK2);
        assert_eq!(a.date, "20231115");
        assert_eq!(a.region, "cn-north-1");
        assert_eq!(a.service, "rtc");
        assert_eq!(
            a.signed_headers,
            [
                "content-type",
                "host",
                "x-content-sha256",
                "x-date",
                "x-security-token"
            ]
        );
        assert_eq!(
            hex::encode(a.signature),
            "4584e4accc95a65cd50457ea9b31fbc33fd56d2c96d68da02174171f8991b175"
        );
    }

    #[test]
    fn parse_authorization_rejects_malformed_values() {
        let sig = "a3ae6ca55866a9cd1c6324a5748c4c56da566be4b574fa1f38afe48f8dcd68fc";
        let cred = format!("{AK1}/20240101/cn-north-1/rtc/request");
        let good =
            format!("HMAC-SHA256 Credential={cred}, SignedHeaders=host;x-date, Signature={sig}");
        assert!(parse_authorization(&good).is_ok());

        let malformed_authorization = [
            // missing parts
            format!("HMAC-SHA256 Credential={cred}, SignedHeaders=host"),
            format!("HMAC-SHA256 Credential={cred}, Signature={sig}"),
            format!("HMAC-SHA256 SignedHeaders=host, Signature={sig}"),
            good.replace("host;x-date", ""),
            good.replace("host;x-date", "host;;x-date"),
            good.replace(sig, ""),
            "HMAC-SHA256".to_owned(),
            // wrong algorithm
            good.replacen("HMAC-SHA256", "HMAC-SHA1", 1),
            good.replacen("HMAC-SHA256", "AWS4-HMAC-SHA256", 1),
            good.replacen("HMAC-SHA256 ", "HMAC-SHA256  ", 1),
            format!(" {good}"),
            // bad hex
            good.replace(sig, &sig.to_uppercase()),
            good.replace(sig, &sig[..63]),
            good.replace(sig, &format!("{sig}0")),
            good.replace(sig, &format!("{}g", &sig[..63])),
            format!("{good} "),
            // wrong separators
            good.replace(", ", ","),
            good.replace(", SignedHeaders", "; SignedHeaders"),
            good.replace(", Signature", " Signature"),
            good.replace("host;x-date", "host,x-date"),
            good.replace("Credential=", "Credential:"),
        ];
        for value in malformed_authorization {
            let err = parse_authorization(&value).expect_err(&value);
            assert!(
                matches!(err, SignError::MalformedAuthorization(_)),
                "{value:?} gave {err:?}"
            );
        }

        let malformed_credential = [
            format!("{AK1}/20240101/cn-north-1/rtc"),
            format!("{AK1}/20240101/cn-north-1/rtc/request/x"),
            format!("{AK1}/2024011/cn-north-1/rtc/request"),
            format!("{AK1}/2024-1-1/cn-north-1/rtc/request"),
            format!("{AK1}/20240101/cn-north-1/rtc/requests"),
            "/20240101/cn-north-1/rtc/request".to_owned(),
            format!("{AK1}/20240101//rtc/request"),
            format!("{AK1}/20240101/cn-north-1//request"),
        ];
        for credential in malformed_credential {
            let value = good.replace(&cred, &credential);
            let err = parse_authorization(&value).expect_err(&value);
            assert!(
                matches!(err, SignError::MalformedCredential(_)),
                "{value:?} gave {err:?}"
            );
        }

        assert_eq!(
            parse_authorization(""),
            Err(SignError::MissingAuthorization)
        );
        assert_eq!(
            parse_authorization("  "),
            Err(SignError::MissingAuthorization)
        );
    }

    #[test]
    fn error_messages_leak_nothing() {
        let case = &cases()[0];
        let mut tampered = owned(&QUERY);
        tampered[0].1 = "SendBroadcast".into();
        let req = ReceivedRequest {
            method: "POST",
            path: "/",
            query: &tampered,
            headers: &case.headers,
            body: &case.body,
        };
        let err =
            verify_request(&req, &case.auth(), &case.key(), "rtc", case.now, SKEW).unwrap_err();
        let text = err.to_string();
        assert_eq!(text, "the signature does not match");
        assert!(!text.contains(SK1));
    }

    // ---- X-Date ----

    #[test]
    fn x_date_round_trips() {
        let samples = [
            (0, "19700101T000000Z"),
            (1_704_067_200, "20240101T000000Z"),
            (1_700_037_000, "20231115T083000Z"),
            (1_709_251_199, "20240229T235959Z"), // leap day
            (1_709_251_200, "20240301T000000Z"),
            (951_782_400, "20000229T000000Z"), // 2000 is a leap year (divisible by 400)
            (4_102_444_799, "20991231T235959Z"),
            (-1, "19691231T235959Z"),
            (-62_135_596_800, "00010101T000000Z"),
            (253_402_300_799, "99991231T235959Z"),
        ];
        for (unix, text) in samples {
            assert_eq!(format_x_date(unix), text);
            assert_eq!(parse_x_date(text), Some(unix), "{text}");
        }
        // Every day over several leap cycles, at a varying time of day.
        let mut t = parse_x_date("18950101T000000Z").unwrap();
        while t < parse_x_date("21050101T000000Z").unwrap() {
            assert_eq!(parse_x_date(&format_x_date(t)), Some(t));
            t += 86_400 + 3_607;
        }
    }

    #[test]
    fn x_date_rejects_garbage() {
        for bad in [
            "",
            "20240101",
            "20240101T000000",
            "20240101T000000z",
            "20240101t000000Z",
            "2024-01-01T00:00:00Z",
            "20240101T000000Z ",
            " 20240101T000000Z",
            "20241301T000000Z",
            "20240001T000000Z",
            "20240100T000000Z",
            "20240132T000000Z",
            "20230229T000000Z", // not a leap year
            "19000229T000000Z", // divisible by 100, not by 400
            "20240431T000000Z",
            "20240101T240000Z",
            "20240101T006000Z",
            "20240101T000060Z",
            "2024010aT000000Z",
            "+0240101T000000Z",
            "20240101T0000000Z",
            "２0240101T000000Z",
        ] {
            assert_eq!(parse_x_date(bad), None, "{bad:?}");
        }
        assert!(parse_x_date("20240229T000000Z").is_some());
        assert!(parse_x_date("20000229T000000Z").is_some());
        // Extreme inputs never panic.
        for unix in [i64::MIN, i64::MAX, i64::MIN / 2] {
            let _ = format_x_date(unix);
        }
    }

    // ---- presigned URLs ----

    const P1_QUERY: [(&str, &str); 4] = [
        ("Action", "GetRoomOnlineUsers"),
        ("Version", "2023-11-01"),
        ("AppId", "661e0000543cf"),
        ("RoomId", "room1"),
    ];
    const P1_SIGNATURE: &str = "63247cdada4897a68b9fede3c6728efaf72d494508e1bf232bdba0525b46f5f2";

    fn verify_presigned(
        query: &[(String, String)],
        body: &[u8],
        now: i64,
    ) -> Result<(), SignError> {
        let auth = parse_query_authorization(query)?;
        let key = signing_key(SK1, &auth.date, &auth.region, &auth.service);
        let req = ReceivedRequest {
            method: "GET",
            path: "/",
            query,
            headers: &[],
            body,
        };
        verify_query(&req, &auth, &key, "rtc", now, SKEW)
    }

    #[test]
    fn p1_presigned_url_matches_python_sdk() {
        let out = sign_query(&creds1(), "GET", &P1_QUERY, at(DATE1));
        let signed_queries = "Action;AppId;RoomId;Version;X-Algorithm;X-Credential;X-Date;\
                              X-NotSignBody;X-SignedHeaders;X-SignedQueries";
        assert_eq!(
            out,
            owned(&[
                ("Action", "GetRoomOnlineUsers"),
                ("Version", "2023-11-01"),
                ("AppId", "661e0000543cf"),
                ("RoomId", "room1"),
                ("X-Date", DATE1),
                ("X-NotSignBody", ""),
                (
                    "X-Credential",
                    "AKLTEXAMPLEAK0000000000000001/20240101/cn-north-1/rtc/request"
                ),
                ("X-Algorithm", "HMAC-SHA256"),
                ("X-SignedHeaders", ""),
                ("X-SignedQueries", signed_queries),
                ("X-Signature", P1_SIGNATURE),
            ])
        );
        assert_eq!(
            encode_query(&out),
            "Action=GetRoomOnlineUsers&Version=2023-11-01&AppId=661e0000543cf&RoomId=room1\
             &X-Date=20240101T000000Z&X-NotSignBody=&X-Credential=AKLTEXAMPLEAK0000000000000001%2F20240101%2Fcn-north-1%2Frtc%2Frequest\
             &X-Algorithm=HMAC-SHA256&X-SignedHeaders=&X-SignedQueries=Action%3BAppId%3BRoomId%3BVersion%3BX-Algorithm%3BX-Credential%3BX-Date%3BX-NotSignBody%3BX-SignedHeaders%3BX-SignedQueries\
             &X-Signature=63247cdada4897a68b9fede3c6728efaf72d494508e1bf232bdba0525b46f5f2"
        );
        let request = presigned_canonical_request(
            "GET",
            "/",
            out[..10].iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        assert!(request.starts_with("GET\n/\nAction=GetRoomOnlineUsers&AppId=661e0000543cf&"));
        assert!(request
            .ends_with("\n\n\n\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));

        assert_eq!(verify_presigned(&out, b"", at(DATE1)), Ok(()));
        let mut shuffled = out.clone();
        shuffled.reverse();
        assert_eq!(verify_presigned(&shuffled, b"", at(DATE1)), Ok(()));
    }

    #[test]
    fn presigned_urls_honour_x_expires() {
        let out = sign_query(&creds1(), "GET", &P1_QUERY, at(DATE1));
        let t = at(DATE1);
        assert_eq!(verify_presigned(&out, b"", t + 900), Ok(()));
        assert_eq!(
            verify_presigned(&out, b"", t + 901),
            Err(SignError::InvalidTimestamp)
        );
        assert_eq!(verify_presigned(&out, b"", t - SKEW), Ok(()));
        assert_eq!(
            verify_presigned(&out, b"", t - SKEW - 1),
            Err(SignError::InvalidTimestamp)
        );

        let mut query = P1_QUERY.to_vec();
        query.push(("X-Expires", "60"));
        let out = sign_query(&creds1(), "GET", &query, t);
        assert!(out
            .iter()
            .any(|(k, v)| k == "X-SignedQueries" && v.contains("X-Expires")));
        assert_eq!(verify_presigned(&out, b"", t + 60), Ok(()));
        assert_eq!(
            verify_presigned(&out, b"", t + 61),
            Err(SignError::InvalidTimestamp)
        );

        // X-Expires is signed: stretching it breaks the signature.
        let mut stretched = out.clone();
        stretched
            .iter_mut()
            .find(|(k, _)| k == "X-Expires")
            .unwrap()
            .1 = "600".into();
        assert_eq!(
            verify_presigned(&stretched, b"", t + 61),
            Err(SignError::SignatureMismatch)
        );

        for bad in ["0", "-5", "+60", "abc", "604801", ""] {
            let mut q = out.clone();
            q.iter_mut().find(|(k, _)| k == "X-Expires").unwrap().1 = bad.into();
            assert!(
                matches!(
                    verify_presigned(&q, b"", t),
                    Err(SignError::MalformedAuthorization(_))
                ),
                "X-Expires={bad:?}"
            );
        }
    }

    #[test]
    fn presigned_tampering_is_detected() {
        let out = sign_query(&creds1(), "GET", &P1_QUERY, at(DATE1));
        let t = at(DATE1);

        let mut q = out.clone();
        q[3].1 = "room2".into();
        assert_eq!(
            verify_presigned(&q, b"", t),
            Err(SignError::SignatureMismatch)
        );

        let mut q = out.clone();
        q.insert(0, ("Extra".into(), "1".into()));
        assert_eq!(
            verify_presigned(&q, b"", t),
            Err(SignError::SignatureMismatch)
        );

        let mut q = out.clone();
        q.iter_mut().find(|(k, _)| k == "X-Date").unwrap().1 = format_x_date(t + 1);
        assert_eq!(
            verify_presigned(&q, b"", t),
            Err(SignError::SignatureMismatch)
        );

        // The body is not covered by a presigned URL, so none is accepted.
        assert_eq!(
            verify_presigned(&out, b"{}", t),
            Err(SignError::BodyHashMismatch)
        );

        let auth = parse_query_authorization(&out).unwrap();
        let key = signing_key(SK1, &auth.date, &auth.region, &auth.service);
        let req = ReceivedRequest {
            method: "POST",
            path: "/",
            query: &out,
            headers: &[],
            body: b"",
        };
        assert_eq!(
            verify_query(&req, &auth, &key, "rtc", t, SKEW),
            Err(SignError::SignatureMismatch)
        );
        let req = ReceivedRequest {
            method: "GET",
            ..req
        };
        assert_eq!(
            verify_query(&req, &auth, &key, "vod", t, SKEW),
            Err(SignError::WrongService)
        );
        let wrong = signing_key("nope", &auth.date, &auth.region, &auth.service);
        assert_eq!(
            verify_query(&req, &auth, &wrong, "rtc", t, SKEW),
            Err(SignError::SignatureMismatch)
        );
    }

    #[test]
    fn presigned_session_token_is_signed_but_not_listed() {
        let t = at(DATE2);
        let out = sign_query(&creds2(), "GET", &P1_QUERY, t);
        let keys: Vec<&str> = out.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            &keys[4..],
            [
                "X-Date",
                "X-NotSignBody",
                "X-Credential",
                "X-Algorithm",
                "X-SignedHeaders",
                "X-SignedQueries",
                "X-Security-Token",
                "X-Signature"
            ]
        );
        let listed = &out.iter().find(|(k, _)| k == "X-SignedQueries").unwrap().1;
        assert!(!listed.contains("X-Security-Token"));

        let verify = |q: &[(String, String)]| {
            let auth = parse_query_authorization(q).unwrap();
            let key = signing_key(SK2, &auth.date, &auth.region, &auth.service);
            let req = ReceivedRequest {
                method: "GET",
                path: "/",
                query: q,
                headers: &[],
                body: b"",
            };
            verify_query(&req, &auth, &key, "rtc", t, SKEW)
        };
        assert_eq!(verify(&out), Ok(()));
        let mut q = out.clone();
        q.iter_mut()
            .find(|(k, _)| k == "X-Security-Token")
            .unwrap()
            .1 = "other".into();
        assert_eq!(verify(&q), Err(SignError::SignatureMismatch));
        q.retain(|(k, _)| k != "X-Security-Token");
        assert_eq!(verify(&q), Err(SignError::SignatureMismatch));
    }

    #[test]
    fn sign_query_replaces_signing_parameters_in_place() {
        let query = [
            ("X-Date", "19990101T000000Z"),
            ("Action", "A"),
            ("X-Signature", "old"),
        ];
        let out = sign_query(&creds1(), "GET", &query, at(DATE1));
        assert_eq!(out[0], ("X-Date".to_owned(), DATE1.to_owned()));
        assert_eq!(out.iter().filter(|(k, _)| k == "X-Signature").count(), 1);
        assert_eq!(out.last().unwrap().0, "X-Signature");
        assert_eq!(verify_presigned(&out, b"", at(DATE1)), Ok(()));
    }

    #[test]
    fn parse_query_authorization_rejects_malformed_queries() {
        let out = sign_query(&creds1(), "GET", &P1_QUERY, at(DATE1));
        let without = |name: &str| -> Vec<(String, String)> {
            out.iter().filter(|(k, _)| k != name).cloned().collect()
        };
        let with = |name: &str, value: &str| -> Vec<(String, String)> {
            let mut q = out.clone();
            q.iter_mut().find(|(k, _)| k == name).unwrap().1 = value.into();
            q
        };

        assert_eq!(
            parse_query_authorization(&owned(&P1_QUERY)),
            Err(SignError::MissingAuthorization)
        );
        assert!(matches!(
            parse_query_authorization(&without("X-Signature")),
            Err(SignError::MalformedAuthorization(_))
        ));
        assert!(matches!(
            parse_query_authorization(&without("X-Credential")),
            Err(SignError::MalformedAuthorization(_))
        ));
        assert!(matches!(
            parse_query_authorization(&without("X-Algorithm")),
            Err(SignError::MalformedAuthorization(_))
        ));
        assert!(matches!(
            parse_query_authorization(&with("X-Algorithm", "HMAC-SHA1")),
            Err(SignError::MalformedAuthorization(_))
        ));
        assert!(matches!(
            parse_query_authorization(&with("X-SignedHeaders", "host")),
            Err(SignError::MalformedAuthorization(_))
        ));
        assert!(matches!(
            parse_query_authorization(&with("X-Signature", &P1_SIGNATURE.to_uppercase())),
            Err(SignError::MalformedAuthorization(_))
        ));
        assert!(matches!(
            parse_query_authorization(&with("X-Credential", "AK/20240101/cn-north-1/rtc")),
            Err(SignError::MalformedCredential(_))
        ));
        let mut twice = out.clone();
        twice.push(("X-Signature".into(), P1_SIGNATURE.into()));
        assert!(matches!(
            parse_query_authorization(&twice),
            Err(SignError::MalformedAuthorization(_))
        ));
        assert_eq!(
            verify_presigned(&without("X-Date"), b"", at(DATE1)),
            Err(SignError::MissingDate)
        );
        assert_eq!(
            verify_presigned(&with("X-Date", "20240101"), b"", at(DATE1)),
            Err(SignError::InvalidTimestamp)
        );
        assert!(matches!(
            verify_presigned(&with("X-Date", "20240102T000000Z"), b"", at(DATE1)),
            Err(SignError::MalformedCredential(_))
        ));
    }
}
