//! CSV with a header row; every field is read as text.

use super::SourceError;
use serde_json::{Map, Value};
use std::io::Read;

const UNCLOSED: &str = "a field opens a quote that is never closed, so every line after it would be read into that one field; close the quote, or write a quote inside a quoted field as two (\"\")";

pub fn read(
    reader: impl Read,
    name: &str,
    delimiter: char,
    emit: &mut dyn FnMut(Value) -> bool,
) -> Result<u64, SourceError> {
    let delim = u8::try_from(delimiter).map_err(|_| SourceError::Parse {
        path: name.into(),
        line: 0,
        message: format!("the delimiter `{delimiter}` must be a single ASCII character"),
    })?;
    let mut rdr = ::csv::ReaderBuilder::new()
        .delimiter(delim)
        .flexible(false)
        .from_reader(QuoteWatch::new(reader, delim));
    let parse_err = |e: ::csv::Error| {
        let line = e.position().map(|p| p.line()).unwrap_or(0);
        let message = match e.kind() {
            ::csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                format!("the row has {len} fields but the header has {expected_len}")
            }
            ::csv::ErrorKind::Utf8 { .. } => "the row is not valid UTF-8; save the file as UTF-8".into(),
            _ => e.to_string(),
        };
        SourceError::Parse {
            path: name.into(),
            line,
            message,
        }
    };
    let headers: Vec<String> = rdr
        .headers()
        .map_err(parse_err)?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_owned())
        .collect();
    if let Some(open) = rdr.get_ref().open_at_end() {
        // The header itself left a quote open and took the whole file (the
        // reader reaches the end of the file only for a header that runs
        // to it).
        return Err(SourceError::Parse {
            path: name.into(),
            line: open,
            message: UNCLOSED.into(),
        });
    }
    // A name twice would keep one of the two columns and lose the other.
    // Blank names (the empty columns a spreadsheet leaves at the end) are
    // let be, as they always were.
    for (i, h) in headers.iter().enumerate() {
        if !h.trim().is_empty() && headers[..i].contains(h) {
            return Err(SourceError::Parse {
                path: name.into(),
                line: 1,
                message: format!(
                    "the header names the column `{h}` twice (columns {} and {}); rename one so that neither is lost",
                    headers[..i].iter().position(|o| o == h).unwrap_or(0) + 1,
                    i + 1
                ),
            });
        }
    }
    let mut record = ::csv::StringRecord::new();
    let mut count = 0;
    while rdr.read_record(&mut record).map_err(parse_err)? {
        // A quote opened and never closed takes every line after it into
        // one field, and the reader says nothing of it: the record that
        // holds it is refused before it goes anywhere.
        if let Some(open) = rdr.get_ref().open_at_end() {
            if record.position().is_some_and(|p| p.line() <= open) {
                return Err(SourceError::Parse {
                    path: name.into(),
                    line: open,
                    message: UNCLOSED.into(),
                });
            }
        }
        let mut map = Map::with_capacity(headers.len());
        for (h, v) in headers.iter().zip(record.iter()) {
            map.insert(h.clone(), Value::String(v.to_owned()));
        }
        count += 1;
        if !emit(Value::Object(map)) {
            return Err(SourceError::Stopped);
        }
    }
    Ok(count)
}

/// Passes a CSV file through, following its quotes as the reader does, to
/// tell at the end whether a quoted field was left open.
struct QuoteWatch<R> {
    inner: R,
    delim: u8,
    state: Quoting,
    /// The line being read (from 1).
    line: u64,
    /// The line the open quote is on, while inside quotes.
    opened: u64,
    /// Whether the whole file has been read.
    ended: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Quoting {
    /// At the start of a field.
    Start,
    /// In a field that did not start with a quote (a quote here is text).
    Bare,
    /// Inside quotes.
    Quoted,
    /// After a quote inside quotes: the end of the quotes, or the first of
    /// two that stand for one.
    Quote,
}

impl<R> QuoteWatch<R> {
    fn new(inner: R, delim: u8) -> Self {
        QuoteWatch {
            inner,
            delim,
            state: Quoting::Start,
            line: 1,
            opened: 0,
            ended: false,
        }
    }

