//! Records and the streams that carry them between steps.
//!
//! Records travel in batches ([`Batch`]: shared [`Records`] and the page
//! marks they carry) so that a batch can go to several consumers without
//! copying. A batch holds parsed values, or
//! records still in the JSON text they arrived in (see [`crate::rawjson`]),
//! parsed only by the consumers that need their fields. A step's output goes to every
//! consumer through an [`Outlet`]; a consumer reads through an [`Inlet`].
//! When every consumer starts with its producer, the link is a bounded
//! channel, so a fast producer waits for a slow consumer and memory stays
//! flat. When a consumer starts later (it waits for another step to finish
//! first), the link is a [`Spool`]: the producer appends records to a
//! temporary file and the consumer reads them at its own pace.

use crate::checkpoint::Marks;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// One record: a JSON object.
pub type Record = Value;

/// Records that travel together, with the marks of the pages they come
/// from (see [`crate::checkpoint`]). Clones share the records.
#[derive(Debug, Clone)]
pub struct Batch {
    records: Arc<Records>,
    marks: Marks,
}

impl Batch {
    /// Records that carry page marks.
    pub fn marked(records: Records, marks: Marks) -> Self {
        Batch {
            records: Arc::new(records),
            marks,
        }
    }

    /// The page marks the records carry.
    pub fn marks(&self) -> &Marks {
        &self.marks
    }

    /// Takes the marks, for a step that settles them or passes them on.
    pub fn take_marks(&mut self) -> Marks {
        std::mem::take(&mut self.marks)
    }

    /// The records, shared.
    pub fn shared(&self) -> Arc<Records> {
        Arc::clone(&self.records)
    }
}

impl std::ops::Deref for Batch {
    type Target = Records;

    fn deref(&self) -> &Records {
        &self.records
    }
}

impl From<Records> for Batch {
    fn from(records: Records) -> Self {
        Batch::marked(records, Marks::default())
    }
}

impl From<Vec<Record>> for Batch {
    fn from(v: Vec<Record>) -> Self {
        Records::Values(v).into()
    }
}

/// A batch of records: values, or JSON text.
#[derive(Debug, Clone)]
pub enum Records {
    /// Parsed records.
    Values(Vec<Record>),
    /// Records as the JSON text they arrived in.
    Raw(crate::rawjson::RawRecords),
}

impl From<Vec<Record>> for Records {
    fn from(v: Vec<Record>) -> Self {
        Records::Values(v)
    }
}

impl Records {
    /// How many records.
    pub fn len(&self) -> usize {
        match self {
            Records::Values(v) => v.len(),
            Records::Raw(r) => r.len(),
        }
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each record as a value (text is parsed on the way).
    pub fn iter(&self) -> Box<dyn Iterator<Item = Result<std::borrow::Cow<'_, Record>, String>> + Send + '_> {
        match self {
            Records::Values(v) => Box::new(v.iter().map(|v| Ok(std::borrow::Cow::Borrowed(v)))),
            Records::Raw(r) => Box::new((0..r.len()).map(|i| r.parsed(i).map(std::borrow::Cow::Owned))),
        }
    }

    /// Record `i` as a script takes it: its text, or its value.
    pub fn input(&self, i: usize) -> crate::lua::Input<'_> {
        match self {
            Records::Values(v) => crate::lua::Input::Value(&v[i]),
            Records::Raw(r) => crate::lua::Input::Text(r.text(i)),
        }
    }

    /// The records with each one that is not an object (an API that lists
    /// IDs or names) made `{"value": ...}`, as an answer that is not an
    /// object is: a record always has fields, to map and to write.
    pub fn into_objects(self) -> Records {
        let all_objects = match &self {
            Records::Values(v) => v.iter().all(Value::is_object),
            Records::Raw(r) => (0..r.len()).all(|i| r.text(i).trim_start().starts_with('{')),
        };
        if all_objects {
            return self;
        }
        let wrap = |v: Value| {
            if v.is_object() {
                v
            } else {
                serde_json::json!({ "value": v })
            }
        };
        Records::Values(match self {
            Records::Values(v) => v.into_iter().map(wrap).collect(),
            Records::Raw(r) => (0..r.len()).map(|i| wrap(r.value(i).unwrap_or(Value::Null))).collect(),
        })
    }

    /// Record `i` parsed.
    pub fn value(&self, i: usize) -> Option<Record> {
        match self {
            Records::Values(v) => v.get(i).cloned(),
            Records::Raw(r) => r.value(i),
        }
    }

    /// The first record.
    pub fn first(&self) -> Option<Record> {
        match self {
            Records::Values(v) => v.first().cloned(),
            Records::Raw(r) => r.value(0),
        }
    }

