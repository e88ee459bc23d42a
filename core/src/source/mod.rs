//! Sources of records: files in JSON Lines, CSV (header row) or a JSON array.
//! Every reader streams; none loads the whole file.

mod csv;
mod json_array;
mod jsonl;

use crate::record::{approx_size, Records, BATCH_BYTES, BATCH_SIZE};
use crate::workflow::model::Format;
use serde_json::Value;
use std::path::Path;

/// Why reading stopped.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file's content is not what its format says.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// 1-based line of the problem.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// The consumer stopped reading.
    #[error("stopped")]
    Stopped,
}

/// The format named by a file's extension.
pub fn format_of(path: &Path) -> Option<Format> {
    match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "jsonl" | "ndjson" => Some(Format::Jsonl),
        "csv" | "tsv" => Some(Format::Csv),
        "json" => Some(Format::Json),
        "db" | "sqlite" | "sqlite3" => Some(Format::Sqlite),
        _ => None,
    }
}

/// The reader past a UTF-8 byte order mark, if the file starts with one
/// (as files saved by some Windows editors do).
fn without_bom<R: std::io::BufRead>(mut reader: R) -> R {
    if reader.fill_buf().is_ok_and(|b| b.starts_with(b"\xEF\xBB\xBF")) {
        reader.consume(3);
    }
    reader
}

/// Reads every record of a file in batches, handing each batch to `emit`;
/// `emit` returns false to stop early. JSON Lines records stay text (each
/// line is checked, not built into a value), with their fields found as
/// they are read when `fields` says a consumer reads them (see
/// [`jsonl::read_raw`]). Returns the number of records.
pub fn read_batches(
    path: &Path,
    format: Format,
    delimiter: Option<char>,
    fields: bool,
    emit: &mut dyn FnMut(Records) -> bool,
) -> Result<u64, SourceError> {
    if format == Format::Jsonl {
        let file = std::fs::File::open(path).map_err(|source| SourceError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let reader = without_bom(std::io::BufReader::with_capacity(256 * 1024, file));
        return jsonl::read_raw(reader, &path.display().to_string(), fields, emit);
    }
    let mut batch = Vec::with_capacity(BATCH_SIZE);
    let mut bytes = 0;
    let mut stopped = false;
    let n = read(path, format, delimiter, &mut |v| {
        bytes += approx_size(&v);
        batch.push(v);
        if batch.len() >= BATCH_SIZE || bytes >= BATCH_BYTES {
            bytes = 0;
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_SIZE));
            if !emit(Records::Values(full)) {
                stopped = true;
                return false;
            }
        }
        true
    })?;
    if !stopped && !batch.is_empty() && !emit(Records::Values(batch)) {
        return Err(SourceError::Stopped);
    }
    Ok(n)
}

/// Reads every record of a file, handing each to `emit`; `emit` returns false
/// to stop early. Returns the number of records read.
pub fn read(
    path: &Path,
    format: Format,
    delimiter: Option<char>,
    emit: &mut dyn FnMut(Value) -> bool,
) -> Result<u64, SourceError> {
    let file = std::fs::File::open(path).map_err(|source| SourceError::Open {
        path: path.display().to_string(),
        source,
    })?;
    let reader = without_bom(std::io::BufReader::with_capacity(256 * 1024, file));
    let name = path.display().to_string();
    match format {
        Format::Jsonl => jsonl::read(reader, &name, emit),
        Format::Csv => {
            let d = delimiter.unwrap_or(if name.ends_with(".tsv") { '\t' } else { ',' });
            csv::read(reader, &name, d, emit)
        }
        Format::Json => json_array::read(reader, &name, emit),
        Format::Sqlite => Err(SourceError::Parse {
            path: name,
            line: 0,
            message: "reading SQLite files is not supported; export the table to CSV or JSON Lines".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_records_go_in_small_batches() {
        // 40 records of 300 KB: 12 MB, which 512-record batches would take
        // in one.
        let dir = tempfile::tempdir().expect("dir");
        let big = "x".repeat(300_000);
        let mut jsonl = String::new();
        let mut csv = String::from("n,text\n");
        for n in 0..40 {
            jsonl.push_str(&format!("{{\"n\":{n},\"text\":\"{big}\"}}\n"));
            csv.push_str(&format!("{n},{big}\n"));
        }
        let json = format!("[{}]", jsonl.trim_end().replace('\n', ","));
        for (name, format, text) in [
            ("a.jsonl", Format::Jsonl, &jsonl),
            ("a.csv", Format::Csv, &csv),
            ("a.json", Format::Json, &json),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            let mut sizes = Vec::new();
            let n = read_batches(&path, format, None, true, &mut |b| {
                sizes.push(b.len());
                true
            })
            .expect(name);
            assert_eq!(n, 40, "{name}");
            // 4 MiB a batch at most, passed by one record: 14 records.
            assert!(sizes.len() >= 3 && sizes.iter().all(|&s| s <= 14), "{name}: {sizes:?}");
        }
    }

    #[test]
    fn a_byte_order_mark_at_the_start_of_a_file_is_passed_over() {
        let dir = tempfile::tempdir().expect("dir");
        for (name, format, text) in [
            ("a.jsonl", Format::Jsonl, "\u{feff}{\"a\":1}\n{\"a\":2}\n"),
            ("a.json", Format::Json, "\u{feff}[{\"a\":1},{\"a\":2}]"),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            let n = read_batches(&path, format, None, false, &mut |_| true).expect(name);
            assert_eq!(n, 2, "{name}");
        }
    }
}