    /// The line of a quote still open when the file ended.
    fn open_at_end(&self) -> Option<u64> {
        (self.ended && self.state == Quoting::Quoted).then_some(self.opened)
    }

    fn follow(&mut self, bytes: &[u8]) {
        for &b in bytes {
            let newline = b == b'\n' || b == b'\r';
            if b == b'\n' {
                self.line += 1;
            }
            self.state = match self.state {
                Quoting::Quoted => match b {
                    b'"' => Quoting::Quote,
                    _ => Quoting::Quoted,
                },
                Quoting::Quote if b == b'"' => Quoting::Quoted,
                _ if newline || b == self.delim => Quoting::Start,
                Quoting::Start if b == b'"' => {
                    self.opened = self.line;
                    Quoting::Quoted
                }
                _ => Quoting::Bare,
            };
        }
    }
}

impl<R: Read> Read for QuoteWatch<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.ended = true;
        }
        self.follow(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_column_named_twice_is_refused() {
        assert!(read("a,b,,\n1,2,,\n".as_bytes(), "l.csv", ',', &mut |_| true).is_ok());
        let err = read("a,a,b\n1,2,3\n".as_bytes(), "l.csv", ',', &mut |_| true).unwrap_err();
        assert!(
            err.to_string().contains("names the column `a` twice (columns 1 and 2)"),
            "{err}"
        );
    }

    #[test]
    fn header_names_the_fields() {
        let mut got = Vec::new();
        read(
            "\u{feff}name,phone\nAnn,\"8 912, ext\"\n".as_bytes(),
            "l.csv",
            ',',
            &mut |v| {
                got.push(v);
                true
            },
        )
        .unwrap();
        assert_eq!(got, vec![json!({"name": "Ann", "phone": "8 912, ext"})]);
        let err = read(&b"a,b\n1,2,3\n"[..], "l.csv", ',', &mut |_| true).unwrap_err();
        assert_eq!(err.to_string(), "l.csv:2: the row has 3 fields but the header has 2");
    }

    #[test]
    fn a_quote_never_closed_is_refused_with_its_line() {
        let mut got = Vec::new();
        let text = "name;note\nAnn;\"VIP\nBob;x\nEve;y\n";
        let err = read(text.as_bytes(), "l.csv", ';', &mut |v| {
            got.push(v);
            true
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("l.csv:2: a field opens a quote that is never closed"),
            "{err}"
        );
        assert!(got.is_empty(), "the swallowed record went on: {got:?}");
        // Records before it go on; quotes that close, doubled quotes, line
        // breaks inside quotes and quotes inside bare text are all fine.
        let text = "a,b\n1,\"x \"\"y\"\" z\"\n2,\"two\nlines\"\r\n3,5\" screen\n4,\"";
        let mut got = Vec::new();
        let err = read(text.as_bytes(), "l.csv", ',', &mut |v| {
            got.push(v);
            true
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("l.csv:6:"), "{err}");
        assert_eq!(
            got,
            vec![
                json!({"a": "1", "b": "x \"y\" z"}),
                json!({"a": "2", "b": "two\nlines"}),
                json!({"a": "3", "b": "5\" screen"})
            ]
        );
        assert_eq!(
            read(&text.as_bytes()[..text.len() - 3], "l.csv", ',', &mut |_| true).unwrap(),
            3
        );
        // In the header, which then takes the whole file.
        let err = read("\"a,b\n1,2\n3,4\n".as_bytes(), "l.csv", ',', &mut |_| true).unwrap_err();
        assert!(err.to_string().starts_with("l.csv:1: a field opens a quote"), "{err}");
        let err = read("\n\"a,b\n1,2\n".as_bytes(), "l.csv", ',', &mut |_| true).unwrap_err();
        assert!(err.to_string().starts_with("l.csv:2: a field opens a quote"), "{err}");
        assert_eq!(read("a,b".as_bytes(), "l.csv", ',', &mut |_| true).unwrap(), 0);
    }
}
