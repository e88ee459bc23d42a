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
    /// A regular file (not a FIFO or a device, which cannot be synced).
    regular: bool,
}

/// Opens a file for writing; returns the writer and where it will go.
///
/// A new or regular file is written beside its place and moved there whole
/// when committed, with the permissions a new file gets, or those the file
/// had. A symbolic link is followed (the file it points at is replaced, the
/// link stays), and a FIFO or a device is written to in place.
pub fn create(path: &Path, append: bool) -> Result<(BufWriter<File>, Target), SinkError> {
    let err = io_err(path);
    let resolved = resolve_link(path);
    if resolved.is_none() && std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(err(std::io::Error::other(
            "it is a symbolic link that leads back to itself; point it at a file",
        )));
    }
    // A link to a pipe or a device (`/dev/stdout` into a pipe names
    // `pipe:[N]`, which is no path) is written through as it is.
    let special = std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir());
    let path = if special {
        path
    } else {
        resolved.as_deref().unwrap_or(path)
    };
    let existing = std::fs::metadata(path).ok();
    let in_place = existing.as_ref().is_some_and(|m| !m.is_file());
    if append || in_place {
        let had_content = existing.as_ref().is_some_and(|m| m.is_file() && m.len() > 0);
        let mut open = OpenOptions::new();
        if append {
            open.create(true).append(true);
        } else {
            open.write(true);
        }
        let mut f = open.open(path).map_err(&err)?;
        // A file whose last line has no line break would have the first
        // record added to that line.
        if had_content && !in_place && !ends_with_newline(path) {
            f.write_all(b"\n").map_err(&err)?;
        }
        return Ok((
            BufWriter::with_capacity(256 * 1024, f),
            Target {
                temp: None,
                path: path.into(),
                had_content,
                regular: !in_place,
            },
        ));
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // `.flow-<name>.<pid>.<random>.tmp`: a file left by a process that was
    // killed can be told from one being written, and is removed here.
    let stem = temp_stem(path);
    remove_stale_temps(dir, &stem);
    let prefix = format!("{stem}{}.", std::process::id());
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // What a new file gets (the umask applies), not the temporary
        // file's owner-only default.
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let named = builder.tempfile_in(dir).map_err(&err)?;
    if let Some(m) = &existing {
        named.as_file().set_permissions(m.permissions()).map_err(&err)?;
    }
    let (f, temp) = named.into_parts();
    Ok((
        BufWriter::with_capacity(256 * 1024, f),
        Target {
            temp: Some(temp),
            path: path.into(),
            had_content: false,
            regular: true,
        },
    ))
}

/// Whether the file's last byte is a line break.
fn ends_with_newline(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let mut last = [0u8; 1];
    File::open(path)
        .and_then(|mut f| f.seek(SeekFrom::End(-1)).and_then(|_| f.read_exact(&mut last)))
        .is_ok_and(|()| last[0] == b'\n')
}

/// The start of the names of `path`'s temporary files: `.flow-<name>.`,
/// the name cut to leave room within a file name's 255 bytes.
fn temp_stem(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let mut cut = name.len().min(160);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(".flow-{}.", &name[..cut])
}

/// Removes the temporary files of the same target that processes no longer
/// running left behind (a run killed while writing). Those of live
/// processes, and anything not named as flow names them, are let be.
fn remove_stale_temps(dir: &Path, stem: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix(stem))
            .filter(|r| r.ends_with(".tmp"))
        else {
            continue;
        };
        let pid = rest.split_once('.').and_then(|(pid, _)| pid.parse::<i64>().ok());
        if pid.is_some_and(|pid| !crate::process::alive(pid)) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Where a symbolic link at `path` points (through any chain of links),
/// whether or not that file exists yet; None when `path` is no link, or
/// when its links go round in a loop.
pub(crate) fn resolve_link(path: &Path) -> Option<PathBuf> {
    let mut at = path.to_path_buf();
    for _ in 0..40 {
        let link = std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink());
        if !link {
            return (at != path).then_some(at);
        }
        let to = std::fs::read_link(&at).ok()?;
        at = match at.parent() {
            Some(dir) => dir.join(to),
            None => to,
        };
    }
    None
}