    /// The records as JSON Lines, appended to `out`.
    pub fn write_jsonl(&self, out: &mut Vec<u8>) -> std::io::Result<()> {
        match self {
            Records::Values(v) => {
                for r in v {
                    serde_json::to_writer(&mut *out, r)?;
                    out.push(b'\n');
                }
            }
            Records::Raw(raw) => {
                if let Some(lines) = raw.as_json_lines() {
                    out.extend_from_slice(lines.as_bytes());
                } else if !raw.multiline() {
                    out.reserve(raw.iter().map(|t| t.len() + 1).sum());
                    for text in raw.iter() {
                        out.extend_from_slice(text.as_bytes());
                        out.push(b'\n');
                    }
                } else {
                    for text in raw.iter() {
                        push_line(out, text)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// One record's JSON text as one line: copied when it is on one line
/// already, made compact when the API spread it over several.
pub fn push_line(out: &mut Vec<u8>, text: &str) -> std::io::Result<()> {
    if memchr::memchr2(b'\n', b'\r', text.as_bytes()).is_some() {
        let v: Value = serde_json::from_str(text)?;
        serde_json::to_writer(&mut *out, &v)?;
    } else {
        out.extend_from_slice(text.as_bytes());
    }
    out.push(b'\n');
    Ok(())
}

/// How many records a producer gathers before it sends them on.
pub const BATCH_SIZE: usize = 512;

/// How much record text a producer gathers at most before it sends a batch:
/// batches count records, and records of megabytes each must not make a
/// batch of gigabytes (one larger than this still goes, alone).
pub const BATCH_BYTES: usize = 4 << 20;

/// Roughly how many bytes `v` takes as JSON text, for [`BATCH_BYTES`].
pub fn approx_size(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => 8,
        Value::String(s) => s.len() + 2,
        Value::Array(a) => a.iter().map(approx_size).sum::<usize>() + a.len() + 2,
        Value::Object(m) => m.iter().map(|(k, v)| k.len() + 4 + approx_size(v)).sum::<usize>() + 2,
    }
}

/// How many batches a channel holds before its producer waits.
pub const CHANNEL_DEPTH: usize = 8;

/// Where a step's records go.
#[derive(Clone, Default)]
pub struct Outlet {
    targets: Vec<Target>,
    /// The first record sent, for `steps.<id>.first` in templates.
    first: std::sync::OnceLock<Record>,
    /// Sees every batch before it is sent (an incremental cursor).
    tap: std::sync::OnceLock<Tap>,
    /// Whether a consumer reads the fields of records kept as text (a Lua
    /// step), which a source can then find as it reads each page.
    fields: bool,
}

/// A function that sees every batch an outlet sends.
pub type Tap = Arc<dyn Fn(&Batch) + Send + Sync>;

#[derive(Clone)]
enum Target {
    Channel(mpsc::Sender<Batch>),
    Spool(Arc<Spool>),
    Forward(Arc<Outlet>),
}

impl Outlet {
    /// An outlet that goes nowhere (a step nobody reads from).
    pub fn none() -> Self {
        Outlet::default()
    }

    /// True when nobody reads this step's records.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Notes that a consumer reads the fields of the records (see
    /// [`Outlet::wants_fields`]).
    pub fn want_fields(&mut self) {
        self.fields = true;
    }

    /// Whether a consumer reads the fields of the records: a source that
    /// keeps records as JSON text then finds where each record's fields are
    /// as it reads them (a page, a JSON Lines file), so that the consumer
    /// need not read the text again for them.
    pub fn wants_fields(&self) -> bool {
        self.fields
    }

    /// Adds a channel consumer and returns its inlet.
    pub fn channel(&mut self) -> Inlet {
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        self.targets.push(Target::Channel(tx));
        Inlet::Channel(rx)
    }

    /// Adds a spool every late consumer reads from; one spool serves them all.
    pub fn spool(&mut self) -> std::io::Result<Arc<Spool>> {
        for t in &self.targets {
            if let Target::Spool(s) = t {
                return Ok(Arc::clone(s));
            }
        }
        let s = Arc::new(Spool::new()?);
        self.targets.push(Target::Spool(Arc::clone(&s)));
        Ok(s)
    }

    /// Sends records on to another outlet too (a `for_each` forwards the
    /// records of its last nested step).
    pub fn forward(&mut self, to: Arc<Outlet>) {
        self.targets.push(Target::Forward(to));
    }

    /// Sends a batch to every consumer. Returns false when no consumer is
    /// left to read it (all have stopped). Each channel consumer gets its
    /// own copy of the batch's marks; a spool keeps none, so records read
    /// later never count as handled.
    pub async fn send(&self, mut batch: Batch) -> bool {
        if let Some(tap) = self.tap.get() {
            tap(&batch);
        }
        if self.first.get().is_none() {
            if let Some(r) = batch.first() {
                let _ = self.first.set(r);
            }
        }
        let marks = batch.take_marks();
        let spooled = self.targets.iter().any(|t| matches!(t, Target::Spool(_)));
        let mut alive = self.targets.is_empty();
        for t in &self.targets {
            let copy = || Batch {
                records: Arc::clone(&batch.records),
                marks: marks.clone(),
            };
            alive |= match t {
                Target::Channel(tx) => tx.send(copy()).await.is_ok(),
                Target::Spool(s) => s.append(&batch).is_ok(),
                Target::Forward(o) => Box::pin(o.send(copy())).await,
            };
        }
        if !spooled {
            // The copies speak for the consumers; nobody reading is handled.
            marks.settle();
        }
        alive
    }

    /// Lets `tap` see every batch from now on (one tap per outlet).
    pub fn set_tap(&self, tap: Tap) {
        let _ = self.tap.set(tap);
    }

    /// The first record sent, if any.
    pub fn first(&self) -> Option<Record> {
        self.first.get().cloned()
    }

    /// Marks the end of the stream for spools (channels end when dropped).
    pub fn close(&self) {
        for t in &self.targets {
            if let Target::Spool(s) = t {
                s.close();
            }
        }
    }
}

/// Where a step reads its records from.
pub enum Inlet {
    /// No records.
    Empty,
    /// One batch, once (the `item` of a `for_each`).
    Once(Option<Batch>),
    /// A channel from a producer that runs alongside.
    Channel(mpsc::Receiver<Batch>),
    /// A spool written by a producer that may have finished long ago.
    Spool(SpoolReader),
    /// Several sources merged.
    Merged(mpsc::Receiver<Result<Batch, String>>),
}

impl Inlet {
    /// One inlet over several: their batches as they come (the order
    /// between sources is whatever arrives first).
    pub fn merge(mut inlets: Vec<Inlet>) -> Inlet {
        match inlets.len() {
            0 => Inlet::Empty,
            1 => inlets.remove(0),
            _ => {
                let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
                for mut inlet in inlets {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        while let Some(batch) = inlet.next().await {
                            match batch {
                                Ok(b) => {
                                    if tx.send(Ok(b)).await.is_err() {
                                        return;
                                    }
                                }
                                Err(e) => {
                                    // The consumer fails with it rather than end early.
                                    let _ = tx.send(Err(e)).await;
                                    return;
                                }
                            }
                        }
                    });
                }
                Inlet::Merged(rx)
            }
        }
    }

    /// The next batch, or `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<Result<Batch, String>> {
        match self {
            Inlet::Empty => None,
            Inlet::Once(b) => b.take().map(Ok),
            Inlet::Channel(rx) => rx.recv().await.map(Ok),
            Inlet::Spool(r) => r.next().await,
            Inlet::Merged(rx) => rx.recv().await,
        }
    }
}

#[derive(Clone, Copy, Default)]
struct SpoolState {
    bytes: u64,
    done: bool,
}

/// A temporary file of JSON lines with a live end: readers follow the writer.
pub struct Spool {
    file: Mutex<std::fs::File>,
    path: tempfile::TempPath,
    state: watch::Sender<SpoolState>,
}

impl Spool {
    fn new() -> std::io::Result<Self> {
        let named = tempfile::Builder::new()
            .prefix("flow-spool-")
            .suffix(".jsonl")
            .tempfile()?;
        let (file, path) = named.into_parts();
        let (state, _) = watch::channel(SpoolState::default());
        Ok(Spool {
            file: Mutex::new(file),
            path,
            state,
        })
    }

    fn append(&self, batch: &Records) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(batch.len().saturating_mul(128).min(1 << 20));
        batch.write_jsonl(&mut buf)?;
        let mut file = self.file.lock().map_err(|_| std::io::Error::other("spool poisoned"))?;
        file.write_all(&buf)?;
        self.state.send_modify(|s| s.bytes += buf.len() as u64);
        Ok(())
    }

    fn close(&self) {
        self.state.send_modify(|s| s.done = true);
    }

    /// A reader from the start of the spool.
    pub fn reader(self: &Arc<Self>) -> std::io::Result<SpoolReader> {
        let file = std::fs::File::open(&self.path)?;
        Ok(SpoolReader {
            spool: Arc::clone(self),
            file: BufReader::new(file),
            pos: 0,
            state: self.state.subscribe(),
        })
    }
}

/// Reads a spool from the start, waiting for the writer when it catches up.
pub struct SpoolReader {
    spool: Arc<Spool>,
    file: BufReader<std::fs::File>,
    pos: u64,
    state: watch::Receiver<SpoolState>,
}

impl SpoolReader {
    async fn next(&mut self) -> Option<Result<Batch, String>> {
        loop {
            let st = *self.state.borrow_and_update();
            if self.pos < st.bytes {
                return Some(self.read_upto(st.bytes));
            }
            if st.done {
                return None;
            }
            if self.state.changed().await.is_err() {
                // The writer is gone; whatever was written is all there is.
                let st = *self.state.borrow();
                if self.pos < st.bytes {
                    return Some(self.read_upto(st.bytes));
                }
                return None;
            }
        }
    }

