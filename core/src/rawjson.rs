//! Records kept as the JSON text they arrived in.
//!
//! Most records pass through a pipeline untouched: fetched from an API and
//! written to a file. Building a JSON value for each costs dozens of
//! allocations per record, and writing it costs a serialisation; keeping the
//! record's text costs one memory copy. [`split`] parses an API answer once,
//! building values only for the envelope (the page count, the total, error
//! fields) and noting where each record of the selected list starts and
//! ends. Steps that need a record's fields (scripts, templates, CSV and
//! SQLite sinks) parse it when they read it.

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::fmt;

/// Records as JSON text: one buffer and where each record is in it.
#[derive(Debug, Clone, Default)]
pub struct RawRecords {
    text: String,
    spans: Vec<(usize, usize)>,
    /// Whether any record may span several lines (has line breaks of its
    /// own).
    multiline: bool,
    /// Whether the text is the records and nothing else, each followed by a
    /// line break.
    lines: bool,
    /// The fields of each record, when they were found as the page was
    /// scanned (for a Lua step, see [`crate::lua::Scanned`]).
    fields: Option<Box<crate::jsonscan::ItemFields>>,
}

impl RawRecords {
    /// Records from JSON Lines text whose lines are known to be valid JSON
    /// (a spool file flow wrote itself). Blank lines are skipped.
    pub fn from_lines(text: String) -> Self {
        let mut spans = Vec::new();
        let mut start = 0;
        for (i, b) in text.bytes().enumerate() {
            if b == b'\n' {
                if !text[start..i].trim().is_empty() {
                    spans.push((start, i));
                }
                start = i + 1;
            }
        }
        if !text[start..].trim().is_empty() {
            spans.push((start, text.len()));
        }
        RawRecords {
            text,
            spans,
            multiline: false,
            lines: false,
            fields: None,
        }
    }

    /// Records found in `text` by [`spans`].
    pub fn new(text: String, spans: Vec<(usize, usize)>) -> Self {
        let multiline = memchr::memchr2(b'\n', b'\r', text.as_bytes()).is_some();
        RawRecords {
            text,
            spans,
            multiline,
            lines: false,
            fields: None,
        }
    }

    /// Records that are all of `text`, each followed by a line break (which
    /// `spans` leave out); `multiline` when some record has line breaks of
    /// its own.
    pub fn lines(text: String, spans: Vec<(usize, usize)>, multiline: bool) -> Self {
        debug_assert_eq!(spans.iter().map(|&(a, b)| b - a + 1).sum::<usize>(), text.len());
        RawRecords {
            text,
            spans,
            multiline,
            lines: true,
            fields: None,
        }
    }

    /// The records as JSON Lines, when the text already is that.
    pub fn as_json_lines(&self) -> Option<&str> {
        (self.lines && !self.multiline).then_some(self.text.as_str())
    }

    /// Records that are each one line of `text` (a JSON Lines file).
    pub fn from_line_spans(text: String, spans: Spans) -> Self {
        RawRecords {
            text,
            spans,
            multiline: false,
            lines: false,
            fields: None,
        }
    }

    /// The same records with the fields of each found as they were read
    /// (one item a record, or they are not used).
    pub(crate) fn with_fields(mut self, fields: Option<crate::jsonscan::ItemFields>) -> Self {
        self.fields = fields.map(Box::new);
        self
    }

    /// The fields of each record, when they were found with the records
    /// (one entry a record).
    pub(crate) fn fields(&self) -> Option<&crate::jsonscan::ItemFields> {
        self.fields.as_deref().filter(|f| f.at.len() == self.spans.len())
    }

    /// Whether a record may hold a line break.
    pub fn multiline(&self) -> bool {
        self.multiline
    }

