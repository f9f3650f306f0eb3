//! Time as a value. The core never reads a clock: every operation that depends on time takes a
//! [`Timestamp`] from its caller, so tests drive time by hand and replay exactly.

/// Microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// From microseconds since the Unix epoch.
    pub const fn from_micros(us: u64) -> Self {
        Timestamp(us)
    }

    /// From whole seconds since the Unix epoch.
    pub const fn from_secs(s: u64) -> Self {
        Timestamp(s * 1_000_000)
    }

    /// Microseconds since the Unix epoch.
    pub const fn micros(self) -> u64 {
        self.0
    }

    /// Whole seconds since the Unix epoch (what tokens and signatures use).
    pub const fn secs(self) -> u64 {
        self.0 / 1_000_000
    }

    /// This time plus `us` microseconds.
    pub const fn add_micros(self, us: u64) -> Self {
        Timestamp(self.0.saturating_add(us))
    }

    /// Microseconds from `earlier` to `self`, zero if `earlier` is later.
    pub const fn micros_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}
