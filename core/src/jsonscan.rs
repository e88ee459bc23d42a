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
    /// The fields of those items, when asked for.
    pub fields: Option<ItemFields>,
}

/// The top-level fields of each item of a list, found while the list is
/// scanned: what [`crate::lua::lazy::scan`] finds in each item's text, so
/// that a Lua step need not read its records a second time to find them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ItemFields {
    /// Each field's name start and end, value start and end, from the start
    /// of its item.
    pub fields: Vec<crate::lua::lazy::Field>,
    /// One for each item.
    pub at: Vec<Item>,
    /// The last item kept as text: where it starts in the text, and its
    /// index in `at`.
    last: Option<(usize, usize)>,
}

/// Where an item's fields are in [`ItemFields::fields`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Item {
    /// Its first field.
    pub from: u32,
    /// How many it has; `u32::MAX` for an item that is not an object a
    /// script can be given as text.
    pub n: u32,
    /// The bits of their names (see [`crate::lua::lazy::Names`]).
    pub names: u128,
    /// Whether its field names are those of the item kept as text before
    /// it, in the same order.
    pub same: bool,
}

impl Item {
    const REFUSED: Item = Item {
        from: 0,
        n: u32::MAX,
        names: 0,
        same: false,
    };
}

/// Checks that `text` is one JSON value (with whitespace around it) and
/// finds the list at `path`: object keys from the root, the empty path
/// being the root itself. With `fields`, also finds the fields of each of
/// the list's items.
pub(crate) fn find_list(text: &str, path: &[String], fields: bool) -> Result<Found, Invalid> {
    let mut s = Scanner {
        b: text.as_bytes(),
        i: 0,
        frames: Vec::new(),
    };
    let mut found = Found {
        fields: fields.then(ItemFields::default),
        ..Found::default()
    };
    s.along(Some(path), &mut found)?;
    s.ws();
    if s.i != s.b.len() {
        return Err(Invalid);
    }
    Ok(found)
}

/// Checks that `line[start..]` is one JSON value, with whitespace around
/// it: a line of a JSON Lines file, `line` being the text read so far with
/// this line last. With `fields`, an object's top-level fields are noted
/// there as one more item (see [`ItemFields`]), the lines before it in
/// `line` being its items before. `frames` is room the scanner keeps from
/// line to line.
pub(crate) fn check_line(
    line: &[u8],
    start: usize,
    frames: &mut Vec<u8>,
    fields: Option<&mut ItemFields>,
) -> Result<(), Invalid> {
    frames.clear();
    let mut s = Scanner {
        b: line,
        i: start,
        frames: std::mem::take(frames),
    };
    let checked = s.line(fields);
    *frames = s.frames;
    checked
}

/// Checks that `text` is one JSON value, with whitespace around it.
#[cfg(test)]
pub(crate) fn check(text: &str) -> Result<(), Invalid> {
    find_list(text, &[], false).map(|_| ())
}