    /// How many records.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Each record's JSON text.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        self.spans.iter().map(|&(a, b)| &self.text[a..b])
    }

    /// Record `i`'s text ("" past the end).
    pub fn text(&self, i: usize) -> &str {
        self.spans.get(i).map(|&(a, b)| &self.text[a..b]).unwrap_or("")
    }

    /// One record parsed; None past the end, or when it is JSON that has no
    /// value in flow (see [`RawRecords::parsed`]).
    pub fn value(&self, i: usize) -> Option<Value> {
        self.parsed(i).ok()
    }

    /// One record parsed. The text was checked to be JSON when it was
    /// split, but not every JSON text becomes a value: one nested more than
    /// 128 deep, or holding a number beyond ±1.8e308, is an error that says
    /// so, where passing it on as text keeps it exactly.
    pub fn parsed(&self, i: usize) -> Result<Value, String> {
        let Some(&(a, b)) = self.spans.get(i) else {
            return Err(format!("there is no record {}", i + 1));
        };
        serde_json::from_str(&self.text[a..b]).map_err(|e| {
            let shown: String = self.text[a..b].chars().take(60).collect();
            format!(
                "a record cannot be read as fields ({e}); flow reads records nested at most 128 deep, with numbers within ±1.8e308 (record `{shown}`…)"
            )
        })
    }
}

/// Parses a JSON document whose records are the list at `path` (object keys
/// from the root). Returns the document with that list left empty, and the
/// records as text; `None` when the path does not lead to a list, in which
/// case the document is returned whole. With `fields`, the fields of each
/// record are found too, for a Lua step that reads them.
pub fn split(
    text: String,
    path: &[String],
    fields: bool,
) -> Result<(Value, Option<RawRecords>), (serde_json::Error, String)> {
    match found(&text, path, fields) {
        Ok((doc, Some((spans, fields)))) => {
            let mut raw = RawRecords::new(text, spans);
            raw.fields = fields.map(Box::new);
            Ok((doc, Some(raw)))
        }
        Ok((doc, None)) => Ok((doc, None)),
        Err(e) => Err((e, text)),
    }
}

/// Where each record is in a text: start and end byte offsets.
pub type Spans = Vec<(usize, usize)>;

/// The document with the list at `path` left empty, and where each item of
/// that list is in `text`.
///
/// The text is scanned once (see [`crate::jsonscan`]), and only the
/// envelope, the text with each list at the path cut out, is parsed into a
/// value. Where the scan finds the text is not JSON, or the envelope has
/// no value in flow (a number beyond ±1.8e308, nesting deeper than 128),
/// serde_json parses the whole text again for the error and its place.
pub fn spans(text: &str, path: &[String]) -> Result<(Value, Option<Spans>), serde_json::Error> {
    found(text, path, false).map(|(doc, spans)| (doc, spans.map(|(spans, _)| spans)))
}

/// [`spans`], and the fields of each record when asked for and found.
type Found = (Value, Option<(Spans, Option<crate::jsonscan::ItemFields>)>);

fn found(text: &str, path: &[String], fields: bool) -> Result<Found, serde_json::Error> {
    let slowly = |text, path| spans_slowly(text, path).map(|(doc, spans)| (doc, spans.map(|s| (s, None))));
    let Ok(found) = crate::jsonscan::find_list(text, path, fields) else {
        return slowly(text, path);
    };
    if found.lists.is_empty() {
        // No list to cut out: the document is all envelope.
        return slowly(text, path);
    }
    let mut envelope = String::with_capacity(text.len() - found.lists.iter().map(|(a, b)| b - a - 2).sum::<usize>());
    let mut at = 0;
    for &(a, b) in &found.lists {
        envelope.push_str(&text[at..a]);
        envelope.push_str("[]");
        at = b;
    }
    envelope.push_str(&text[at..]);
    match serde_json::from_str(&envelope) {
        Ok(doc) => Ok((doc, Some((found.items, found.fields)))),
        Err(_) => slowly(text, path),
    }
}

