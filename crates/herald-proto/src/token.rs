//! The vendor's `001` AccessToken, the credential a client presents to `login` and `joinRoom`
//! (spec §6).
//!
//! ```text
//! token   = "001" || AppId (24 chars) || base64std(content)
//! content = u16le(len msg) || msg || u16le(len sig) || sig
//! msg     = u32le nonce || u32le issued_at || u32le expire_at
//!        || u16le len || room_id || u16le len || user_id
//!        || u16le N || N × (u16le privilege || u32le expire_at)      (keys ascending)
//! sig     = HMAC-SHA256(key = AppKey, msg)
//! ```
//!
//! Tokens made here are byte-identical to the official generators', so an app's existing token
//! server keeps working against Herald. Parsing ([`AccessToken::parse`]) checks structure only and
//! keeps the signed bytes; [`ParsedToken::verify`] then checks the HMAC. The split exists because
//! the AppKey is looked up by the AppId that parsing finds. Note that the AppId is outside the
//! signed bytes: a verifier must check it against the app whose key it used.
//!
//! Tokens come straight from clients, so parsing bounds-checks every read and never panics.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The version prefix every token starts with.
pub const VERSION: &str = "001";

/// The AppId length the format assumes: parsers slice the AppId by this fixed length, so only
/// 24-character AppIds can carry tokens.
pub const APP_ID_LENGTH: usize = 24;

/// The length of the HMAC-SHA256 signature inside a token.
const SIGNATURE_LENGTH: usize = 32;

/// A privilege a token can grant, keyed as on the wire.
#[repr(u16)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Privilege {
    /// Publish audio, video and data; granting it grants the three below with the same expiry.
    PublishStream = 0,
    /// Publish audio only. The vendor marks it internal: grant [`Privilege::PublishStream`].
    PublishAudioStream = 1,
    /// Publish video only. The vendor marks it internal: grant [`Privilege::PublishStream`].
    PublishVideoStream = 2,
    /// Publish data only. The vendor marks it internal: grant [`Privilege::PublishStream`].
    PublishDataStream = 3,
    /// Subscribe to others' streams.
    SubscribeStream = 4,
}

impl Privilege {
    /// The privilege's key on the wire.
    pub fn key(self) -> u16 {
        self as u16
    }
}

/// The fields of a token. Times are absolute unix seconds; 0 means "never expires".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// The app the token is for; exactly [`APP_ID_LENGTH`] characters in a usable token.
    pub app_id: String,
    /// The room it admits to: empty for a login (RTM) token, `*` for any room.
    pub room_id: String,
    /// The user it is bound to.
    pub user_id: String,
    /// A random number that makes two otherwise equal tokens differ.
    pub nonce: u32,
    /// When the token was made.
    pub issued_at: u32,
    /// After this instant the whole token is invalid; 0 never expires.
    pub expire_at: u32,
    /// Privilege key → its expiry (0 never expires). Ordered, because the wire lists keys
    /// ascending.
    pub privileges: BTreeMap<u16, u32>,
}

impl AccessToken {
    /// A token with no expiry and no privileges yet; the caller picks `nonce` and `issued_at`
    /// (normally random and now), since this module owns neither randomness nor a clock.
    pub fn new(
        app_id: impl Into<String>,
        room_id: impl Into<String>,
        user_id: impl Into<String>,
        nonce: u32,
        issued_at: u32,
    ) -> Self {
        AccessToken {
            app_id: app_id.into(),
            room_id: room_id.into(),
            user_id: user_id.into(),
            nonce,
            issued_at,
            expire_at: 0,
            privileges: BTreeMap::new(),
        }
    }

    /// Sets the absolute unix second after which the whole token is invalid (0: never). It is a
    /// timestamp, not a duration, as in the official generators.
    pub fn expire_time(&mut self, expire_at: u32) {
        self.expire_at = expire_at;
    }

