//! A reader for the HCL v1 that SPIRE hands a plugin as `hcl_configuration` (SPIRE re-prints `plugin_data`
//! with the HCL v1 printer): `key = value` pairs with bare or quoted keys, strings, numbers, booleans, lists,
//! `#`, `//` and `/* */` comments, and nested blocks (returned as such, so callers can refuse them by name).
//! Duplicate keys are an error, as they would silently override each other.

use std::collections::BTreeMap;

/// A value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string.
    Str(String),
    /// A number, kept as written.
    Num(String),
    /// A boolean.
    Bool(bool),
    /// A list.
    List(Vec<Value>),
    /// A nested block or object.
    Block(BTreeMap<String, Value>),
}

impl Value {
    /// A short name of the value's kind, for errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Str(_) => "a string",
            Value::Num(_) => "a number",
            Value::Bool(_) => "a boolean",
            Value::List(_) => "a list",
            Value::Block(_) => "a block",
        }
    }
}

/// Where and why the text did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("HCL line {line}: {reason}")]
pub struct HclError {
    /// 1-based line.
    pub line: usize,
    /// Why.
    pub reason: String,
}

struct P<'a> {
    /// The text (valid UTF-8 by construction), and its bytes for byte-wise scanning.
    t: &'a str,
    s: &'a [u8],
    i: usize,
}

impl P<'_> {
    fn line(&self) -> usize {
        self.s[..self.i.min(self.s.len())].iter().filter(|b| **b == b'\n').count() + 1
    }

    fn err<T>(&self, reason: impl Into<String>) -> Result<T, HclError> {
        Err(HclError { line: self.line(), reason: reason.into() })
    }

    fn skip(&mut self) -> Result<(), HclError> {
        loop {
            match self.s.get(self.i) {
                Some(b' ' | b'\t' | b'\r' | b'\n' | b',') => self.i += 1,
                Some(b'#') => self.skip_line(),
                Some(b'/') if self.s.get(self.i + 1) == Some(&b'/') => self.skip_line(),
                Some(b'/') if self.s.get(self.i + 1) == Some(&b'*') => {
                    let rest = &self.s[self.i + 2..];
                    match rest.windows(2).position(|w| w == b"*/") {
                        Some(p) => self.i += 2 + p + 2,
                        None => return self.err("unterminated /* comment"),
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn skip_line(&mut self) {
        while let Some(b) = self.s.get(self.i) {
            self.i += 1;
            if *b == b'\n' {
                break;
            }
        }
    }

    fn string(&mut self) -> Result<String, HclError> {
        self.i += 1; // opening quote
        let mut out = String::new();
        let start = self.i;
        loop {
            match self.s.get(self.i) {
                None | Some(b'\n') => {
                    self.i = start;
                    return self.err("unterminated string");
                }
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    let c = match self.s.get(self.i + 1) {
                        Some(b'n') => '\n',
                        Some(b't') => '\t',
                        Some(b'r') => '\r',
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        _ => return self.err("unknown escape in string"),
                    };
                    out.push(c);
                    self.i += 2;
                }
                Some(_) => {
                    // One character, decoded from where we are: `i` only ever advances by whole characters,
                    // so it is a char boundary. (Re-validating the rest of the input here made a 1 MiB string
                    // take 15 s.)
                    match self.t.get(self.i..).and_then(|rest| rest.chars().next()) {
                        Some(c) => {
                            out.push(c);
                            self.i += c.len_utf8();
                        }
                        None => return self.err("not UTF-8"),
                    }
                }
            }
        }
    }

    fn ident(&mut self) -> String {
        let start = self.i;
        while let Some(b) = self.s.get(self.i) {
            if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.') {
                self.i += 1;
            } else {
                break;
            }
        }
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }

    fn value(&mut self, depth: usize) -> Result<Value, HclError> {
        if depth > 16 {
            return self.err("nested too deeply");
        }
        self.skip()?;
        match self.s.get(self.i) {
            Some(b'"') => Ok(Value::Str(self.string()?)),
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    self.skip()?;
                    if self.s.get(self.i) == Some(&b']') {
                        self.i += 1;
                        return Ok(Value::List(items));
                    }
                    if self.i >= self.s.len() {
                        return self.err("unterminated list");
                    }
                    items.push(self.value(depth + 1)?);
                }
            }
            Some(b'{') => {
                self.i += 1;
                Ok(Value::Block(self.body(Some(b'}'), depth + 1)?))
            }
            Some(b) if b.is_ascii_digit() || *b == b'-' => {
                let word = self.ident();
                if word.parse::<f64>().is_err() {
                    return self.err(format!("{word:?} is not a number"));
                }
                Ok(Value::Num(word))
            }
            Some(_) => match self.ident().as_str() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                "" => self.err("expected a value"),
                other => self.err(format!("unexpected {other:?} (strings need quotes)")),
            },
            None => self.err("expected a value"),
        }
    }

    fn body(&mut self, close: Option<u8>, depth: usize) -> Result<BTreeMap<String, Value>, HclError> {
        let mut map = BTreeMap::new();
        loop {
            self.skip()?;
            match (self.s.get(self.i), close) {
                (None, None) => return Ok(map),
                (None, Some(_)) => return self.err("unterminated block"),
                (Some(b), Some(c)) if *b == c => {
                    self.i += 1;
                    return Ok(map);
                }
                _ => {}
            }
            let key = if self.s.get(self.i) == Some(&b'"') { self.string()? } else { self.ident() };
            if key.is_empty() {
                return self.err("expected a key");
            }
            self.skip()?;
            let value = match self.s.get(self.i) {
                Some(b'=') | Some(b':') => {
                    self.i += 1;
                    self.value(depth)?
                }
                Some(b'{') => self.value(depth)?,
                _ => return self.err(format!("expected = after {key:?}")),
            };
            if map.insert(key.clone(), value).is_some() {
                return self.err(format!("key {key:?} given twice"));
            }
        }
    }
}

