//! A strict PEM block reader (RFC 7468 framing): labels, base64 bodies, nothing trusted outside the blocks.

use base64::Engine;

/// One PEM block: its label and decoded contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub label: String,
    pub der: Vec<u8>,
}

/// Why PEM text could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PemError {
    /// BEGIN without matching END, or END without BEGIN, or labels differ.
    Framing,
    /// The body is not base64.
    Base64,
}

/// Reads every PEM block in `text`; text outside blocks is skipped (as Go's `pem.Decode` loop does).
pub fn blocks(text: &str) -> Result<Vec<Block>, PemError> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let line = line.trim();
        let Some(label) = line.strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----")) else {
            if line.starts_with("-----END ") {
                return Err(PemError::Framing);
            }
            continue;
        };
        let mut body = String::new();
        let mut closed = false;
        for inner in lines.by_ref() {
            let inner = inner.trim();
            if let Some(end) = inner.strip_prefix("-----END ").and_then(|l| l.strip_suffix("-----")) {
                if end != label {
                    return Err(PemError::Framing);
                }
                closed = true;
                break;
            }
            if inner.starts_with("-----") || inner.contains(':') {
                // Nested armour, or RFC 1421 headers (encrypted PEM): not something we read.
                return Err(PemError::Framing);
            }
            body.push_str(inner);
        }
        if !closed {
            return Err(PemError::Framing);
        }
        let der = base64::engine::general_purpose::STANDARD.decode(body.as_bytes()).map_err(|_| PemError::Base64)?;
        out.push(Block { label: label.to_owned(), der });
    }
    Ok(out)
}

/// Encodes `der` as one PEM block with 64-character lines and a trailing newline.
pub fn encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_framing_errors() {
        let text = format!("junk before\n{}{}", encode("CERTIFICATE", b"abc"), encode("PUBLIC KEY", &[1, 2, 3]));
        let got = blocks(&text).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], Block { label: "CERTIFICATE".into(), der: b"abc".to_vec() });
        assert_eq!(got[1].label, "PUBLIC KEY");
        assert_eq!(blocks("-----BEGIN X-----\nAAAA\n"), Err(PemError::Framing));
        assert_eq!(blocks("-----BEGIN X-----\nAAAA\n-----END Y-----\n"), Err(PemError::Framing));
        assert_eq!(blocks("-----END X-----\n"), Err(PemError::Framing));
        assert_eq!(blocks("-----BEGIN X-----\n!!!!\n-----END X-----\n"), Err(PemError::Base64));
        assert_eq!(blocks("no pem here").unwrap(), vec![]);
    }
}