    /// Grants `privilege` until the absolute unix second `expire_at` (0: never). Granting
    /// [`Privilege::PublishStream`] also grants audio, video and data publishing with the same
    /// expiry, as every official generator does.
    pub fn add_privilege(&mut self, privilege: Privilege, expire_at: u32) {
        self.privileges.insert(privilege.key(), expire_at);
        if privilege == Privilege::PublishStream {
            for p in [
                Privilege::PublishAudioStream,
                Privilege::PublishVideoStream,
                Privilege::PublishDataStream,
            ] {
                self.privileges.insert(p.key(), expire_at);
            }
        }
    }

    /// Signs the token with the app's AppKey and encodes it: `"001" + app_id + base64(content)`.
    /// The AppId is appended as it is; one that is not [`APP_ID_LENGTH`] characters long makes a
    /// token that no parser can read.
    ///
    /// # Panics
    ///
    /// If the room id, the user id or the signed message exceeds 65,535 bytes, which the format's
    /// 16-bit lengths cannot express. Valid ids (at most 128 characters) never come close.
    pub fn serialize(&self, app_key: &str) -> String {
        let msg = self.message();
        let sig = hmac_sha256(app_key.as_bytes(), &msg);
        let mut content = Vec::with_capacity(msg.len() + SIGNATURE_LENGTH + 4);
        put_bytes(&mut content, &msg);
        put_bytes(&mut content, &sig);
        format!("{VERSION}{}{}", self.app_id, STANDARD.encode(content))
    }

    /// The signed bytes, `msg` of the format.
    fn message(&self) -> Vec<u8> {
        let mut msg = Vec::with_capacity(
            20 + self.room_id.len() + self.user_id.len() + 6 * self.privileges.len(),
        );
        msg.extend_from_slice(&self.nonce.to_le_bytes());
        msg.extend_from_slice(&self.issued_at.to_le_bytes());
        msg.extend_from_slice(&self.expire_at.to_le_bytes());
        put_bytes(&mut msg, self.room_id.as_bytes());
        put_bytes(&mut msg, self.user_id.as_bytes());
        let count = u16::try_from(self.privileges.len()).expect("at most 65,536 keys, each u16");
        msg.extend_from_slice(&count.to_le_bytes());
        for (key, expire_at) in &self.privileges {
            msg.extend_from_slice(&key.to_le_bytes());
            msg.extend_from_slice(&expire_at.to_le_bytes());
        }
        msg
    }

    /// Reads a token's structure without checking its signature; call [`ParsedToken::verify`]
    /// with the AppKey of [`AccessToken::app_id`] next. Every malformation is an error, never a
    /// panic: the input comes from clients.
    pub fn parse(token: &str) -> Result<ParsedToken, TokenError> {
        let rest = token.strip_prefix(VERSION).ok_or(TokenError::BadVersion)?;
        let app_id = rest
            .get(..APP_ID_LENGTH)
            .filter(|id| id.is_ascii())
            .ok_or(TokenError::BadAppId)?;
        let content = STANDARD
            .decode(&rest[APP_ID_LENGTH..])
            .map_err(|_| TokenError::BadBase64)?;

        let mut reader = Reader(&content);
        let msg = reader.bytes()?;
        let signature: [u8; SIGNATURE_LENGTH] = reader
            .bytes()?
            .try_into()
            .map_err(|_| TokenError::BadSignatureLength)?;
        reader.finish()?;

        let mut fields = Reader(msg);
        let nonce = fields.u32()?;
        let issued_at = fields.u32()?;
        let expire_at = fields.u32()?;
        let room_id = fields.string()?;
        let user_id = fields.string()?;
        let count = fields.u16()?;
        let mut privileges = BTreeMap::new();
        for _ in 0..count {
            let key = fields.u16()?;
            let expire_at = fields.u32()?;
            privileges.insert(key, expire_at);
        }
        fields.finish()?;

        Ok(ParsedToken {
            token: AccessToken {
                app_id: app_id.to_owned(),
                room_id,
                user_id,
                nonce,
                issued_at,
                expire_at,
                privileges,
            },
            msg: msg.to_vec(),
            signature,
        })
    }

    /// True when the whole token has expired: `expire_at` is set (non-zero) and `now_unix` is
    /// past it.
    pub fn is_expired(&self, now_unix: i64) -> bool {
        self.expire_at != 0 && now_unix > i64::from(self.expire_at)
    }

