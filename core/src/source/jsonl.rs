//! JSON Lines: one object per line; blank lines are skipped.

use super::SourceError;
use serde_json::Value;
use std::io::BufRead;

pub fn read(mut reader: impl BufRead, name: &str, emit: &mut dyn FnMut(Value) -> bool) -> Result<u64, SourceError> {
    let mut line = Vec::new();
    let (mut lineno, mut count) = (0u64, 0u64);
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(|e| SourceError::Parse {
            path: name.into(),
            line: lineno + 1,
            message: e.to_string(),
        })?;
        if n == 0 {
            return Ok(count);
        }
        lineno += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let value: Value = serde_json::from_slice(&line).map_err(|e| SourceError::Parse {
            path: name.into(),
            line: lineno,
            message: format!("not valid JSON: {e}"),
        })?;
        if !value.is_object() {
            return Err(SourceError::Parse {
                path: name.into(),
                line: lineno,
                message: "each line must be a JSON object".into(),
            });
        }
        count += 1;
        if !emit(value) {
            return Err(SourceError::Stopped);
        }
    }
}

/// Like [`read`], with the records kept as the text of their lines, in
/// batches. Each line is still checked to be one JSON object (by
/// [`crate::jsonscan`], serde_json saying what is wrong with a line it
/// refuses). With `fields`, for a consumer that reads the fields of the
/// records (a Lua step), where each record's fields are is noted in the
/// same pass.
pub fn read_raw(
    mut reader: impl BufRead,
    name: &str,
    fields: bool,
    emit: &mut dyn FnMut(crate::record::Records) -> bool,
) -> Result<u64, SourceError> {
    use crate::jsonscan::ItemFields;
    use crate::rawjson::RawRecords;
    use crate::record::{Records, BATCH_BYTES, BATCH_SIZE};
    let mut text: Vec<u8> = Vec::with_capacity(BATCH_SIZE * 256);
    let mut spans = Vec::with_capacity(BATCH_SIZE);
    // The fields of the batch's records, while every line's were found.
    let mut found = fields.then(ItemFields::default);
    let mut frames = Vec::new();
    let (mut lineno, mut count) = (0u64, 0u64);
    let flush = |text: &mut Vec<u8>,
                 spans: &mut Vec<(usize, usize)>,
                 found: &mut Option<ItemFields>,
                 emit: &mut dyn FnMut(Records) -> bool| {
        let bytes = std::mem::replace(text, Vec::with_capacity(BATCH_SIZE * 256));
        // SAFETY: the text is whole lines, each checked to be UTF-8 below.
        let text = unsafe { String::from_utf8_unchecked(bytes) };
        let batch_fields = std::mem::replace(found, fields.then(ItemFields::default));
        emit(Records::Raw(
            RawRecords::from_line_spans(text, std::mem::take(spans)).with_fields(batch_fields),
        ))
    };
    loop {
        let start = text.len();
        let n = reader.read_until(b'\n', &mut text).map_err(|e| SourceError::Parse {
            path: name.into(),
            line: lineno + 1,
            message: e.to_string(),
        })?;
        if n == 0 {
            break;
        }
        lineno += 1;
        let line = &text[start..];
        let parse_error = |e: String| SourceError::Parse {
            path: name.into(),
            line: lineno,
            message: e,
        };
        // The JSON check below does not look inside strings it skips.
        if simdutf8::basic::from_utf8(line).is_err() {
            return Err(parse_error("not valid UTF-8 text; save the file as UTF-8".into()));
        }
        let body = line.trim_ascii();
        if body.is_empty() {
            text.truncate(start);
            continue;
        }
        let offset = body.as_ptr() as usize - text.as_ptr() as usize;
        let end = offset + body.len();
        if crate::jsonscan::check_line(&text[..end], offset, &mut frames, found.as_mut()).is_err() {
            let body = &text[offset..end];
            serde_json::from_slice::<serde::de::IgnoredAny>(body)
                .map_err(|e| parse_error(format!("not valid JSON: {e}")))?;
            // JSON after all (the scanner refuses what serde_json refuses):
            // this batch goes without its fields.
            found = None;
        }
        if text[offset] != b'{' {
            return Err(parse_error("each line must be a JSON object".into()));
        }
        spans.push((offset, end));
        count += 1;
        if (spans.len() >= BATCH_SIZE || text.len() >= BATCH_BYTES) && !flush(&mut text, &mut spans, &mut found, emit) {
            return Err(SourceError::Stopped);
        }
    }
    if !spans.is_empty() && !flush(&mut text, &mut spans, &mut found, emit) {
        return Err(SourceError::Stopped);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_objects_and_names_the_bad_line() {
        let mut got = Vec::new();
        let n = read(&b"{\"a\":1}\n\n{\"a\":2}\n"[..], "x.jsonl", &mut |v| {
            got.push(v);
            true
        })
        .unwrap();
        assert_eq!(n, 2);
        let err = read(&b"{\"a\":1}\n{oops\n"[..], "x.jsonl", &mut |_| true).unwrap_err();
        assert!(err.to_string().starts_with("x.jsonl:2: not valid JSON"), "{err}");
        let err = read(&b"[1]\n"[..], "x.jsonl", &mut |_| true).unwrap_err();
        assert!(err.to_string().contains("must be a JSON object"), "{err}");
    }

    /// [`read_raw`] with and without the fields found: the same records or
    /// the same error.
    fn read_raw_(
        input: &[u8],
        name: &str,
        emit: &mut dyn FnMut(crate::record::Records) -> bool,
    ) -> Result<u64, SourceError> {
        let plain = read_raw(input, name, false, &mut |_| true).map_err(|e| e.to_string());
        let with = read_raw(input, name, true, emit);
        assert_eq!(plain, with.as_ref().map(|n| *n).map_err(|e| e.to_string()));
        with
    }

    #[test]
    fn the_fields_found_as_lines_are_read_are_what_a_script_is_given() {
        use crate::record::{Records, BATCH_SIZE};
        let lines = [
            r#"{"id": 1, "name": "Анна", "x": {"a": [1, {"b": "}"}]}}"#,
            r#"  {"id": 2, "name": "Олег", "x": null}  "#,
            r#"{ "id" : 3 ,"name":"\"q\"", "x": [] }"#,
            r#"{"name": "b", "id": 4, "x": 1}"#,
            r#"{"id": 5, "id": 6}"#,
            r#"{"i\u0064": 7, "name": "c"}"#,
            r#"{}"#,
            r#"{"id": 8, "name": "c", "x": 1.5e3, "y": true}"#,
            r#"{"id": 9, "name": "c", "x": -1, "y": false}"#,
        ];
        // Enough lines for three batches, so that each starts afresh.
        let text: String = (0..BATCH_SIZE * 2 + 7)
            .map(|i| format!("{}\n", lines[i % lines.len()]))
            .collect();
        let (mut batches, mut kept) = (0, 0);
        let n = read_raw_(text.as_bytes(), "x.jsonl", &mut |batch| {
            batches += 1;
            let Records::Raw(raw) = &batch else {
                panic!("records kept as text");
            };
            let found = raw.fields().expect("the fields of every record");
            let mut last: Option<Vec<String>> = None;
            for i in 0..raw.len() {
                let line = raw.text(i);
                let item = found.at[i];
                let mut want = Vec::new();
                match crate::lua::lazy::scan(line, &mut want) {
                    None => assert_eq!(item.n, u32::MAX, "{line}"),
                    Some(names) => {
                        kept += 1;
                        let (from, n) = (item.from as usize, item.n as usize);
                        assert_eq!(&found.fields[from..from + n], &want[..], "{line}");
                        assert_eq!(item.names, names, "{line}");
                        let these: Vec<String> = want
                            .iter()
                            .map(|f| line[f[0] as usize..f[1] as usize].to_owned())
                            .collect();
                        assert_eq!(item.same, last.as_ref() == Some(&these), "{line}");
                        last = Some(these);
                    }
                }
            }
            true
        })
        .unwrap();
        assert_eq!(n as usize, BATCH_SIZE * 2 + 7);
        assert_eq!(batches, 3);
        assert!(kept > BATCH_SIZE, "{kept}");
        // Without asking, none are found.
        read_raw(text.as_bytes(), "x.jsonl", false, &mut |batch| {
            assert!(matches!(&batch, Records::Raw(raw) if raw.fields().is_none()));
            true
        })
        .unwrap();
    }

    #[test]
    fn raw_reading_checks_every_line_the_same_way() {
        let mut got = Vec::new();
        let n = read_raw_(&b" {\"a\":1}\r\n\n{\"a\":2}"[..], "x.jsonl", &mut |b| {
            got.extend(b.iter().map(|r| r.unwrap().into_owned()));
            true
        })
        .unwrap();
        assert_eq!(n, 2);
        assert_eq!(got, vec![serde_json::json!({"a": 1}), serde_json::json!({"a": 2})]);
        let err = read_raw_(&b"{\"a\":1}\n{oops\n"[..], "x.jsonl", &mut |_| true).unwrap_err();
        assert!(err.to_string().starts_with("x.jsonl:2: not valid JSON"), "{err}");
        let err = read_raw_(&b"[1]\n"[..], "x.jsonl", &mut |_| true).unwrap_err();
        assert!(err.to_string().contains("must be a JSON object"), "{err}");
        let err = read_raw_(&b"\xff\n"[..], "x.jsonl", &mut |_| true).unwrap_err();
        assert!(err.to_string().starts_with("x.jsonl:1: not valid UTF-8"), "{err}");
        // Inside a string, where the JSON check does not look.
        let err = read_raw_(&b"{\"a\":\"ok\"}\n{\"a\":\"\xff\"}\n"[..], "x.jsonl", &mut |_| true).unwrap_err();
        assert!(err.to_string().starts_with("x.jsonl:2: not valid UTF-8"), "{err}");
    }
}
