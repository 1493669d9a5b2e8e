//! The wall clock the daemons judge tokens by (`iat`, `exp`, rollback floors), as seconds since the Unix epoch.
//! Production reads the system clock; a test holds a manual one and moves it, so expiry is tested by advancing
//! time instead of waiting for it. Nothing in a config can select the manual clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Unix seconds now, from the system clock: the one place this project reads the time. Daemons and plugins
/// read it through a [`Clock`], so that tests can hold a manual one; commands and tests may call it directly.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A clock: the system's, or a manual one shared by its clones.
#[derive(Debug, Clone, Default)]
pub struct Clock(Option<Arc<AtomicU64>>);

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock(None)
    }

    /// A clock that reads `start` until a clone of it is moved with [`Clock::advance`].
    pub fn manual(start: u64) -> Clock {
        Clock(Some(Arc::new(AtomicU64::new(start))))
    }

    /// Seconds since the Unix epoch.
    pub fn now(&self) -> u64 {
        match &self.0 {
            None => unix_now(),
            Some(t) => t.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock (and every clone of it) forward by `secs`; false for the system clock, which
    /// nobody moves.
    pub fn advance(&self, secs: u64) -> bool {
        match &self.0 {
            None => false,
            Some(t) => {
                t.fetch_add(secs, Ordering::SeqCst);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_clones_share_it() {
        let clock = Clock::manual(1_000);
        let seen_by_a_daemon = clock.clone();
        assert_eq!(seen_by_a_daemon.now(), 1_000);
        assert!(clock.advance(601));
        assert_eq!(seen_by_a_daemon.now(), 1_601);
        let system = Clock::system();
        assert!(!system.advance(10));
        assert!(system.now().abs_diff(unix_now()) <= 1);
    }
}