/// [`spans`] by serde_json alone.
fn spans_slowly(text: &str, path: &[String]) -> Result<(Value, Option<Spans>), serde_json::Error> {
    let mut spans = None;
    let mut de = serde_json::Deserializer::from_str(text);
    let doc = Node {
        path: Some(path),
        base: text.as_ptr() as usize,
        spans: &mut spans,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok((doc, spans))
}

/// Builds a value; on the way to `path`, keeps the list there as spans.
struct Node<'p, 'o> {
    /// Keys still to walk; `None` once off the path.
    path: Option<&'p [String]>,
    base: usize,
    spans: &'o mut Option<Vec<(usize, usize)>>,
}

impl<'de> DeserializeSeed<'de> for Node<'_, '_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_, '_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        if self.path.is_some_and(|p| p.is_empty()) {
            // The records: note where each one is, build nothing.
            let mut spans = Vec::with_capacity(seq.size_hint().unwrap_or(64));
            while let Some(raw) = seq.next_element::<&'de RawValue>()? {
                let start = raw.get().as_ptr() as usize - self.base;
                spans.push((start, start + raw.get().len()));
            }
            *self.spans = Some(spans);
            return Ok(Value::Array(Vec::new()));
        }
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(v) = seq.next_element_seed(Node {
            path: None,
            base: self.base,
            spans: &mut *self.spans,
        })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = match self.path {
                Some([first, rest @ ..]) if *first == key => Some(rest),
                _ => None,
            };
            let v = map.next_value_seed(Node {
                path,
                base: self.base,
                spans: &mut *self.spans,
            })?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn keeps_the_records_as_text_and_builds_the_envelope() {
        let text = r#"{"data": {"projects": [{"id": 1, "name": "Анна \"A\""}, {"id": 2, "x": [1, {"y": null}]}], "n": 2}, "last_page": 7}"#;
        let (doc, raw) = split(text.to_owned(), &path(&["data", "projects"]), false).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({"data": {"projects": [], "n": 2}, "last_page": 7})
        );
        let raw = raw.unwrap();
        let records: Vec<&str> = raw.iter().collect();
        assert_eq!(
            records,
            [
                r#"{"id": 1, "name": "Анна \"A\""}"#,
                r#"{"id": 2, "x": [1, {"y": null}]}"#
            ]
        );
        assert_eq!(raw.value(1).unwrap()["x"][1], serde_json::json!({"y": null}));
    }

    #[test]
    fn a_path_that_leads_nowhere_returns_the_document_whole() {
        let (doc, raw) = split(
            r#"{"data": {"projects": 5}}"#.to_owned(),
            &path(&["data", "projects"]),
            false,
        )
        .unwrap();
        assert!(raw.is_none());
        assert_eq!(doc["data"]["projects"], 5);
        let (doc, raw) = split("[1, 2]".to_owned(), &path(&[]), false).unwrap();
        assert_eq!(doc, serde_json::json!([]));
        assert_eq!(raw.unwrap().len(), 2);
        assert!(split(r#"{"data": [1,"#.to_owned(), &path(&["data"]), false).is_err());
    }

    #[test]
    fn a_page_that_is_not_json_gets_serde_jsons_own_message_and_place() {
        let keys = path(&["data"]);
        for text in [
            "{\"data\": [{\"id\": 1},\n {\"id\": 2,}]}",
            "{\"data\": [1]} x",
            "{\"data\": [\"a\u{1}\"]}",
            // JSON, but the envelope has no value in flow.
            "{\"total\": 1e999, \"data\": []}",
        ] {
            let (e, back) = split(text.to_owned(), &keys, false).unwrap_err();
            let serde = spans_slowly(text, &keys).unwrap_err();
            assert_eq!(e.to_string(), serde.to_string(), "{text:?}");
            assert!(e.to_string().contains(" at line "), "{e}");
            assert_eq!(back, text);
        }
        // Records nested deeper than a value may be are still text.
        let deep = format!("{{\"data\": [{}{}]}}", "[".repeat(200), "]".repeat(200));
        assert_eq!(split(deep, &keys, false).unwrap().1.unwrap().len(), 1);
    }

    #[test]
    fn lines_become_records() {
        let raw = RawRecords::from_lines("{\"a\":1}\n\n{\"b\":2}\n".to_owned());
        assert_eq!(raw.iter().collect::<Vec<_>>(), ["{\"a\":1}", "{\"b\":2}"]);
    }
}
