//! CSV with a header row; every field is read as text.

use super::SourceError;
use serde_json::{Map, Value};
use std::io::Read;

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
        .from_reader(reader);
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
}
