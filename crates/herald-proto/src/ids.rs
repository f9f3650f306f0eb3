//! Typed identifiers.
//!
//! Every id that crosses the wire (`AppId`, `UserId`, `RoomId`) is a newtype around a shared
//! `Arc<str>`: cloning one into a room's member table or a delivery frame is a reference-count bump,
//! not an allocation. Constructors validate once, so a value of these types is always legal.

use std::fmt;
use std::sync::Arc;

/// The longest id the vendor accepts (spec §1.1, the ID naming rule).
pub const MAX_ID_LEN: usize = 128;

/// True when `s` matches `[a-zA-Z0-9_@\-\.]{1,128}`, the vendor's rule for user, room and sender ids.
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'@' | b'-' | b'.'))
}

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must match [a-zA-Z0-9_@\\-\\.]{{1,128}}")]
pub struct InvalidId;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates `s` against the id rule.
            pub fn new(s: &str) -> Result<Self, InvalidId> {
                if is_valid_id(s) {
                    Ok(Self(Arc::from(s)))
                } else {
                    Err(InvalidId)
                }
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                Self::new(s)
            }
        }
    };
}

id_type!(
    /// A user id: what a client passes to `login` / `joinRoom`, and what `To` names.
    UserId
);
id_type!(
    /// A room id.
    RoomId
);
id_type!(
    /// An application id. The OpenAPI accepts any id-shaped AppId; clients need exactly 24
    /// characters, because the `001` token format slices the AppId by fixed length.
    AppId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_rule_matches_the_vendor_regex() {
        assert!(is_valid_id("a"));
        assert!(is_valid_id("User_1@example.com-x"));
        assert!(is_valid_id(&"x".repeat(128)));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id(&"x".repeat(129)));
        for bad in ["a b", "a/b", "é", "a\0", "a+b", "a:b", "a*"] {
            assert!(!is_valid_id(bad), "{bad:?} must be rejected");
        }
        assert_eq!(UserId::new("u1").unwrap().as_str(), "u1");
        assert_eq!(RoomId::new("r 1"), Err(InvalidId));
    }
}
