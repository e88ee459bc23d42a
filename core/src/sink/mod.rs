//! Sinks: where `write` steps put records. JSON Lines, CSV, a JSON array, or
//! a table in a SQLite file.
//!
//! A file that replaces an older one is written to a temporary file beside it
//! and moved into place only when the step succeeds, so a failed run never
//! leaves a half-written file where a complete one stood.

mod csv;
mod files;
pub(crate) use files::resolve_link;
mod sqlite;

use crate::workflow::model::Format;
use serde_json::Value;
use std::path::Path;

/// Why a sink failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The file could not be created or written.
    #[error("cannot write {path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The SQLite database refused.
    #[error("SQLite {path}: {message}")]
    Sqlite {
        /// The database file.
        path: String,
        /// What SQLite said.
        message: String,
    },
    /// A record that has no value in flow (see `RawRecords::parsed`), for a
    /// sink that needs its fields.
    #[error("{0}")]
    Record(String),
}

/// Where records are written.
pub trait Sink: Send {
    /// Writes one record.
    fn write(&mut self, record: &Value) -> Result<(), SinkError>;
    /// Writes a batch; sinks that can take records as JSON text do so
    /// without parsing them. Returns how many were written before an error.
    fn write_batch(&mut self, batch: &crate::record::Records) -> Result<u64, (u64, SinkError)> {
        write_each(self, batch)
    }
    /// Finishes the output (flush, move into place, commit). A sink dropped
    /// without `finish` leaves any file it replaces as it was.
    fn finish(self: Box<Self>) -> Result<(), SinkError>;
}

/// Writes a batch a record at a time, each parsed into a value: what a sink
/// does with records it cannot take as text. Returns how many were written
/// before an error.
pub(crate) fn write_each<S: Sink + ?Sized>(
    sink: &mut S,
    batch: &crate::record::Records,
) -> Result<u64, (u64, SinkError)> {
    let mut n = 0;
    for record in batch.iter() {
        let record = record.map_err(|e| (n, SinkError::Record(e)))?;
        sink.write(&record).map_err(|e| (n, e))?;
        n += 1;
    }
    Ok(n)
}

/// What a sink needs to know.
pub struct SinkOptions<'a> {
    /// The file.
    pub path: &'a Path,
    /// The format.
    pub format: Format,
    /// The SQLite table.
    pub table: Option<&'a str>,
    /// Add to what is there instead of replacing it.
    pub append: bool,
    /// CSV columns.
    pub columns: Option<&'a [String]>,
}