impl Target {
    /// Flushes the writer and moves the file into place.
    pub fn commit(self, writer: BufWriter<File>) -> Result<(), SinkError> {
        let err = io_err(&self.path);
        let file = writer.into_inner().map_err(|e| err(e.into_error()))?;
        if self.regular {
            file.sync_data().map_err(&err)?;
        }
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
        // A guess of the size, capped: a page of millions of tiny records
        // must not ask for gigabytes up front.
        let mut buf = Vec::with_capacity(batch.len().saturating_mul(256).min(1 << 20));
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
    fn write_batch(&mut self, batch: &crate::record::Records) -> Result<u64, (u64, SinkError)> {
        // Records as text are written as they came: exactly, whatever
        // their depth or the size of their numbers.
        let crate::record::Records::Raw(raw) = batch else {
            return super::write_each(self, batch);
        };
        let mut n = 0;
        for text in raw.iter() {
            let sep: &[u8] = if self.first { b"\n" } else { b",\n" };
            self.first = false;
            (self.w.write_all(sep))
                .and_then(|()| self.w.write_all(text.as_bytes()))
                .map_err(|e| (n, io_err(&self.target.path)(e)))?;
            n += 1;
        }
        Ok(n)
    }
    fn finish(mut self: Box<Self>) -> Result<(), SinkError> {
        self.w.write_all(b"\n]\n").map_err(io_err(&self.target.path))?;
        self.target.commit(self.w)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    fn write(path: &Path, text: &str) {
        let (mut w, target) = create(path, false).unwrap();
        w.write_all(text.as_bytes()).unwrap();
        target.commit(w).unwrap();
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn temporary_files_of_killed_runs_are_removed_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.jsonl");
        // Left by a process that no longer runs (no PID is that high), by
        // this one (still writing, as far as the next writer knows), for
        // another target, and by someone else.
        let dead = dir.path().join(".flow-out.jsonl.999999999.a1b2c3.tmp");
        let live = dir
            .path()
            .join(format!(".flow-out.jsonl.{}.d4e5f6.tmp", std::process::id()));
        let other = dir.path().join(".flow-other.jsonl.999999999.a1b2c3.tmp");
        let foreign = dir.path().join(".flow-out.jsonl.notes.tmp");
        for f in [&dead, &live, &other, &foreign] {
            std::fs::write(f, "x").unwrap();
        }
        write(&target, "{}\n");
        assert!(!dead.exists());
        assert!(live.exists() && other.exists() && foreign.exists());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "{}\n");
        // Nothing of this write is left beside it.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".flow-out.jsonl.") && n.contains(&format!(".{}.", std::process::id())))
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }

    #[test]
    fn a_replaced_file_keeps_its_permissions_and_a_new_one_gets_the_usual() {
        let dir = tempfile::tempdir().unwrap();
        let made = dir.path().join("made.txt");
        File::create(&made).unwrap();
        let new = dir.path().join("new.jsonl");
        write(&new, "{}\n");
        assert_eq!(mode(&new), mode(&made));
        let shared = dir.path().join("shared.jsonl");
        std::fs::write(&shared, "old\n").unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o640)).unwrap();
        write(&shared, "new\n");
        assert_eq!(
            (mode(&shared), std::fs::read_to_string(&shared).unwrap()),
            (0o640, "new\n".into())
        );
    }

    #[test]
    fn a_link_is_followed_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("data").join("target.jsonl");
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::fs::write(&target, "old\n").unwrap();
        let link = dir.path().join("link.jsonl");
        std::os::unix::fs::symlink("data/target.jsonl", &link).unwrap();
        write(&link, "new\n");
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new\n");
        // A link to a file not there yet makes it.
        let dangling = dir.path().join("later.jsonl");
        std::os::unix::fs::symlink("data/later.jsonl", &dangling).unwrap();
        write(&dangling, "made\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("data/later.jsonl")).unwrap(),
            "made\n"
        );
    }

    #[test]
    fn a_fifo_is_written_to_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            return; // No mkfifo here: nothing to check.
        }
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
        };
        write(&fifo, "through\n");
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
        assert_eq!(reader.join().unwrap(), "through\n");
    }
}
