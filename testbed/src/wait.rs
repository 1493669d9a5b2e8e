//! One way to wait for an event: poll a probe until it answers, or fail naming what was awaited.
//!
//! Tests wait for the event that proves a thing, never for a fixed time: the probe is asked at once, then after
//! 5 ms, doubling up to 100 ms between asks, until `limit`.

use std::time::{Duration, Instant};

/// Polls `probe` until it answers `Ok(Some(value))`, and returns that value. `Ok(None)` means "not yet"; an
/// error ends the wait at once (a probe that should keep trying on an error turns it into `None`). After
/// `limit` without an answer, fails with "waited LIMIT for WHAT".
pub fn wait_until<T>(
    what: impl std::fmt::Display,
    limit: Duration,
    probe: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    wait_paced(what, limit, Duration::from_millis(100), probe)
}

/// [`wait_until`] whose pauses grow to `longest` instead of 100 ms: for probes that are themselves costly (a
/// process started per ask, such as SPIRE's CLI), so that waiting does not take the CPU the awaited event needs.
pub fn wait_paced<T>(
    what: impl std::fmt::Display,
    limit: Duration,
    longest: Duration,
    mut probe: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(5).min(longest);
    loop {
        if let Some(value) = probe()? {
            return Ok(value);
        }
        let now = Instant::now();
        if now >= deadline {
            anyhow::bail!("waited {limit:?} for {what}");
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(longest);
    }
}

/// [`wait_until`] for a condition without a value.
pub fn wait_for(
    what: impl std::fmt::Display,
    limit: Duration,
    mut condition: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    wait_until(what, limit, || Ok(condition()?.then_some(())))
}

/// Waits until the wall clock's whole second has moved on: a token signed after this has a later `iat` than
/// one signed before it (a token's times are whole seconds, and a verifier takes only newer tokens).
pub fn next_second() -> anyhow::Result<()> {
    let then = common::clock::unix_now();
    wait_for("the next second", Duration::from_secs(2), || Ok(common::clock::unix_now() > then))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_the_first_value_and_names_what_it_waited_for() {
        let mut asked = 0;
        let got = wait_until("the third ask", Duration::from_secs(5), || {
            asked += 1;
            Ok((asked == 3).then_some(asked))
        });
        assert_eq!(got.unwrap(), 3);
        let late = wait_for("a thing that never happens", Duration::from_millis(30), || Ok(false)).unwrap_err();
        assert_eq!(late.to_string(), "waited 30ms for a thing that never happens");
        let failed = wait_for("a probe that fails", Duration::from_secs(5), || anyhow::bail!("probe broke"));
        assert_eq!(failed.unwrap_err().to_string(), "probe broke");
    }
}