    fn read_upto(&mut self, end: u64) -> Result<Batch, String> {
        let _keep = &self.spool;
        let mut text = Vec::with_capacity(BATCH_SIZE * 256);
        if let Err(e) = self.file.seek(SeekFrom::Start(self.pos)) {
            return Err(format!("cannot read the spool file: {e}"));
        }
        let mut limited = (&mut self.file).take(end - self.pos);
        // The spool holds JSON lines flow wrote itself: they go on as text.
        for _ in 0..BATCH_SIZE {
            if text.len() >= BATCH_BYTES {
                break;
            }
            let n = limited
                .read_until(b'\n', &mut text)
                .map_err(|e| format!("cannot read the spool file: {e}"))?;
            if n == 0 {
                break;
            }
            self.pos += n as u64;
        }
        let text = String::from_utf8(text).map_err(|e| format!("corrupt spool file: {e}"))?;
        Ok(Records::Raw(crate::rawjson::RawRecords::from_lines(text)).into())
    }
}

/// Gathers records into batches and sends them through an outlet.
pub struct Batcher<'a> {
    outlet: &'a Outlet,
    buf: Vec<Record>,
    /// About how many bytes `buf` holds.
    bytes: usize,
    /// Records sent so far.
    pub sent: u64,
}

impl<'a> Batcher<'a> {
    /// A batcher over an outlet.
    pub fn new(outlet: &'a Outlet) -> Self {
        Batcher {
            outlet,
            buf: Vec::with_capacity(BATCH_SIZE),
            bytes: 0,
            sent: 0,
        }
    }

