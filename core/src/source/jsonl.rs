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
}