/// Opens a sink.
pub fn open(opts: &SinkOptions) -> Result<Box<dyn Sink>, SinkError> {
    if let Some(dir) = opts.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| SinkError::Io {
            path: dir.display().to_string(),
            message: format!("cannot create the folder: {e}"),
        })?;
    }
    Ok(match opts.format {
        Format::Jsonl => Box::new(files::JsonLines::create(opts.path, opts.append)?),
        Format::Json if opts.append => {
            return Err(SinkError::Io {
                path: opts.path.display().to_string(),
                message: "a JSON array file cannot be added to (`append: true`), only replaced; write JSON Lines (`.jsonl`) to add records to a file".into(),
            })
        }
        Format::Json => Box::new(files::JsonArray::create(opts.path)?),
        Format::Csv => Box::new(csv::CsvSink::create(opts.path, opts.append, opts.columns)?),
        Format::Sqlite => {
            let table = opts.table.unwrap_or("records");
            Box::new(sqlite::SqliteSink::open(opts.path, table, opts.append)?)
        }
    })
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> SinkError + '_ {
    move |e| SinkError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write_all(opts: SinkOptions, recs: &[Value]) {
        let mut s = open(&opts).unwrap();
        for r in recs {
            s.write(r).unwrap();
        }
        s.finish().unwrap();
    }

    #[test]
    fn every_format_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let recs = vec![
            json!({"name": "Ann", "n": 1, "tags": ["a"]}),
            json!({"name": "Bob", "n": 2.5, "extra": true}),
        ];
        let cols = ["name".to_owned(), "n".to_owned(), "tags".to_owned()];
        for (file, format) in [
            ("o.jsonl", Format::Jsonl),
            ("o.json", Format::Json),
            ("o.csv", Format::Csv),
        ] {
            let p = dir.path().join("sub").join(file);
            let columns = (format == Format::Csv).then_some(&cols[..]);
            write_all(
                SinkOptions {
                    path: &p,
                    format,
                    table: None,
                    append: false,
                    columns,
                },
                &recs,
            );
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(text.contains("Ann") && text.contains("Bob"), "{file}: {text}");
        }
        let csv = std::fs::read_to_string(dir.path().join("sub/o.csv")).unwrap();
        assert_eq!(csv, "name,n,tags\nAnn,1,\"[\"\"a\"\"]\"\nBob,2.5,\n");
        let json: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("sub/o.json")).unwrap()).unwrap();
        assert_eq!(json.as_array().unwrap().len(), 2);
    }

    #[test]
    fn csv_refuses_fields_it_would_drop() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o.csv");
        let mut s = open(&SinkOptions {
            path: &p,
            format: Format::Csv,
            table: None,
            append: false,
            columns: None,
        })
        .unwrap();
        s.write(&json!({"a": 1})).unwrap();
        let err = s.write(&json!({"a": 2, "b": 3})).unwrap_err();
        assert!(err.to_string().contains("field `b` that is not a column"), "{err}");
    }

    #[test]
    fn appending_keeps_the_lines_whole_and_rows_under_the_files_header() {
        let dir = tempfile::tempdir().unwrap();
        let opts = |p: &'static str, format| (dir.path().join(p), format);
        let append = |(path, format): &(std::path::PathBuf, Format), recs: &[Value], finish: bool| {
            let mut s = open(&SinkOptions {
                path,
                format: *format,
                table: None,
                append: true,
                columns: None,
            })?;
            for r in recs {
                s.write(r)?;
            }
            if finish {
                s.finish()?;
            }
            Ok::<_, SinkError>(())
        };
        // A last line without a line break gets one first.
        let jsonl = opts("o.jsonl", Format::Jsonl);
        std::fs::write(&jsonl.0, "{\"id\":0}").unwrap();
        append(&jsonl, &[json!({"id": 1})], true).unwrap();
        assert_eq!(std::fs::read_to_string(&jsonl.0).unwrap(), "{\"id\":0}\n{\"id\":1}\n");
        // Rows go under the file's own header, in its order.
        let csv = opts("o.csv", Format::Csv);
        std::fs::write(&csv.0, "v,id\n0,z").unwrap();
        append(&csv, &[json!({"id": "a", "v": "1"}), json!({"id": "b"})], true).unwrap();
        assert_eq!(std::fs::read_to_string(&csv.0).unwrap(), "v,id\n0,z\n1,a\n,b\n");
        let err = append(&csv, &[json!({"id": "c", "w": 2})], true).unwrap_err();
        assert!(err.to_string().contains("field `w` that is not a column"), "{err}");
    }

    #[test]
    fn an_unfinished_sink_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o.jsonl");
        std::fs::write(&p, "{\"old\":true}\n").unwrap();
        let mut s = open(&SinkOptions {
            path: &p,
            format: Format::Jsonl,
            table: None,
            append: false,
            columns: None,
        })
        .unwrap();
        s.write(&json!({"new": true})).unwrap();
        drop(s);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"old\":true}\n");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file is left behind"
        );
    }

    #[test]
    fn sqlite_creates_and_widens_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o.db");
        let recs = vec![
            json!({"name": "Ann", "n": 1}),
            json!({"name": "Bob", "n": 2, "sum": 10.5, "meta": {"a": 1}}),
        ];
        write_all(
            SinkOptions {
                path: &p,
                format: Format::Sqlite,
                table: Some("leads"),
                append: false,
                columns: None,
            },
            &recs,
        );
        write_all(
            SinkOptions {
                path: &p,
                format: Format::Sqlite,
                table: Some("leads"),
                append: true,
                columns: None,
            },
            &recs[..1],
        );
        let conn = rusqlite::Connection::open(&p).unwrap();
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM leads", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 3);
        let (sum, meta): (f64, String) = conn
            .query_row("SELECT sum, meta FROM leads WHERE name = 'Bob'", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((sum, meta.as_str()), (10.5, "{\"a\":1}"));
        // Replacing starts the table afresh.
        write_all(
            SinkOptions {
                path: &p,
                format: Format::Sqlite,
                table: Some("leads"),
                append: false,
                columns: None,
            },
            &recs[..1],
        );
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM leads", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 1);
    }
}
