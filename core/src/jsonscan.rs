//! A strict JSON scanner that finds where a document's records are without
//! building anything.
//!
//! [`crate::rawjson::split`] keeps a page's records as the text they came
//! in; what it needs from the page is that the text is JSON, where each
//! record of the list starts and ends, and the envelope around the list.
//! serde_json's way of skipping a value goes token by token through its
//! generic deserializer; this scanner walks the bytes directly and skips
//! the inside of strings eight bytes at a time, several times faster on
//! API pages. It accepts exactly what serde_json accepts (RFC 8259: no
//! trailing commas, no comments, no control characters in strings, escapes
//! as the RFC lists them), so that it can stand in for it. It does not say
//! what is wrong: a caller that gets [`Invalid`] asks serde_json again for
//! the message and the line and column.

/// The text is not JSON (see the module's documentation for where the
/// reason comes from).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Invalid;

/// Where the records are: each list found at the path (the first
/// occurrence and any repeated key's), and the items of the last one.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Found {
    /// Byte ranges of every list at the path, brackets included.
    pub lists: Vec<(usize, usize)>,
    /// Start and end of each item of the last list at the path.
    pub items: Vec<(usize, usize)>,
}

/// Checks that `text` is one JSON value (with whitespace around it) and
/// finds the list at `path`: object keys from the root, the empty path
/// being the root itself.
pub(crate) fn find_list(text: &str, path: &[String]) -> Result<Found, Invalid> {
    let mut s = Scanner {
        b: text.as_bytes(),
        i: 0,
        frames: Vec::new(),
    };
    let mut found = Found::default();
    s.along(Some(path), &mut found)?;
    s.ws();
    if s.i != s.b.len() {
        return Err(Invalid);
    }
    Ok(found)
}

