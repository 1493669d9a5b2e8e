//! Fuzz target bodies for this crate's parsers (feature `fuzzing`): see `crypto::fuzzing`.

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// The HCL reader SPIRE's `plugin_data` goes through, and the plugins' configs on top of it.
pub fn hcl(data: &[u8]) {
    let Some(t) = text(data) else { return };
    let _ = crate::hcl::parse(t);
    let _ = crate::publisher::parse_config(t);
}
