//! CSV with a header row. Columns are the given ones, or the fields of the
//! first record; nested values are written as JSON text. When the columns come
//! from the first record, a later record with fields the header lacks is
//! refused rather than silently cut.

use super::files::{create, Target};
use super::{Sink, SinkError};
use serde_json::Value;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

pub struct CsvSink {
    w: ::csv::Writer<BufWriter<File>>,
    target: Target,
    columns: Option<Vec<String>>,
    /// The same names, to look up: records of thousands of fields are
    /// checked in time that grows with their number, not its square.
    known: std::collections::HashSet<String>,
    /// The columns were chosen by the user: other fields are left out on purpose.
    chosen: bool,
    header_written: bool,
    row: Vec<String>,
}

impl CsvSink {
    pub fn create(path: &Path, append: bool, columns: Option<&[String]>) -> Result<Self, SinkError> {
        // Rows added to a file go under the header it has.
        let header = if append { existing_header(path)? } else { None };
        if let (Some(h), Some(c)) = (&header, columns) {
            if h.as_slice() != c {
                return Err(SinkError::Io {
                    path: path.display().to_string(),
                    message: format!(
                        "its header is `{}`, but `columns:` names `{}`; rows added to it must have its columns",
                        h.join(","),
                        c.join(",")
                    ),
                });
            }
        }
        let chosen = columns.is_some();
        let columns = columns.map(<[String]>::to_vec).or(header);
        let (file, target) = create(path, append)?;
        let w = ::csv::WriterBuilder::new().has_headers(false).from_writer(file);
        Ok(CsvSink {
            w,
            header_written: target.had_content,
            target,
            chosen,
            known: columns.iter().flatten().cloned().collect(),
            columns,
            row: Vec::new(),
        })
    }

    fn err(&self, message: impl Into<String>) -> SinkError {
        SinkError::Io {
            path: self.target.path.display().to_string(),
            message: message.into(),
        }
    }
}

/// The header of a CSV file that has content, to add rows under.
fn existing_header(path: &Path) -> Result<Option<Vec<String>>, SinkError> {
    let Ok(file) = std::fs::File::open(path) else {
        return Ok(None);
    };
    if file.metadata().map_or(true, |m| !m.is_file() || m.len() == 0) {
        return Ok(None);
    }
    let mut rdr = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(file);
    let mut first = ::csv::StringRecord::new();
    match rdr.read_record(&mut first) {
        Ok(true) => Ok(Some(first.iter().map(str::to_owned).collect())),
        Ok(false) => Ok(None),
        Err(e) => Err(SinkError::Io {
            path: path.display().to_string(),
            message: format!("cannot read its header to add rows under it: {e}"),
        }),
    }
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// A field of a record kept as text, as a cell takes it: a number as it was
/// written (`100.50` stays `100.50`, an integer of any length stays whole),
/// a string unescaped, a list or object as compact JSON.
fn exact(v: &serde_json::value::RawValue) -> Value {
    let t = v.get();
    let parsed = || serde_json::from_str::<Value>(t).unwrap_or_else(|_| Value::String(t.to_owned()));
    match t.as_bytes().first() {
        Some(b'"' | b'{' | b'[' | b't' | b'f' | b'n') => parsed(),
        _ => Value::String(t.to_owned()),
    }
}

impl Sink for CsvSink {
    fn write_batch(&mut self, batch: &crate::record::Records) -> Result<u64, (u64, SinkError)> {
        let crate::record::Records::Raw(raw) = batch else {
            return super::write_each(self, batch);
        };
        let mut n = 0;
        for text in raw.iter() {
            let fields: indexmap::IndexMap<String, Box<serde_json::value::RawValue>> = serde_json::from_str(text)
                .map_err(|e| (n, SinkError::Record(format!("a record cannot be read as fields: {e}"))))?;
            let row: serde_json::Map<String, Value> = fields.iter().map(|(k, v)| (k.clone(), exact(v))).collect();
            self.write(&Value::Object(row)).map_err(|e| (n, e))?;
            n += 1;
        }
        Ok(n)
    }

    fn write(&mut self, record: &Value) -> Result<(), SinkError> {
        let Value::Object(map) = record else {
            return Err(self.err("a CSV row must come from a record with named fields"));
        };
        if self.columns.is_none() {
            self.known = map.keys().cloned().collect();
        }
        // (A file's own header, like the first record's fields, is the whole
        // set of columns: a field outside it is refused below.)
        let columns = self.columns.get_or_insert_with(|| map.keys().cloned().collect());
        let known = &self.known;
        if let Some(extra) = map.keys().find(|k| !self.chosen && !known.contains(*k)) {
            let msg = format!(
                "the record has a field `{extra}` that is not a column ({}); list every column with `columns:`",
                columns.join(", ")
            );
            return Err(self.err(msg));
        }
        if !self.header_written {
            self.w.write_record(columns.iter()).map_err(|e| SinkError::Io {
                path: self.target.path.display().to_string(),
                message: e.to_string(),
            })?;
            self.header_written = true;
        }
        self.row.clear();
        self.row.extend(columns.iter().map(|c| cell(map.get(c))));
        self.w.write_record(&self.row).map_err(|e| SinkError::Io {
            path: self.target.path.display().to_string(),
            message: e.to_string(),
        })
    }

    fn finish(mut self: Box<Self>) -> Result<(), SinkError> {
        if let (false, Some(cols)) = (self.header_written, &self.columns) {
            self.w.write_record(cols).map_err(|e| SinkError::Io {
                path: self.target.path.display().to_string(),
                message: e.to_string(),
            })?;
        }
        let CsvSink { w, target, .. } = *self;
        let inner = w.into_inner().map_err(|e| SinkError::Io {
            path: target.path.display().to_string(),
            message: e.to_string(),
        })?;
        target.commit(inner)
    }
}
