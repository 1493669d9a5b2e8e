//! The enrollment sessions waiting for their answer: at most [`MAX_SESSIONS`] in all and [`PER_EK`] for one EK,
//! each for [`SESSION_TTL`]. A session is opened only for an approved EK, but opening one costs a client nothing
//! but a request, and an EK's public key is no secret: without the per-EK bound one node, or anyone who knows one
//! listed EK, could fill the table and keep every other node from enrolling or renewing. Filling it now takes
//! `MAX_SESSIONS / PER_EK` approved EKs. (Not per address: a fleet behind one NAT address enrolls together.) A
//! session is answered once: taking it removes it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::refusal::Refusal;

/// How long a session waits for its answer.
pub const SESSION_TTL: Duration = Duration::from_secs(60);
/// Sessions waiting at once.
pub const MAX_SESSIONS: usize = 1024;
/// Sessions waiting for one EK: a node has one at a time; the rest is room for retries.
pub const PER_EK: usize = 8;

struct Entry<T> {
    ek: String,
    started: Instant,
    value: T,
}

/// The table.
pub(crate) struct Sessions<T> {
    open: HashMap<String, Entry<T>>,
}

impl<T> Default for Sessions<T> {
    fn default() -> Self {
        Sessions { open: HashMap::new() }
    }
}

impl<T> Sessions<T> {
    /// Opens session `id` for `ek` at `now`, or refuses it: too many for this EK (429), or in all (503). Sessions
    /// past their time are dropped first.
    pub fn open(&mut self, id: String, ek: &str, now: Instant, value: T) -> Result<(), Refusal> {
        self.open.retain(|_, e| now.saturating_duration_since(e.started) < SESSION_TTL);
        if self.open.values().filter(|e| e.ek == ek).count() >= PER_EK {
            return Err(Refusal::TooManyForEk { limit: PER_EK });
        }
        if self.open.len() >= MAX_SESSIONS {
            return Err(Refusal::Busy);
        }
        self.open.insert(id, Entry { ek: ek.to_owned(), started: now, value });
        Ok(())
    }

    /// Takes session `id`, if it is open and within its time at `now`.
    pub fn take(&mut self, id: &str, now: Instant) -> Result<T, Refusal> {
        match self.open.remove(id) {
            Some(e) if now.saturating_duration_since(e.started) < SESSION_TTL => Ok(e.value),
            _ => Err(Refusal::UnknownSession),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// One EK cannot fill the table, and others still get in; a session is taken once and in time; sessions past
    /// their time make room.
    #[test]
    fn one_ek_cannot_fill_the_table() {
        let t0 = Instant::now();
        let mut s = Sessions::default();
        for i in 0..PER_EK {
            s.open(format!("a{i}"), "ek-a", t0, i).unwrap();
        }
        let refused = s.open("a-more".into(), "ek-a", t0, 0).unwrap_err();
        assert!(matches!(refused, Refusal::TooManyForEk { .. }), "{refused}");
        s.open("b".into(), "ek-b", t0, 7).unwrap();
        assert_eq!(s.take("b", t0).unwrap(), 7);
        assert!(matches!(s.take("b", t0), Err(Refusal::UnknownSession)), "a session is taken once");
        assert!(matches!(s.take("a0", t0 + SESSION_TTL), Err(Refusal::UnknownSession)), "too late");
        // Past their time, the EK's sessions make room for it.
        s.open("a-later".into(), "ek-a", t0 + SESSION_TTL, 9).unwrap();
    }

    #[test]
    fn the_whole_table_is_bounded() {
        let t0 = Instant::now();
        let mut s = Sessions::default();
        for i in 0..MAX_SESSIONS {
            s.open(format!("s{i}"), &format!("ek{}", i / PER_EK), t0, ()).unwrap();
        }
        assert!(matches!(s.open("x".into(), "ek-x", t0, ()), Err(Refusal::Busy)));
        s.open("x".into(), "ek-x", t0 + SESSION_TTL, ()).unwrap();
    }
}