/// Notes the names of `fields`, an item's fields so far in `text` (the
/// item's text), in `names`: what was skipped while they were known to be
/// the item before's. They differ from each other, as that item's did.
fn note_names(names: &mut crate::lua::lazy::Names, text: &[u8], fields: &[crate::lua::lazy::Field]) {
    for (j, f) in fields.iter().enumerate() {
        names.add(text, &fields[..j], f[0] as usize, f[1] as usize);
    }
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

    /// One value and whitespace to the end, the fields of an object noted
    /// in `fields` (see [`check_line`]).
    fn line(&mut self, fields: Option<&mut ItemFields>) -> Result<(), Invalid> {
        self.ws();
        match fields {
            Some(fields) if self.peek() == Some(b'{') => self.record(fields)?,
            _ => self.value()?,
        }
        self.ws();
        if self.i != self.b.len() {
            return Err(Invalid);
        }
        Ok(())
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
        if let Some(f) = &mut found.fields {
            f.fields.clear();
            f.at.clear();
            f.last = None;
        }
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
        } else {
            loop {
                self.ws();
                let item = self.i;
                match &mut found.fields {
                    Some(f) if self.peek() == Some(b'{') => self.record(f)?,
                    Some(f) => {
                        self.value()?;
                        f.at.push(Item::REFUSED);
                    }
                    None => self.value()?,
                }
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

    /// An object that is an item of the list: skipped as [`Self::value`]
    /// would, with its top-level fields noted in `out` as
    /// [`crate::lua::lazy::scan`] would find them in the item's text.
    fn record(&mut self, out: &mut ItemFields) -> Result<(), Invalid> {
        let item = self.i;
        let first = out.fields.len();
        let mut names = crate::lua::lazy::Names::default();
        // The item kept as text before this one: where it starts, its
        // fields and their names' bits. While this item's names are that
        // one's, in the same order (`same`), they are known to differ from
        // each other without a look.
        let before = out.last.map(|(start, k)| (start, out.at[k]));
        let mut same = before.is_some();
        // Whether the item can still be kept as text.
        let mut kept = true;
        self.i += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            kept = false;
        } else {
            loop {
                self.eat(b'"')?;
                let name_start = self.i - item;
                let escaped = self.string()?;
                let name_end = self.i - 1 - item;
                self.eat(b':')?;
                self.ws();
                let value_start = self.i - item;
                self.field_value()?;
                let value_end = self.i - item;
                if kept {
                    let text = &self.b[item..];
                    let k = out.fields.len() - first;
                    if let (true, Some((start, was))) = (same, before) {
                        same = k < was.n as usize && {
                            let f = out.fields[was.from as usize + k];
                            self.b.get(start + f[0] as usize..start + f[1] as usize)
                                == Some(&text[name_start..name_end])
                        };
                        if !same {
                            // The names so far were the item before's: noted now.
                            note_names(&mut names, text, &out.fields[first..]);
                        }
                    }
                    kept = !escaped
                        && u32::try_from(value_end).is_ok()
                        && (same || names.add(text, &out.fields[first..], name_start, name_end));
                    if kept {
                        // Offsets fit: the value's end does.
                        out.fields
                            .push([name_start as u32, name_end as u32, value_start as u32, value_end as u32]);
                    }
                }
                self.ws();
                match self.peek() {
                    Some(b',') => self.i += 1,
                    Some(b'}') => {
                        self.i += 1;
                        break;
                    }
                    _ => return Err(Invalid),
                }
            }
        }
        let n = out.fields.len() - first;
        match (u32::try_from(first), before) {
            (Ok(from), _) if kept && u32::try_from(self.i - item).is_ok() => {
                let names = match before {
                    Some((_, was)) if same && was.n as usize == n => was.names,
                    _ => {
                        if same {
                            // The first names of the item before, and fewer:
                            // noted only now.
                            note_names(&mut names, &self.b[item..], &out.fields[first..]);
                        }
                        same = false;
                        names.seen
                    }
                };
                out.last = Some((item, out.at.len()));
                out.at.push(Item {
                    from,
                    n: n as u32,
                    names,
                    same,
                });
            }
            _ => {
                out.fields.truncate(first);
                out.at.push(Item::REFUSED);
            }
        }
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

    /// A value inside a record: a string or a number directly, anything
    /// else through [`Self::value`].
    fn field_value(&mut self) -> Result<(), Invalid> {
        match self.peek() {
            Some(b'"') => {
                self.i += 1;
                self.string().map(|_| ())
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => self.value(),
        }
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
    /// closing one. True when it has an escape.
    fn string(&mut self) -> Result<bool, Invalid> {
        let b = self.b;
        let mut i = self.i;
        let mut escaped = false;
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
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
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
        let found = find_list(text, &path(&["data", "projects"]), false).unwrap();
        let items: Vec<&str> = found.items.iter().map(|&(a, b)| &text[a..b]).collect();
        assert_eq!(items, [r#"{"id": 1}"#, "[2]", "\"x\""]);
        assert_eq!(found.lists.len(), 1);
        let (a, b) = found.lists[0];
        assert_eq!(&text[a..b], r#"[ {"id": 1}, [2] ,"x" ]"#);
        // A key spelled with an escape is the same key.
        let text = r#"{"d\u0061ta": []}"#;
        assert_eq!(find_list(text, &path(&["data"]), false).unwrap().lists.len(), 1);
        // Off the path, or not a list there: nothing found.
        let text = r#"{"data": {"projects": 5}, "x": {"data": {"projects": []}}}"#;
        assert_eq!(
            find_list(text, &path(&["data", "projects"]), false).unwrap(),
            Found::default()
        );
        let text = r#"[{"data": []}]"#;
        assert_eq!(find_list(text, &path(&["data"]), false).unwrap(), Found::default());
        // A key given twice: both lists, the items of the last.
        let text = r#"{"data": [1, 2], "data": [3]}"#;
        let found = find_list(text, &path(&["data"]), false).unwrap();
        assert_eq!(found.lists.len(), 2);
        assert_eq!(found.items.iter().map(|&(a, b)| &text[a..b]).collect::<Vec<_>>(), ["3"]);
    }

    /// Checks the fields `find_list` finds in each item against what
    /// `lazy::scan` finds in the item's text alone, and `same` against a
    /// comparison of the names with those of the item kept before.
    fn fields_agree(text: &str, path: &[String]) -> usize {
        let Ok(found) = find_list(text, path, true) else {
            return 0;
        };
        let f = found.fields.expect("fields were asked for");
        assert_eq!(f.at.len(), found.items.len(), "{text:?}");
        let mut last: Option<(&str, Vec<crate::lua::lazy::Field>)> = None;
        let mut kept = 0;
        for (k, &(a, b)) in found.items.iter().enumerate() {
            let item_text = &text[a..b];
            let mut want = Vec::new();
            let item = f.at[k];
            match crate::lua::lazy::scan(item_text, &mut want) {
                None => assert_eq!(item, Item::REFUSED, "{item_text:?} in {text:?}"),
                Some(names) => {
                    kept += 1;
                    let (from, n) = (item.from as usize, item.n as usize);
                    assert_eq!(&f.fields[from..from + n], &want[..], "{item_text:?} in {text:?}");
                    assert_eq!(item.names, names, "{item_text:?}");
                    let name = |t: &str, f: &crate::lua::lazy::Field| t[f[0] as usize..f[1] as usize].to_owned();
                    let same = last.as_ref().is_some_and(|(lt, lf)| {
                        lf.len() == want.len() && lf.iter().zip(&want).all(|(l, w)| name(lt, l) == name(item_text, w))
                    });
                    assert_eq!(
                        item.same,
                        same,
                        "{item_text:?} after {:?} in {text:?}",
                        last.as_ref().map(|l| l.0)
                    );
                    last = Some((item_text, want));
                }
            }
        }
        kept
    }

    #[test]
    fn the_fields_of_each_item_are_what_a_script_is_given() {
        let wide: String = (0..65).map(|i| format!("\"f{i}\": {i}")).collect::<Vec<_>>().join(", ");
        let widest: String = (0..64).map(|i| format!("\"f{i}\": {i}")).collect::<Vec<_>>().join(", ");
        let text = format!(
            r#"{{"data": [
                {{"id": 1, "name": "Анна", "x": {{"a": [1, {{"b": "}}"}}]}}}},
                {{"id": 2, "name": "Олег", "x": null}},
                {{ "id" : 3 ,"name":"\"q\"", "x": [] }},
                {{"name": "b", "id": 4, "x": 1}},
                {{"id": 5, "name": "c"}},
                {{"id": 6, "name": "c", "x": 1, "y": 2}},
                {{"id": 7, "name": "c", "x": 1, "y": 2}},
                {{"id": 8, "id": 9}},
                {{"id": 10, "name": "c", "x": 1, "y": 2}},
                {{"i\u0064": 11, "name": "c", "x": 1, "y": 2}},
                {{"id": 12, "name": "c", "x": 1, "y": 2}},
                {{}},
                {{"id": 13, "name": "c", "x": 1, "y": 2}},
                7, "s", [1, 2], null,
                {{"id": 14, "name": "c", "x": 1, "y": 2}},
                {{"id": 15, "name": "c", "x": 1, "id": 2}},
                {{"id": 16, "name": "c", "x": 1, "y": 2}},
                {{{wide}}},
                {{{widest}}},
                {{{widest}}},
                {{"a": 1, "b": 2, "ab": 3, "ba": 4, "aa": 5, "bb": 6, "abc": 7, "cba": 8, "acb": 9}},
                {{"a": 1, "b": 2, "ab": 3, "ba": 4, "aa": 5, "bb": 6, "abc": 7, "cba": 8, "ab": 9}}
            ], "last_page": 1}}"#
        );
        assert_eq!(fields_agree(&text, &path(&["data"])), 15);
        // A record with the first fields of the one before, and fewer.
        let shorter =
            r#"{"d": [{"id": 1, "name": "a", "x": 1}, {"id": 2, "name": "b"}, {"id": 3, "name": "c", "x": 3}]}"#;
        assert_eq!(fields_agree(shorter, &path(&["d"])), 3);
        // Every page a byte away from a small one: the two scans agree
        // wherever the page is JSON.
        let base = r#"{"d": [{"id": 1, "n": "a\"b", "x": [{}]}, {"id": 2, "n": "c", "x": 1}, {"n": 1, "id": 2}, {"id": 1, "id": 2}, 5]}"#;
        let alphabet = b"{}[]:,\" \\0123456789nidx";
        let mut tried = 0;
        for i in 0..base.len() {
            for &c in alphabet {
                let mut changed = base.as_bytes().to_vec();
                changed[i] = c;
                if let Ok(t) = String::from_utf8(changed) {
                    tried += usize::from(fields_agree(&t, &path(&["d"])) > 0);
                }
            }
        }
        assert!(tried > 500, "{tried}");
        // Without asking, none are found.
        assert_eq!(find_list(&text, &path(&["data"]), false).unwrap().fields, None);
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