/// Parses HCL v1 text into its top-level keys.
pub fn parse(text: &str) -> Result<BTreeMap<String, Value>, HclError> {
    let trimmed = text.trim();
    // SPIRE passes `plugin_data = "DATA"` through as a quoted literal; that is not a configuration we read.
    if trimmed.starts_with('"') && !trimmed.contains('=') {
        return Err(HclError { line: 1, reason: "plugin_data must be a block of key = value pairs".into() });
    }
    let mut p = P { t: text, s: text.as_bytes(), i: 0 };
    p.body(None, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_spire_prints() {
        let text = "# comment\nurls = [\"http://1.2.3.4:8181/sign\", \"https://b/sign\"]\n\"socket\"    = \"/run/s.sock\"\n// c\nfrequency = \"5m\" /* inline */\nn = 3\nflag = true\nnested {\n  a = \"b\"\n}\n";
        let m = parse(text).unwrap();
        assert_eq!(m["socket"], Value::Str("/run/s.sock".into()));
        assert_eq!(
            m["urls"],
            Value::List(vec![Value::Str("http://1.2.3.4:8181/sign".into()), Value::Str("https://b/sign".into())])
        );
        assert_eq!(m["n"], Value::Num("3".into()));
        assert_eq!(m["flag"], Value::Bool(true));
        assert!(matches!(m["nested"], Value::Block(_)));
        assert!(parse("").unwrap().is_empty());
        assert_eq!(parse("s = \"a\\\"b\"").unwrap()["s"], Value::Str("a\"b".into()));
    }

    /// A long string is read in one pass: the old reader re-validated the rest of the input for every character,
    /// so this 1 MiB value took about 15 s (release) and minutes in a debug build.
    #[test]
    fn long_strings_are_linear() {
        let big = "é".repeat(1 << 19);
        let m = parse(&format!("a = \"{big}\"\nb = \"x\"")).unwrap();
        assert_eq!(m["a"], Value::Str(big));
        assert_eq!(m["b"], Value::Str("x".into()));
    }

    #[test]
    fn refuses_broken_text_with_a_line() {
        for (text, line) in [
            ("a = \"x", 1),
            ("a = [\"x\"", 1),
            ("\n\nb = unquoted", 3),
            ("a = 1\na = 2", 2),
            ("x \"y\"", 1),
            ("a = {", 1),
            ("/* open", 1),
            ("\"DATA\"", 1),
            ("a = 12ab", 1),
        ] {
            let err = parse(text).unwrap_err();
            assert_eq!(err.line, line, "{text:?}: {err}");
        }
    }
}
