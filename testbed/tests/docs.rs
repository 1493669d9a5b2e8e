//! The README and the guides in `docs/` say what works: every relative link resolves (to a file, and to a heading
//! of it when it names one), every YAML example parses, and every example that is a whole daemon config (it names
//! the daemon's required keys) is accepted by that daemon's config decoder, with its keys present.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use services::ConfigFile;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// The README and every guide.
fn documents() -> Vec<PathBuf> {
    let mut docs = vec![root().join("README.md")];
    let mut guides: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    guides.sort();
    assert!(guides.len() >= 10, "the guides moved out of docs/: {guides:?}");
    docs.extend(guides);
    docs
}

/// GitHub's anchor for a heading: lower case, punctuation but `-` and `_` dropped, spaces as `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    text.lines().filter_map(|l| l.strip_prefix('#')).map(|l| slug(l.trim_start_matches('#'))).collect()
}

/// The fenced code blocks of `text` with info string `lang`.
fn blocks(text: &str, lang: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<(String, usize)> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        match &mut current {
            None if trimmed == format!("```{lang}") => current = Some((String::new(), line.len() - trimmed.len())),
            Some((block, _)) if trimmed == "```" => {
                out.push(std::mem::take(block));
                current = None;
            }
            Some((block, indent)) => {
                block.push_str(line.get(*indent..).unwrap_or(line.trim_start()));
                block.push('\n');
            }
            None => {}
        }
    }
    out
}

#[test]
fn every_relative_link_resolves() {
    let mut checked = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let Some(end) = rest.find(')') else { break };
            let link = &rest[..end];
            rest = &rest[end..];
            if link.contains("://") || link.starts_with("mailto:") || link.contains(' ') {
                continue;
            }
            let (path, anchor) = link.split_once('#').unwrap_or((link, ""));
            let target = if path.is_empty() { doc.clone() } else { doc.parent().unwrap().join(path) };
            assert!(target.exists(), "{}: link {link:?}: {} does not exist", doc.display(), target.display());
            if !anchor.is_empty() {
                let headings = anchors(&std::fs::read_to_string(&target).unwrap());
                assert!(headings.iter().any(|h| h == anchor), "{}: link {link:?}: no such heading", doc.display());
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} links were checked");
}

/// A key file for every `NAME.pem` an example names, in `dir/keys`.
fn keys_for(example: &str, dir: &Path) {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    for word in example.split(|c: char| !(c.is_alphanumeric() || c == '.' || c == '-' || c == '_')) {
        if word.ends_with(".pem") && !keys.join(word).exists() {
            let key = tpm::mock::SoftwareKey::generate(tpm::KeyType::EccP256);
            let pem = crypto::pem::encode("PUBLIC KEY", tpm::KeySigner::public_key(&key).spki_der());
            std::fs::write(keys.join(word), pem).unwrap();
        }
    }
}

#[test]
fn every_yaml_example_parses_and_every_whole_config_is_accepted() {
    // The shipped examples name it; the operator sets it in the units' environment.
    std::env::set_var("SPIFFE_TRUST_DOMAIN", "example.org");
    let (mut parsed, mut whole) = (0, 0);
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for example in blocks(&text, "yaml") {
            let at = format!("{}:\n{example}", doc.display());
            let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&example).unwrap_or_else(|e| panic!("{at}{e}"));
            parsed += 1;
            let has = |key: &str| value.get(key).is_some();
            let dir = tempfile::tempdir().unwrap();
            keys_for(&example, dir.path());
            let path = dir.path().join("example.conf");
            let result = if has("keyset") && has("socket") {
                services::verifier::VerifierConfig::parse(&path, &example).map(drop)
            } else if has("primary") && has("allowed-addrs") {
                services::signer_http::SignerHttpConfig::parse(&path, &example).map(drop)
            } else if has("dir") && has("socket") {
                services::signer_unix::SignerUnixConfig::parse(&path, &example).map(drop)
            } else if has("ca-cert") && has("crl") {
                services::devid_ca::config::DevIdCaConfig::parse(&path, &example).map(drop)
            } else {
                continue;
            };
            result.unwrap_or_else(|e| panic!("{at}{e}"));
            whole += 1;
        }
    }
    assert!(parsed >= 8 && whole >= 5, "{parsed} YAML examples, {whole} whole configs: the guides lost them");
}