    /// Adds a record; sends a full batch. Returns false when nobody reads any more.
    pub async fn push(&mut self, r: Record) -> bool {
        self.bytes += approx_size(&r);
        self.buf.push(r);
        if self.buf.len() >= BATCH_SIZE || self.bytes >= BATCH_BYTES {
            return self.flush().await;
        }
        true
    }

    /// Sends what is gathered.
    pub async fn flush(&mut self) -> bool {
        if self.buf.is_empty() {
            return true;
        }
        let batch = std::mem::replace(&mut self.buf, Vec::with_capacity(BATCH_SIZE));
        self.bytes = 0;
        self.sent += batch.len() as u64;
        self.outlet.send(Records::Values(batch).into()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn spool_readers_follow_a_live_writer_and_start_late() {
        let mut out = Outlet::none();
        let spool = out.spool().unwrap();
        let mut early = Inlet::Spool(spool.reader().unwrap());
        out.send(vec![json!({"n": 1}), json!({"n": 2})].into()).await;
        let first = early.next().await.unwrap().unwrap();
        assert_eq!(first.len(), 2);
        out.send(vec![json!({"n": 3})].into()).await;
        out.close();
        assert_eq!(early.next().await.unwrap().unwrap().first(), Some(json!({"n": 3})));
        assert!(early.next().await.is_none());
        // A reader that starts after the end sees everything.
        let mut late = Inlet::Spool(spool.reader().unwrap());
        let mut n = 0;
        while let Some(b) = late.next().await {
            n += b.unwrap().len();
        }
        assert_eq!(n, 3);
    }

    #[tokio::test]
    async fn merged_inlets_deliver_every_batch() {
        let mut a = Outlet::none();
        let mut b = Outlet::none();
        let merged = Inlet::merge(vec![a.channel(), b.channel()]);
        tokio::spawn(async move {
            a.send(vec![json!({"from": "a"})].into()).await;
            b.send(vec![json!({"from": "b"}), json!({"from": "b"})].into()).await;
        });
        let mut inlet = merged;
        let mut n = 0;
        while let Some(batch) = inlet.next().await {
            n += batch.unwrap().len();
        }
        assert_eq!(n, 3);
    }

    #[tokio::test]
    async fn channel_fan_out_reaches_every_consumer() {
        let mut out = Outlet::none();
        let a = out.channel();
        let b = out.channel();
        let producer = tokio::spawn(async move {
            let mut batcher = Batcher::new(&out);
            for i in 0..5000 {
                batcher.push(json!({"i": i})).await;
            }
            batcher.flush().await;
            batcher.sent
        });
        let count = |mut inlet: Inlet| async move {
            let mut n = 0;
            while let Some(b) = inlet.next().await {
                n += b.unwrap().len();
            }
            n
        };
        let (na, nb) = tokio::join!(count(a), count(b));
        assert_eq!((na, nb), (5000, 5000));
        assert_eq!(producer.await.unwrap(), 5000);
    }
}
