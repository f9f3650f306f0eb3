//! The `001` AccessToken (herald-proto `token.rs`).
//!
//! Input: one selector byte, then either a token string (selector even) or the fields of a token
//! to build (selector odd).
//!
//! Checked:
//! - `AccessToken::parse` never panics, whatever the string; `verify`, `is_expired` and
//!   `privilege_expired` never panic on what it returns;
//! - what parses re-encodes and parses back to the same fields (`parse(serialize(x)) == x`);
//! - any token built from arbitrary fields (24-character ASCII AppId, any room and user id, any
//!   numbers and privileges) parses back to the same fields and verifies with its key only;
//! - any one-character change after the AppId (the AppId is not signed, by the format) makes
//!   the token unparseable or unverifiable.
#![no_main]

use herald_fuzz::{change_one_char, Cursor};
use herald_proto::token::{AccessToken, APP_ID_LENGTH, VERSION};
use libfuzzer_sys::fuzz_target;

const KEY: &str = "0123456789abcdef0123456789abcdef";

fn check_round_trip(t: &AccessToken, key: &str, pick: usize) {
    let text = t.serialize(key);
    let parsed = match AccessToken::parse(&text) {
        Ok(p) => p,
        Err(e) => panic!("serialize made a token parse refuses ({e}): {t:?}\n{text}"),
    };
    assert_eq!(&parsed.token, t, "parse(serialize(x)) != x\n{text}");
    assert!(
        parsed.verify(key),
        "a token does not verify with its own key"
    );
    assert!(
        !parsed.verify(&format!("{key}!")),
        "a token verifies with another key"
    );

    // One character changed after "001" + AppId.
    let prefix = VERSION.len() + APP_ID_LENGTH;
    let mut tail = text[prefix..].to_owned();
    if change_one_char(&mut tail, pick) {
        let changed = format!("{}{tail}", &text[..prefix]);
        if let Ok(p) = AccessToken::parse(&changed) {
            assert!(
                !p.verify(key),
                "a changed token still verifies:\n{text}\n{changed}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    let sel = c.u8();
    let now = c.u64() as i64;
    if sel & 1 == 0 {
        let text = String::from_utf8_lossy(c.rest());
        if let Ok(parsed) = AccessToken::parse(&text) {
            let _ = parsed.verify(KEY);
            let _ = parsed.is_expired(now);
            let _ = parsed.privilege_expired(sel.into(), now);
            assert_eq!(parsed.token.app_id.len(), APP_ID_LENGTH);
            check_round_trip(&parsed.token, KEY, usize::from(sel));
        }
    } else {
        let app_id: String = c
            .take(APP_ID_LENGTH)
            .iter()
            .map(|b| char::from(b & 0x7f))
            .chain(std::iter::repeat('a'))
            .take(APP_ID_LENGTH)
            .collect();
        let room = c.string();
        let user = c.string();
        let mut t = AccessToken::new(app_id, room, user, c.u32(), c.u32());
        t.expire_time(c.u32());
        for _ in 0..c.u8() % 16 {
            t.privileges.insert(c.u16(), c.u32());
        }
        let key = String::from_utf8_lossy(c.chunk()).into_owned();
        let pick = usize::from(c.u16());
        check_round_trip(&t, &key, pick);
    }
});
