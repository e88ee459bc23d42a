//! A JSON array of objects, parsed element by element so that a large file
//! never sits in memory whole.

use super::SourceError;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde_json::Value;
use std::fmt;
use std::io::Read;

struct Elements<'a> {
    emit: &'a mut dyn FnMut(Value) -> bool,
    count: u64,
    stopped: bool,
}

impl<'de> Visitor<'de> for &mut Elements<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array of objects")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(v) = seq.next_element::<Value>()? {
            if !v.is_object() {
                return Err(serde::de::Error::custom(format!(
                    "element {} is not an object",
                    self.count + 1
                )));
            }
            self.count += 1;
            if !(self.emit)(v) {
                self.stopped = true;
                // Skip the rest without keeping it.
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                return Ok(());
            }
        }
        Ok(())
    }
}

pub fn read(reader: impl Read, name: &str, emit: &mut dyn FnMut(Value) -> bool) -> Result<u64, SourceError> {
    let mut de = serde_json::Deserializer::from_reader(reader);
    let mut el = Elements {
        emit,
        count: 0,
        stopped: false,
    };
    de.deserialize_seq(&mut el).map_err(|e| SourceError::Parse {
        path: name.into(),
        line: e.line() as u64,
        message: format!("{e}"),
    })?;
    if el.stopped {
        return Err(SourceError::Stopped);
    }
    // Nothing may follow the array: a second one (files joined end to end)
    // would otherwise be dropped without a word.
    de.end().map_err(|e| SourceError::Parse {
        path: name.into(),
        line: e.line() as u64,
        message: format!(
            "{e} after the array; a JSON file holds one array (use JSON Lines for records one after another)"
        ),
    })?;
    Ok(el.count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_follows_the_array_is_an_error() {
        let err = read(&b"[{\"a\":1}]\n[{\"a\":2}]"[..], "x.json", &mut |_| true).unwrap_err();
        assert!(err.to_string().contains("after the array"), "{err}");
        assert_eq!(read(&b"[{\"a\":1}]\n\n"[..], "x.json", &mut |_| true).unwrap(), 1);
    }

    #[test]
    fn streams_elements() {
        let mut n = 0;
        assert_eq!(
            read(&b"[{\"a\":1},\n{\"a\":2}]"[..], "x.json", &mut |_| {
                n += 1;
                true
            })
            .unwrap(),
            2
        );
        assert_eq!(n, 2);
        let err = read(&b"{\"a\":1}"[..], "x.json", &mut |_| true).unwrap_err();
        assert!(err.to_string().contains("x.json:1"), "{err}");
        let err = read(&b"[{\"a\":1},\n 3]"[..], "x.json", &mut |_| true).unwrap_err();
        assert!(err.to_string().contains("element 2 is not an object"), "{err}");
    }
}
