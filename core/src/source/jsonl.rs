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
/// batches. Each line is still checked to be one JSON object.
pub fn read_raw(
    mut reader: impl BufRead,
    name: &str,
    emit: &mut dyn FnMut(crate::record::Records) -> bool,
) -> Result<u64, SourceError> {
    use crate::rawjson::RawRecords;
    use crate::record::{Records, BATCH_BYTES, BATCH_SIZE};
    let mut text: Vec<u8> = Vec::with_capacity(BATCH_SIZE * 256);
    let mut spans = Vec::with_capacity(BATCH_SIZE);
    let (mut lineno, mut count) = (0u64, 0u64);
    let flush = |text: &mut Vec<u8>, spans: &mut Vec<(usize, usize)>, emit: &mut dyn FnMut(Records) -> bool| {
        let bytes = std::mem::replace(text, Vec::with_capacity(BATCH_SIZE * 256));
        // SAFETY: the text is whole lines, each checked to be UTF-8 below.
        let text = unsafe { String::from_utf8_unchecked(bytes) };
        emit(Records::Raw(RawRecords::from_line_spans(text, std::mem::take(spans))))
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
        serde_json::from_slice::<serde::de::IgnoredAny>(body)
            .map_err(|e| parse_error(format!("not valid JSON: {e}")))?;
        if body.first() != Some(&b'{') {
            return Err(parse_error("each line must be a JSON object".into()));
        }
        let offset = body.as_ptr() as usize - text.as_ptr() as usize;
        spans.push((offset, offset + body.len()));
        count += 1;
        if (spans.len() >= BATCH_SIZE || text.len() >= BATCH_BYTES) && !flush(&mut text, &mut spans, emit) {
            return Err(SourceError::Stopped);
        }
    }
    if !spans.is_empty() && !flush(&mut text, &mut spans, emit) {
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

    #[test]
    fn raw_reading_checks_every_line_the_same_way() {
        let mut got = Vec::new();
        let n = read_raw(&b" {\"a\":1}\r\n\n{\"a\":2}"[..], "x.jsonl", &mut |b| {
            got.extend(b.iter().map(|r| r.unwrap().into_owned()));
            true
        })
        .unwrap();
        assert_eq!(n, 2);
        assert_eq!(got, vec![serde_json::json!({"a": 1}), serde_json::json!({"a": 2})]);
        let err = read_raw(&b"{\"a\":1}\n{oops\n"[..], "x.jsonl", &mut |_| true).unwrap_err();
        assert!(err.to_string().starts_with("x.jsonl:2: not valid JSON"), "{err}");
        let err = read_raw(&b"[1]\n"[..], "x.jsonl", &mut |_| true).unwrap_err();
        assert!(err.to_string().contains("must be a JSON object"), "{err}");
        let err = read_raw(&b"\xff\n"[..], "x.jsonl", &mut |_| true).unwrap_err();
        assert!(err.to_string().starts_with("x.jsonl:1: not valid UTF-8"), "{err}");
        // Inside a string, where the JSON check does not look.
        let err = read_raw(&b"{\"a\":\"ok\"}\n{\"a\":\"\xff\"}\n"[..], "x.jsonl", &mut |_| true).unwrap_err();
        assert!(err.to_string().starts_with("x.jsonl:2: not valid UTF-8"), "{err}");
    }
}