    /// True when the token does not grant `key`, or grants it with an expiry that `now_unix` is
    /// past (0 never expires). A missing privilege counts as expired so that a check of this one
    /// function denies both.
    pub fn privilege_expired(&self, key: u16, now_unix: i64) -> bool {
        match self.privileges.get(&key) {
            None => true,
            Some(&0) => false,
            Some(&expire_at) => now_unix > i64::from(expire_at),
        }
    }
}

/// A token whose structure is sound, with the exact bytes that were signed so that
/// [`ParsedToken::verify`] checks what the generator signed rather than a re-encoding of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedToken {
    /// The decoded fields.
    pub token: AccessToken,
    msg: Vec<u8>,
    signature: [u8; SIGNATURE_LENGTH],
}

impl ParsedToken {
    /// True when the token was signed with `app_key`. The comparison is constant-time, so timing
    /// does not reveal how much of a forged signature is right. The AppId is not signed: the
    /// caller must also check that [`AccessToken::app_id`] names the app `app_key` belongs to.
    pub fn verify(&self, app_key: &str) -> bool {
        let expected = hmac_sha256(app_key.as_bytes(), &self.msg);
        expected.ct_eq(&self.signature).into()
    }

    /// See [`AccessToken::is_expired`].
    pub fn is_expired(&self, now_unix: i64) -> bool {
        self.token.is_expired(now_unix)
    }

    /// See [`AccessToken::privilege_expired`].
    pub fn privilege_expired(&self, key: u16, now_unix: i64) -> bool {
        self.token.privilege_expired(key, now_unix)
    }
}

