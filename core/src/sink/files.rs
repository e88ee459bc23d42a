//! File sinks: JSON Lines and a JSON array, and the replace-on-success file
//! they (and CSV) write through.

use super::{io_err, Sink, SinkError};
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Where a file being written ends up: appended to in place, or a temporary
/// file that replaces the target when committed.
pub struct Target {
    temp: Option<tempfile::TempPath>,
    pub path: PathBuf,
    /// The file already had content (appending to it).
    pub had_content: bool,
}

/// Opens a file for writing; returns the writer and where it will go.
pub fn create(path: &Path, append: bool) -> Result<(BufWriter<File>, Target), SinkError> {
    let err = io_err(path);
    if append {
        let had_content = std::fs::metadata(path).map(|m| m.len() > 0).unwrap_or(false);
        let f = OpenOptions::new().create(true).append(true).open(path).map_err(&err)?;
        return Ok((
            BufWriter::with_capacity(256 * 1024, f),
            Target {
                temp: None,
                path: path.into(),
                had_content,
            },
        ));
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let named = tempfile::Builder::new()
        .prefix(".flow-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(&err)?;
    let (f, temp) = named.into_parts();
    Ok((
        BufWriter::with_capacity(256 * 1024, f),
        Target {
            temp: Some(temp),
            path: path.into(),
            had_content: false,
        },
    ))
}

impl Target {
    /// Flushes the writer and moves the file into place.
    pub fn commit(self, writer: BufWriter<File>) -> Result<(), SinkError> {
        let err = io_err(&self.path);
        let file = writer.into_inner().map_err(|e| err(e.into_error()))?;
        file.sync_data().map_err(&err)?;
        if let Some(temp) = self.temp {
            temp.persist(&self.path).map_err(|e| err(e.error))?;
        }
        Ok(())
    }
}

fn json_err(path: &Path) -> impl Fn(serde_json::Error) -> SinkError + '_ {
    move |e| SinkError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

pub struct JsonLines {
    w: BufWriter<File>,
    target: Target,
}

impl JsonLines {
    pub fn create(path: &Path, append: bool) -> Result<Self, SinkError> {
        let (w, target) = create(path, append)?;
        Ok(JsonLines { w, target })
    }
}

impl Sink for JsonLines {
    fn write(&mut self, record: &Value) -> Result<(), SinkError> {
        serde_json::to_writer(&mut self.w, record).map_err(json_err(&self.target.path))?;
        self.w.write_all(b"\n").map_err(io_err(&self.target.path))
    }
    fn write_batch(&mut self, batch: &crate::record::Records) -> Result<u64, (u64, SinkError)> {
        // Records as text are written as they came, one a line.
        if let crate::record::Records::Raw(raw) = batch {
            if let Some(lines) = raw.as_json_lines() {
                self.w
                    .write_all(lines.as_bytes())
                    .map_err(|e| (0, io_err(&self.target.path)(e)))?;
                return Ok(batch.len() as u64);
            }
        }
        let mut buf = Vec::with_capacity(batch.len() * 256);
        batch
            .write_jsonl(&mut buf)
            .map_err(|e| (0, io_err(&self.target.path)(e)))?;
        self.w.write_all(&buf).map_err(|e| (0, io_err(&self.target.path)(e)))?;
        Ok(batch.len() as u64)
    }
    fn finish(self: Box<Self>) -> Result<(), SinkError> {
        self.target.commit(self.w)
    }
}

pub struct JsonArray {
    w: BufWriter<File>,
    target: Target,
    first: bool,
}

impl JsonArray {
    pub fn create(path: &Path) -> Result<Self, SinkError> {
        let (mut w, target) = create(path, false)?;
        w.write_all(b"[").map_err(io_err(path))?;
        Ok(JsonArray { w, target, first: true })
    }
}

impl Sink for JsonArray {
    fn write(&mut self, record: &Value) -> Result<(), SinkError> {
        let sep: &[u8] = if self.first { b"\n" } else { b",\n" };
        self.first = false;
        self.w.write_all(sep).map_err(io_err(&self.target.path))?;
        serde_json::to_writer(&mut self.w, record).map_err(json_err(&self.target.path))
    }
    fn finish(mut self: Box<Self>) -> Result<(), SinkError> {
        self.w.write_all(b"\n]\n").map_err(io_err(&self.target.path))?;
        self.target.commit(self.w)
    }
}