/// Checks that `text` is one JSON value, with whitespace around it.
#[cfg(test)]
pub(crate) fn check(text: &str) -> Result<(), Invalid> {
    find_list(text, &[]).map(|_| ())
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    /// The lists and objects the scanner is inside of (`[` or `{`).
    frames: Vec<u8>,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.i += 1;
        }
    }

    /// Expects `c` after whitespace.
    fn eat(&mut self, c: u8) -> Result<(), Invalid> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    /// A value that may lie on the path to the list (`path` is the rest of
    /// it, `None` off it). Recurses only along the path, whose length the
    /// descriptor sets; everything else is skipped without recursion.
    fn along(&mut self, path: Option<&[String]>, found: &mut Found) -> Result<(), Invalid> {
        self.ws();
        match (self.peek(), path) {
            (Some(b'['), Some([])) => self.list(found),
            (Some(b'{'), Some([first, rest @ ..])) => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.eat(b'"')?;
                    let start = self.i;
                    self.string()?;
                    let on_path = key_is(&self.b[start - 1..self.i], first);
                    self.eat(b':')?;
                    if on_path {
                        self.along(Some(rest), found)?;
                    } else {
                        self.value()?;
                    }
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(Invalid),
                    }
                }
            }
            _ => self.value(),
        }
    }

    /// The list at the path: where it is and where each item is.
    fn list(&mut self, found: &mut Found) -> Result<(), Invalid> {
        let start = self.i;
        self.i += 1;
        found.items.clear();
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
        } else {
            loop {
                self.ws();
                let item = self.i;
                self.value()?;
                found.items.push((item, self.i));
                self.ws();
                match self.peek() {
                    Some(b',') => self.i += 1,
                    Some(b']') => {
                        self.i += 1;
                        break;
                    }
                    _ => return Err(Invalid),
                }
            }
        }
        found.lists.push((start, self.i));
        Ok(())
    }

    /// Skips one value, however deeply nested, without recursion.
    fn value(&mut self) -> Result<(), Invalid> {
        let outer = self.frames.len();
        loop {
            // A value starts here.
            self.ws();
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    self.string()?;
                }
                Some(c @ (b'{' | b'[')) => {
                    self.i += 1;
                    self.ws();
                    let close = if c == b'{' { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.i += 1;
                    } else {
                        self.frames.push(c);
                        if c == b'{' {
                            self.key()?;
                        }
                        continue;
                    }
                }
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                _ => return Err(Invalid),
            }
            // A value ended: what follows it, up to the next value.
            loop {
                let Some(&frame) = self.frames.last().filter(|_| self.frames.len() > outer) else {
                    return Ok(());
                };
                self.ws();
                match (self.peek(), frame) {
                    (Some(b','), _) => {
                        self.i += 1;
                        if frame == b'{' {
                            self.key()?;
                        }
                        break;
                    }
                    (Some(b'}'), b'{') | (Some(b']'), b'[') => {
                        self.i += 1;
                        self.frames.pop();
                    }
                    _ => return Err(Invalid),
                }
            }
        }
    }

    /// An object's key and the colon after it.
    fn key(&mut self) -> Result<(), Invalid> {
        self.eat(b'"')?;
        self.string()?;
        self.eat(b':')
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Invalid> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`; what may
    /// follow it is the caller's to check.
    fn number(&mut self) -> Result<(), Invalid> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Invalid),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.some_digits()?;
        }
        Ok(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Result<(), Invalid> {
        let start = self.i;
        self.digits();
        if self.i == start {
            Err(Invalid)
        } else {
            Ok(())
        }
    }

    /// The rest of a string, from after its opening quote to after its
    /// closing one.
    fn string(&mut self) -> Result<(), Invalid> {
        let b = self.b;
        let mut i = self.i;
        loop {
            // Eight bytes at a time up to the first quote, backslash or
            // control character.
            while let Some(chunk) = b.get(i..i + 8) {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                let special = special_bytes(u64::from_le_bytes(word));
                if special != 0 {
                    i += special.trailing_zeros() as usize / 8;
                    break;
                }
                i += 8;
            }
            match b.get(i) {
                Some(b'"') => {
                    self.i = i + 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    i += match b.get(i + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => 2,
                        Some(b'u') => match b.get(i + 2..i + 6) {
                            Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) => 6,
                            _ => return Err(Invalid),
                        },
                        _ => return Err(Invalid),
                    };
                }
                Some(0..=0x1f) | None => return Err(Invalid),
                Some(_) => i += 1,
            }
        }
    }
}

/// The high bit of each byte of `word` that is a quote, a backslash or a
/// control character; exact for the lowest such byte (a flagged byte above
/// it may be a false one, from a borrow), which is all the caller reads.
fn special_bytes(word: u64) -> u64 {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES << 7;
    let zero_in = |x: u64| x.wrapping_sub(ONES) & !x;
    let control = word.wrapping_sub(ONES * 0x20) & !word;
    (control | zero_in(word ^ (ONES * b'"' as u64)) | zero_in(word ^ (ONES * b'\\' as u64))) & HIGH
}

/// Whether a key, as written in the text with its quotes, is `name`.
fn key_is(quoted: &[u8], name: &str) -> bool {
    let inner = &quoted[1..quoted.len() - 1];
    if memchr::memchr(b'\\', inner).is_none() {
        return inner == name.as_bytes();
    }
    std::str::from_utf8(quoted)
        .ok()
        .and_then(|q| serde_json::from_str::<String>(q).ok())
        .is_some_and(|k| k == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    fn serde_accepts(text: &str) -> bool {
        serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
    }

    #[test]
    fn accepts_what_serde_json_accepts_and_nothing_else() {
        let cases = [
            "0",
            "-0",
            "1.5",
            "-1.5e10",
            "1E+2",
            "1e-2",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "1e+",
            "+1",
            "--1",
            "1.e5",
            "true",
            "false",
            "null",
            "tru",
            "nul",
            "True",
            "truex",
            "\"\"",
            "\"a\"",
            "\"\\u00e9\"",
            "\"\\u00g9\"",
            "\"\\u00e\"",
            "\"\\x\"",
            "\"\\/\\b\\f\\n\\r\\t\\\"\\\\\"",
            "\"a\u{1}b\"",
            "\"a\tb\"",
            "\"a\u{7f}b\"",
            "\"Иванов\"",
            "\"unterminated",
            "\"\\",
            "[]",
            "[ ]",
            "[1,]",
            "[,1]",
            "[1 2]",
            "[1,,2]",
            "[[[]]]",
            "[[]",
            "[]]",
            "{}",
            "{ }",
            "{\"a\":1}",
            "{\"a\" : 1 , \"b\" : [ ] }",
            "{\"a\":1,}",
            "{\"a\"}",
            "{\"a\":}",
            "{a:1}",
            "{\"a\":1 \"b\":2}",
            "{,}",
            "{\"a\":1}}",
            "[{\"a\":[{\"b\":null}]}]",
            " \n\t\r1 \n",
            "1 2",
            "",
            " ",
            "[1]x",
            "{\"a\":1}/",
            "[\"\\ud800\"]",
            "[1e400]",
            "[-]",
            "[0x10]",
            "[NaN]",
            "[\"a\"\"b\"]",
            "{\"a\":1,\"a\":2}",
            "\u{feff}1",
            "[1\u{a0}]",
        ];
        for case in cases {
            assert_eq!(check(case).is_ok(), serde_accepts(case), "{case:?}");
        }
    }

    #[test]
    fn mutated_documents_are_judged_as_serde_json_judges_them() {
        // Every document a byte away from a valid one (each byte removed,
        // or replaced by each of a set of JSON's significant characters),
        // and every cut of it.
        let base = r#"{"data": {"projects": [{"id": 1, "name": "Анна \"A\"", "x": [1.5e-3, -0, true, null, {}], "e": "\u00e9\n"}, {"id": 2}], "n": 2}, "last_page": 7}"#;
        let alphabet = b"{}[]:,\"\\ 0123456789.-+eEtrufalsn/\x01\t";
        let mut tried = 0;
        let mut agree = |bytes: Vec<u8>| {
            if let Ok(text) = String::from_utf8(bytes) {
                tried += 1;
                assert_eq!(check(&text).is_ok(), serde_accepts(&text), "{text:?}");
            }
        };
        for i in 0..base.len() {
            let mut cut = base.as_bytes().to_vec();
            cut.remove(i);
            agree(cut);
            agree(base.as_bytes()[..i].to_vec());
            for &c in alphabet {
                let mut changed = base.as_bytes().to_vec();
                changed[i] = c;
                agree(changed);
                let mut grown = base.as_bytes().to_vec();
                grown.insert(i, c);
                agree(grown);
            }
        }
        assert!(tried > 10_000, "{tried}");
    }

    #[test]
    fn finds_the_list_at_the_path_and_each_of_its_items() {
        let text = r#"{"a": [0], "data": {"projects": [ {"id": 1}, [2] ,"x" ], "n": 2}, "last": 7}"#;
        let found = find_list(text, &path(&["data", "projects"])).unwrap();
        let items: Vec<&str> = found.items.iter().map(|&(a, b)| &text[a..b]).collect();
        assert_eq!(items, [r#"{"id": 1}"#, "[2]", "\"x\""]);
        assert_eq!(found.lists.len(), 1);
        let (a, b) = found.lists[0];
        assert_eq!(&text[a..b], r#"[ {"id": 1}, [2] ,"x" ]"#);
        // A key spelled with an escape is the same key.
        let text = r#"{"d\u0061ta": []}"#;
        assert_eq!(find_list(text, &path(&["data"])).unwrap().lists.len(), 1);
        // Off the path, or not a list there: nothing found.
        let text = r#"{"data": {"projects": 5}, "x": {"data": {"projects": []}}}"#;
        assert_eq!(find_list(text, &path(&["data", "projects"])).unwrap(), Found::default());
        let text = r#"[{"data": []}]"#;
        assert_eq!(find_list(text, &path(&["data"])).unwrap(), Found::default());
        // A key given twice: both lists, the items of the last.
        let text = r#"{"data": [1, 2], "data": [3]}"#;
        let found = find_list(text, &path(&["data"])).unwrap();
        assert_eq!(found.lists.len(), 2);
        assert_eq!(found.items.iter().map(|&(a, b)| &text[a..b]).collect::<Vec<_>>(), ["3"]);
    }

    #[test]
    fn the_lowest_special_byte_of_a_word_is_found_exactly() {
        for special in [b'"', b'\\', 0, 0x1f] {
            for at in 0..8 {
                for filler in [b'a', 0x20, 0x7f, 0x80, 0xff, b'"' + 1, b'\\' - 1] {
                    let mut word = [filler; 8];
                    word[at] = special;
                    let m = special_bytes(u64::from_le_bytes(word));
                    assert_eq!(
                        m.trailing_zeros() as usize / 8,
                        at,
                        "{special:#x} at {at} in {filler:#x}"
                    );
                }
            }
        }
        assert_eq!(special_bytes(u64::from_le_bytes(*b"abc\xd0\x98ZZ ")), 0);
    }
}
