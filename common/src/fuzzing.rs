//! Fuzz target bodies for this crate's parsers (feature `fuzzing`): see `crypto::fuzzing`.

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// Go durations (every config's `duration`, `refresh`, the plugin's `frequency`).
pub fn go_duration(data: &[u8]) {
    let Some(t) = text(data) else { return };
    if let Ok(d) = t.parse::<crate::duration::GoDuration>() {
        assert!(d.0.as_nanos() <= i64::MAX as u128, "{t:?} parsed past Go's limit");
        // Display keeps whole seconds (it is for logs); those must survive a round trip.
        let shown = d.to_string();
        let back = shown.parse::<crate::duration::GoDuration>().map(|b| b.0.as_secs());
        assert_eq!(back.ok(), Some(d.0.as_secs()), "{shown:?} round trip");
    }
}

/// `${VAR}` expansion of config files.
pub fn env_expand(data: &[u8]) {
    let Some(t) = text(data) else { return };
    let _ = crate::config::expand_env(t);
}