/// Why a string is not a well-formed token. The signature is checked separately, by
/// [`ParsedToken::verify`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// It does not start with `001`.
    #[error("the token does not start with version 001")]
    BadVersion,
    /// It is too short to hold a 24-character AppId, or the AppId is not ASCII.
    #[error("the token has no 24-character AppId")]
    BadAppId,
    /// The part after the AppId is not padded standard base64.
    #[error("the token content is not standard base64")]
    BadBase64,
    /// A length or a field runs past the end of its data.
    #[error("the token is truncated")]
    Truncated,
    /// Bytes follow the last field.
    #[error("the token has trailing bytes")]
    TrailingBytes,
    /// The room id or the user id is not UTF-8.
    #[error("the token's room or user id is not UTF-8")]
    BadUtf8,
    /// The signature is not 32 bytes long.
    #[error("the token's signature is not 32 bytes")]
    BadSignatureLength,
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// Appends a u16le length and the bytes.
fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).expect("a token field is at most 65,535 bytes");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A cursor over untrusted bytes: every read checks that the bytes are there.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], TokenError> {
        let (head, tail) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(TokenError::Truncated)?;
        self.0 = tail;
        Ok(*head)
    }

    fn u16(&mut self) -> Result<u16, TokenError> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, TokenError> {
        self.array().map(u32::from_le_bytes)
    }

    /// A u16le length and that many bytes.
    fn bytes(&mut self) -> Result<&'a [u8], TokenError> {
        let len = usize::from(self.u16()?);
        if self.0.len() < len {
            return Err(TokenError::Truncated);
        }
        let (head, tail) = self.0.split_at(len);
        self.0 = tail;
        Ok(head)
    }

    fn string(&mut self) -> Result<String, TokenError> {
        let bytes = self.bytes()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| TokenError::BadUtf8)
    }

    fn finish(&self) -> Result<(), TokenError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(TokenError::TrailingBytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP_ID: &str = "65a1b2c3d4e5f60718293a4b";
    const APP_KEY: &str = "0123456789abcdef0123456789abcdef";

    const T1: &str = "00165a1b2c3d4e5f60718293a4bOwBOYbwAAPFTZRD/U2UFAHJvb20xBgB1c2VyXzEFAAAAEP9TZQEAEP9TZQIAEP9TZQMAEP9TZQQAEP9TZSAALhzfyyw7dm+q0tmuG/U1Hj3tipp5O9xBRQQ57JcYc/Q=";
    const T2: &str = "00165a1b2c3d4e5f60718293a4bGACxfzkFAPFTZYBCVWUAAAYAdXNlcl8xAAAgAMn7gqYD/kyQcDh31RE/6eT7F56WtLLrjqeppvNd+qSp";
    const T3: &str = "00165a1b2c3d4e5f60718293a4bIwABAAAAAPFTZQAAAAAFAHJvb20xBgB1c2VyXzIBAAQAAAAAACAApHXGG7RugJHbTzT1WGBSonPZoTgYizLGpNCdh+W/3nQ=";

    fn t1() -> AccessToken {
        let mut t = AccessToken::new(APP_ID, "room1", "user_1", 12_345_678, 1_700_000_000);
        t.expire_time(1_700_003_600);
        t.add_privilege(Privilege::PublishStream, 1_700_003_600);
        t.add_privilege(Privilege::SubscribeStream, 1_700_003_600);
        t
    }

    fn t2() -> AccessToken {
        let mut t = AccessToken::new(APP_ID, "", "user_1", 87_654_321, 1_700_000_000);
        t.expire_time(1_700_086_400);
        t
    }

    fn t3() -> AccessToken {
        let mut t = AccessToken::new(APP_ID, "room1", "user_2", 1, 1_700_000_000);
        t.add_privilege(Privilege::SubscribeStream, 0);
        t
    }

    fn vectors() -> [(&'static str, AccessToken, &'static str); 3] {
        [("T1", t1(), T1), ("T2", t2(), T2), ("T3", t3(), T3)]
    }

    /// The decoded content of a token string.
    fn content(token: &str) -> Vec<u8> {
        STANDARD.decode(&token[3 + APP_ID_LENGTH..]).unwrap()
    }

    fn with_content(content: &[u8]) -> String {
        format!("{VERSION}{APP_ID}{}", STANDARD.encode(content))
    }

    #[test]
    fn vectors_serialize_byte_for_byte() {
        for (name, token, expected) in vectors() {
            assert_eq!(token.serialize(APP_KEY), expected, "{name}");
        }
    }

    #[test]
    fn t1_t2_messages_and_signatures_match_the_spec() {
        let t1_msg = "4e61bc00 00f15365 10ff5365 0500 726f6f6d31 0600 757365725f31 0500 \
                      0000 10ff5365 0100 10ff5365 0200 10ff5365 0300 10ff5365 0400 10ff5365";
        let t2_msg = "b17f3905 00f15365 80425565 0000 0600 757365725f31 0000";
        for (token, msg, sig) in [
            (
                T1,
                t1_msg,
                "2e1cdfcb2c3b766faad2d9ae1bf5351e3ded8a9a793bdc41450439ec971873f4",
            ),
            (
                T2,
                t2_msg,
                "c9fb82a603fe4c90703877d5113fe9e4fb179e96b4b2eb8ea7a9a6f35dfaa4a9",
            ),
        ] {
            let msg: String = msg.split_whitespace().collect();
            let parsed = AccessToken::parse(token).unwrap();
            assert_eq!(hex::encode(&parsed.msg), msg);
            assert_eq!(hex::encode(parsed.token.message()), msg);
            assert_eq!(hex::encode(parsed.signature), sig);
        }
    }

    #[test]
    fn vectors_parse_back_to_their_fields() {
        for (name, token, text) in vectors() {
            let parsed = AccessToken::parse(text).unwrap();
            assert_eq!(parsed.token, token, "{name}");
        }
        let p = AccessToken::parse(T1).unwrap().token;
        assert_eq!(p.app_id, APP_ID);
        assert_eq!(p.room_id, "room1");
        assert_eq!(p.user_id, "user_1");
        assert_eq!(p.nonce, 12_345_678);
        assert_eq!(p.issued_at, 1_700_000_000);
        assert_eq!(p.expire_at, 1_700_003_600);
        assert_eq!(
            p.privileges.into_iter().collect::<Vec<_>>(),
            [0, 1, 2, 3, 4].map(|k| (k, 1_700_003_600))
        );
        let p = AccessToken::parse(T3).unwrap().token;
        assert_eq!(p.privileges, BTreeMap::from([(4, 0)]));
    }

    #[test]
    fn verify_needs_the_right_key() {
        for (name, _, text) in vectors() {
            let parsed = AccessToken::parse(text).unwrap();
            assert!(parsed.verify(APP_KEY), "{name}");
            assert!(!parsed.verify("0123456789abcdef0123456789abcdeF"), "{name}");
            assert!(!parsed.verify(""), "{name}");
        }
    }

    #[test]
    fn any_flipped_content_byte_is_refused() {
        for (name, _, text) in vectors() {
            let good = content(text);
            for i in 0..good.len() {
                for bit in [0x01, 0x80] {
                    let mut bad = good.clone();
                    bad[i] ^= bit;
                    if let Ok(parsed) = AccessToken::parse(&with_content(&bad)) {
                        assert!(!parsed.verify(APP_KEY), "{name}: byte {i} bit {bit:#x}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_app_id_is_not_signed_so_callers_must_compare_it() {
        let other = T1.replacen(APP_ID, "65a1b2c3d4e5f60718293a4c", 1);
        let parsed = AccessToken::parse(&other).unwrap();
        assert!(parsed.verify(APP_KEY));
        assert_ne!(parsed.token.app_id, APP_ID);
    }

    #[test]
    fn expiry_semantics() {
        let p1 = AccessToken::parse(T1).unwrap();
        assert!(!p1.is_expired(1_700_003_600));
        assert!(p1.is_expired(1_700_003_601));
        assert!(!p1.privilege_expired(Privilege::SubscribeStream.key(), 1_700_003_600));
        assert!(p1.privilege_expired(Privilege::SubscribeStream.key(), 1_700_003_601));
        assert!(
            p1.privilege_expired(5, 0),
            "a privilege not granted counts as expired"
        );

        // T2: a login token, no privileges at all.
        let p2 = AccessToken::parse(T2).unwrap();
        assert!(p2.privilege_expired(Privilege::PublishStream.key(), 0));

        // T3: expire_at 0 and a privilege expiring 0 never expire.
        let p3 = AccessToken::parse(T3).unwrap();
        for now in [0, 1_700_000_000, i64::from(u32::MAX) + 1, i64::MAX] {
            assert!(!p3.is_expired(now));
            assert!(!p3.privilege_expired(Privilege::SubscribeStream.key(), now));
            assert!(p3.privilege_expired(Privilege::PublishStream.key(), now));
        }
    }

    #[test]
    fn publish_stream_grants_the_three_publish_privileges() {
        let mut t = AccessToken::new(APP_ID, "r", "u", 1, 2);
        t.add_privilege(Privilege::PublishStream, 99);
        assert_eq!(
            t.privileges,
            BTreeMap::from([(0, 99), (1, 99), (2, 99), (3, 99)])
        );
        let mut t = AccessToken::new(APP_ID, "r", "u", 1, 2);
        t.add_privilege(Privilege::PublishAudioStream, 7);
        assert_eq!(t.privileges, BTreeMap::from([(1, 7)]));
    }

    #[test]
    fn parse_rejects_bad_version_and_app_id() {
        assert_eq!(AccessToken::parse(""), Err(TokenError::BadVersion));
        assert_eq!(AccessToken::parse("00"), Err(TokenError::BadVersion));
        assert_eq!(
            AccessToken::parse(&T1.replacen("001", "002", 1)),
            Err(TokenError::BadVersion)
        );
        assert_eq!(AccessToken::parse("001"), Err(TokenError::BadAppId));
        assert_eq!(
            AccessToken::parse(&T1[..3 + APP_ID_LENGTH - 1]),
            Err(TokenError::BadAppId)
        );
        // A 23-character AppId (the demo server's) shifts the base64 by one character.
        let short = AccessToken::new(&APP_ID[..23], "room1", "user_1", 1, 2).serialize(APP_KEY);
        assert!(AccessToken::parse(&short).is_err());
        assert_eq!(
            AccessToken::parse("001é5a1b2c3d4e5f60718293a4bAAAA"),
            Err(TokenError::BadAppId)
        );
        assert_eq!(
            AccessToken::parse("0016é1b2c3d4e5f60718293a4bAAAA"),
            Err(TokenError::BadAppId)
        );
    }

    #[test]
    fn parse_rejects_bad_base64() {
        for tail in ["!!!!", "AAA", "AA=A", "AAAA=", "-_-_"] {
            let token = format!("{VERSION}{APP_ID}{tail}");
            assert_eq!(
                AccessToken::parse(&token),
                Err(TokenError::BadBase64),
                "{tail}"
            );
        }
        // T2 has no padding; T1 without its '=' is not canonical.
        assert_eq!(
            AccessToken::parse(T1.trim_end_matches('=')),
            Err(TokenError::BadBase64)
        );
    }

    #[test]
    fn parse_rejects_truncated_and_trailing_content() {
        for (name, _, text) in vectors() {
            let good = content(text);
            for len in 0..good.len() {
                assert!(
                    AccessToken::parse(&with_content(&good[..len])).is_err(),
                    "{name}: {len} bytes"
                );
            }
            let mut long = good.clone();
            long.push(0);
            assert_eq!(
                AccessToken::parse(&with_content(&long)),
                Err(TokenError::TrailingBytes),
                "{name}"
            );
        }
        assert_eq!(
            AccessToken::parse(&with_content(&[])),
            Err(TokenError::Truncated)
        );
        assert_eq!(
            AccessToken::parse(&with_content(&[5, 0, 1, 2])),
            Err(TokenError::Truncated)
        );
    }

    /// Builds a content blob from a raw msg and a signature of the given length.
    fn raw_content(msg: &[u8], sig_len: usize) -> Vec<u8> {
        let mut c = Vec::new();
        put_bytes(&mut c, msg);
        put_bytes(&mut c, &vec![0xAB; sig_len]);
        c
    }

    #[test]
    fn parse_rejects_malformed_messages() {
        let good = t1().message();
        assert!(AccessToken::parse(&with_content(&raw_content(&good, 32))).is_ok());
        for len in [0, 31, 33, 64] {
            assert_eq!(
                AccessToken::parse(&with_content(&raw_content(&good, len))),
                Err(TokenError::BadSignatureLength),
                "{len}"
            );
        }
        for len in 0..good.len() {
            assert_eq!(
                AccessToken::parse(&with_content(&raw_content(&good[..len], 32))),
                Err(TokenError::Truncated),
                "msg cut at {len}"
            );
        }
        let mut long = good.clone();
        long.push(0);
        assert_eq!(
            AccessToken::parse(&with_content(&raw_content(&long, 32))),
            Err(TokenError::TrailingBytes)
        );
        // Room id bytes 13..18 are "room1"; make one invalid UTF-8.
        let mut bad_utf8 = good.clone();
        bad_utf8[14] = 0xFF;
        assert_eq!(
            AccessToken::parse(&with_content(&raw_content(&bad_utf8, 32))),
            Err(TokenError::BadUtf8)
        );
        // A privilege count far larger than the bytes that follow.
        let mut many = t2().message();
        let n = many.len() - 2;
        many[n..].copy_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(
            AccessToken::parse(&with_content(&raw_content(&many, 32))),
            Err(TokenError::Truncated)
        );
    }

    #[test]
    fn parse_never_panics_on_garbage() {
        // Every prefix of every vector, and pseudo-random strings over the token alphabet.
        for (_, _, text) in vectors() {
            for end in 0..=text.len() {
                let _ = AccessToken::parse(&text[..end]);
            }
        }
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=é\0";
        let chars: Vec<char> = alphabet.chars().collect();
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            let len = (next() % 120) as usize;
            let body: String = (0..len)
                .map(|_| chars[(next() % chars.len() as u64) as usize])
                .collect();
            let _ = AccessToken::parse(&format!("{VERSION}{APP_ID}{body}"));
            let _ = AccessToken::parse(&body);
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = AccessToken::parse(&with_content(&bytes));
        }
    }

    #[test]
    fn serialize_round_trips_arbitrary_fields() {
        let mut t = AccessToken::new(APP_ID, "*", "ユーザー", u32::MAX, 0);
        t.expire_time(u32::MAX);
        t.privileges.insert(5, 42);
        t.privileges.insert(u16::MAX, 0);
        let parsed = AccessToken::parse(&t.serialize("k")).unwrap();
        assert_eq!(parsed.token, t);
        assert!(parsed.verify("k"));
    }
}
