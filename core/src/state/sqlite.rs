//! The embedded store: one SQLite file in WAL mode.

use super::{
    key_digest, Checkpoint, CursorRecord, ForgetKeys, KeyCounts, KeyOutcome, KeyState, Retention, RunRecord,
    StateError, StateResult, StateStore,
};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::Mutex;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id           TEXT PRIMARY KEY,
    workflow     TEXT NOT NULL,
    file         TEXT NOT NULL,
    status       TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    ended_at     TEXT,
    inputs       TEXT NOT NULL,
    resumed_from TEXT,
    report       TEXT,
    error        TEXT,
    pid          INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_workflow ON runs (workflow, started_at);
CREATE TABLE IF NOT EXISTS cursors (
    workflow   TEXT NOT NULL,
    step       TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (workflow, step)
);
CREATE TABLE IF NOT EXISTS write_keys (
    workflow TEXT NOT NULL,
    step     TEXT NOT NULL,
    key      TEXT NOT NULL,
    status   TEXT NOT NULL,
    run      TEXT NOT NULL,
    at       TEXT NOT NULL,
    PRIMARY KEY (workflow, step, key)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id     TEXT NOT NULL,
    step       TEXT NOT NULL,
    window     TEXT NOT NULL,
    pages      INTEGER NOT NULL,
    cursor     TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (run_id, step)
);
PRAGMA user_version = 1;
";

/// A state store in one SQLite file.
pub struct SqliteStore {
    path: String,
    db: Mutex<Connection>,
    /// The runs this process began: a run recorded with this process's
    /// ID and not among them was a process before it with the same ID (a
    /// container's PID 1, run again).
    mine: Mutex<Vec<String>>,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl SqliteStore {
    /// The tables of an existing SQLite file that is not a store (it has
    /// tables, and no `runs` among them), read without changing the file;
    /// None for a store, a new or empty file, or one SQLite cannot read
    /// (opening it says why).
    pub fn foreign_tables(path: &Path) -> Option<Vec<String>> {
        let db = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
        let mut st = db
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .ok()?;
        let tables: Vec<String> = st.query_map([], |r| r.get(0)).ok()?.collect::<Result<_, _>>().ok()?;
        (!tables.is_empty() && !tables.iter().any(|t| t == "runs")).then_some(tables)
    }

    /// Opens the store, creating the file and its folder when missing.
    pub fn open(path: &Path) -> StateResult<Self> {
        let shown = path.display().to_string();
        let fail = |message: String| StateError {
            path: shown.clone(),
            message,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
        }
        let db = Connection::open(path).map_err(|e| fail(e.to_string()))?;
        db.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| fail(e.to_string()))?;
        // WAL: readers never block the writer, and a crash at any instant
        // leaves the last committed transaction intact. Switching to it, and
        // creating the tables, may find another run doing the same to a new
        // file; SQLite answers that with "locked" at once rather than
        // waiting, so it is tried again for as long as the busy timeout.
        let started = std::time::Instant::now();
        let version: i64 = loop {
            let setup = db
                .pragma_update(None, "journal_mode", "WAL")
                .and_then(|()| db.pragma_update(None, "synchronous", "NORMAL"))
                .and_then(|()| db.query_row("PRAGMA user_version", [], |r| r.get(0)));
            match setup {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy && started.elapsed().as_secs() < 10 =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                other => break other.map_err(|e| fail(e.to_string()))?,
            }
        };
        if version > 1 {
            return Err(fail(format!(
                "the file was written by a newer flow (schema {version}); upgrade flow or use another --state file"
            )));
        }
        db.execute_batch(SCHEMA).map_err(|e| fail(e.to_string()))?;
        Ok(SqliteStore {
            path: shown,
            db: Mutex::new(db),
            mine: Mutex::default(),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> StateResult<T> {
        let mut db = self
            .db
            .lock()
            .map_err(|_| self.fail("the store was poisoned by a crash".into()))?;
        f(&mut db).map_err(|e| self.fail(e.to_string()))
    }

    fn fail(&self, message: String) -> StateError {
        StateError {
            path: self.path.clone(),
            message,
        }
    }
}

fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    let json = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok());
    Ok(RunRecord {
        id: r.get(0)?,
        workflow: r.get(1)?,
        file: r.get(2)?,
        status: r.get(3)?,
        started_at: r.get(4)?,
        ended_at: r.get(5)?,
        inputs: json(r.get(6)?).unwrap_or(serde_json::Value::Null),
        resumed_from: r.get(7)?,
        report: json(r.get(8)?),
        error: r.get(9)?,
    })
}

const RUN_COLUMNS: &str = "id, workflow, file, status, started_at, ended_at, inputs, resumed_from, report, error";

impl StateStore for SqliteStore {
    fn begin_run(&self, run: &RunRecord) -> StateResult<()> {
        self.with(|db| {
            db.execute(
                "INSERT INTO runs (id, workflow, file, status, started_at, inputs, resumed_from, pid)
                 VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?6, ?7)",
                params![
                    run.id,
                    run.workflow,
                    run.file,
                    run.started_at,
                    run.inputs.to_string(),
                    run.resumed_from,
                    i64::from(std::process::id())
                ],
            )
            .map(|_| ())
        })?;
        if let Ok(mut mine) = self.mine.lock() {
            mine.push(run.id.clone());
        }
        Ok(())
    }

    fn finish_run(&self, id: &str, status: &str, report: &serde_json::Value, error: Option<&str>) -> StateResult<()> {
        self.with(|db| {
            db.execute(
                "UPDATE runs SET status = ?2, ended_at = ?3, report = ?4, error = ?5 WHERE id = ?1",
                params![id, status, now(), report.to_string(), error],
            )
            .map(|_| ())
        })
    }

    fn mark_interrupted(&self) -> StateResult<()> {
        self.with(|db| {
            let running: Vec<(String, i64)> = db
                .prepare("SELECT id, pid FROM runs WHERE status = 'running'")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mine = self.mine.lock().map(|m| m.clone()).unwrap_or_default();
            for (id, pid) in running {
                let live = if pid == i64::from(std::process::id()) {
                    mine.contains(&id)
                } else {
                    crate::process::alive(pid)
                };
                if !live {
                    db.execute(
                        "UPDATE runs SET status = 'interrupted', error = 'the process stopped before the run ended' WHERE id = ?1",
                        params![id],
                    )?;
                }
            }
            Ok(())
        })
    }

    fn runs(&self, workflow: Option<&str>, limit: usize) -> StateResult<Vec<RunRecord>> {
        self.with(|db| {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut stmt = db.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE ?1 IS NULL OR workflow = ?1 ORDER BY started_at DESC, id DESC LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![workflow, limit], run_from_row)?;
            rows.collect()
        })
    }

    fn run(&self, id: &str) -> StateResult<Option<RunRecord>> {
        let found = self.with(|db| {
            let mut stmt = db.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1 OR id LIKE ?1 || '%' ORDER BY id = ?1 DESC LIMIT 2"
            ))?;
            let rows = stmt.query_map(params![id], run_from_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.clone())),
            [first, ..] if first.id == id => Ok(Some(first.clone())),
            _ => Err(self.fail(format!("`{id}` matches several runs; give more of the ID"))),
        }
    }

    fn resumable(&self, workflow: &str) -> StateResult<Option<RunRecord>> {
        let last = self.runs(Some(workflow), 1)?;
        Ok(last
            .into_iter()
            .find(|r| r.status == "failed" || r.status == "interrupted"))
    }

    fn prune(&self, keep: Retention) -> StateResult<usize> {
        let cutoff = (chrono::Utc::now() - chrono::Duration::days(i64::from(keep.days)))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        self.with(|db| {
            let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let old = tx.execute(
                "DELETE FROM runs WHERE status != 'running' AND started_at < ?1",
                params![cutoff],
            )?;
            let extra = tx.execute(
                "DELETE FROM runs WHERE status != 'running' AND id NOT IN
                   (SELECT id FROM runs ORDER BY started_at DESC, id DESC LIMIT ?1)",
                params![i64::from(keep.runs)],
            )?;
            tx.execute("DELETE FROM checkpoints WHERE run_id NOT IN (SELECT id FROM runs)", [])?;
            tx.commit()?;
            Ok(old + extra)
        })
    }

    fn cursors(&self, workflow: &str) -> StateResult<Vec<CursorRecord>> {
        self.with(|db| {
            let mut stmt =
                db.prepare("SELECT step, value, updated_at FROM cursors WHERE workflow = ?1 ORDER BY step")?;
            let rows = stmt.query_map(params![workflow], |r| {
                Ok(CursorRecord {
                    step: r.get(0)?,
                    value: r.get(1)?,
                    updated_at: r.get(2)?,
                })
            })?;
            rows.collect()
        })
    }

    fn set_cursors(&self, workflow: &str, values: &[(String, String)]) -> StateResult<()> {
        self.with(|db| {
            let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let at = now();
            for (step, value) in values {
                tx.execute(
                    "INSERT INTO cursors (workflow, step, value, updated_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (workflow, step) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    params![workflow, step, value, at],
                )?;
            }
            tx.commit()
        })
    }

    fn set_checkpoint(&self, run: &str, c: &Checkpoint) -> StateResult<()> {
        self.with(|db| {
            db.execute(
                "INSERT INTO checkpoints (run_id, step, window, pages, cursor, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (run_id, step) DO UPDATE SET window = excluded.window, pages = excluded.pages,
                   cursor = excluded.cursor, updated_at = excluded.updated_at",
                params![run, c.step, c.window, c.pages as i64, c.cursor, now()],
            )
            .map(|_| ())
        })
    }

    fn checkpoints(&self, run: &str) -> StateResult<Vec<Checkpoint>> {
        self.with(|db| {
            let mut stmt =
                db.prepare("SELECT step, window, pages, cursor FROM checkpoints WHERE run_id = ?1 ORDER BY step")?;
            let rows = stmt.query_map(params![run], |r| {
                Ok(Checkpoint {
                    step: r.get(0)?,
                    window: r.get(1)?,
                    pages: r.get::<_, i64>(2)?.max(0) as u64,
                    cursor: r.get(3)?,
                })
            })?;
            rows.collect()
        })
    }

    fn key_state(&self, workflow: &str, step: &str, key: &str) -> StateResult<Option<KeyState>> {
        let status: Option<String> = self.with(|db| {
            db.query_row(
                "SELECT status FROM write_keys WHERE workflow = ?1 AND step = ?2 AND key = ?3",
                params![workflow, step, key_digest(key)],
                |r| r.get(0),
            )
            .optional()
        })?;
        Ok(status.map(|s| match s.as_str() {
            "done" => KeyState::Done,
            // `sending`: a run claimed it and never settled it.
            _ => KeyState::Uncertain,
        }))
    }

    fn claim_key(
        &self,
        workflow: &str,
        step: &str,
        key: &str,
        run: &str,
        retake: bool,
    ) -> StateResult<Option<KeyState>> {
        let digest = key_digest(key);
        self.with(|db| {
            // One transaction: of two runs claiming at once, one gets it, and
            // the other reads why not as it stands then. With `retake`, so is
            // a write left uncertain, or left `sending` by a run whose
            // process died.
            let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let claimed = tx.execute(
                "INSERT INTO write_keys (workflow, step, key, status, run, at) VALUES (?1, ?2, ?3, 'sending', ?4, ?5)
                 ON CONFLICT (workflow, step, key) DO UPDATE SET status = 'sending', run = excluded.run, at = excluded.at
                 WHERE ?6 AND (write_keys.status = 'uncertain' OR write_keys.status = 'sending'
                   AND write_keys.run <> excluded.run
                   AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = write_keys.run AND r.status = 'running'))",
                params![workflow, step, digest, run, now(), retake],
            )?;
            let held = if claimed == 1 {
                None
            } else {
                // Held: done, uncertain, or being sent by a run that is still
                // running (a run whose process died is `interrupted` by then).
                let (status, live): (String, bool) = tx.query_row(
                    "SELECT k.status, k.run = ?4 OR EXISTS (SELECT 1 FROM runs r WHERE r.id = k.run AND r.status = 'running')
                     FROM write_keys k WHERE k.workflow = ?1 AND k.step = ?2 AND k.key = ?3",
                    params![workflow, step, digest, run],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                Some(match status.as_str() {
                    "done" => KeyState::Done,
                    "sending" if live => KeyState::Sending,
                    _ => KeyState::Uncertain,
                })
            };
            tx.commit()?;
            Ok(held)
        })
    }

    fn settle_key(&self, workflow: &str, step: &str, key: &str, outcome: KeyOutcome) -> StateResult<()> {
        let digest = key_digest(key);
        self.with(|db| {
            match outcome {
                KeyOutcome::Released => db.execute(
                    "DELETE FROM write_keys WHERE workflow = ?1 AND step = ?2 AND key = ?3",
                    params![workflow, step, digest],
                ),
                KeyOutcome::Done | KeyOutcome::Uncertain => db.execute(
                    "UPDATE write_keys SET status = ?4, at = ?5 WHERE workflow = ?1 AND step = ?2 AND key = ?3",
                    params![
                        workflow,
                        step,
                        digest,
                        if outcome == KeyOutcome::Done {
                            "done"
                        } else {
                            "uncertain"
                        },
                        now()
                    ],
                ),
            }
            .map(|_| ())
        })
    }

    fn key_counts(&self, workflow: &str) -> StateResult<Vec<KeyCounts>> {
        self.with(|db| {
            let mut stmt = db.prepare(
                "SELECT step, sum(status = 'done'), sum(status != 'done') FROM write_keys
                 WHERE workflow = ?1 GROUP BY step ORDER BY step",
            )?;
            let rows = stmt.query_map(params![workflow], |r| {
                Ok(KeyCounts {
                    step: r.get(0)?,
                    done: r.get::<_, i64>(1)?.max(0) as u64,
                    uncertain: r.get::<_, i64>(2)?.max(0) as u64,
                })
            })?;
            rows.collect()
        })
    }

    fn reset(&self, workflow: &str, step: Option<&str>, keys: ForgetKeys) -> StateResult<(usize, usize)> {
        self.with(|db| {
            let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let cursors = tx.execute(
                "DELETE FROM cursors WHERE workflow = ?1 AND (?2 IS NULL OR step = ?2)",
                params![workflow, step],
            )?;
            let keys = match keys {
                ForgetKeys::None => 0,
                ForgetKeys::All => tx.execute(
                    "DELETE FROM write_keys WHERE workflow = ?1 AND (?2 IS NULL OR step = ?2)",
                    params![workflow, step],
                )?,
                // Uncertain, or left `sending` by a run that is not running.
                ForgetKeys::Uncertain => tx.execute(
                    "DELETE FROM write_keys WHERE workflow = ?1 AND (?2 IS NULL OR step = ?2)
                     AND (status = 'uncertain' OR status = 'sending' AND NOT EXISTS
                       (SELECT 1 FROM runs r WHERE r.id = write_keys.run AND r.status = 'running'))",
                    params![workflow, step],
                )?,
            };
            tx.commit()?;
            Ok((cursors, keys))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, workflow: &str, started_at: &str) -> RunRecord {
        RunRecord {
            id: id.into(),
            workflow: workflow.into(),
            file: "w.yaml".into(),
            status: "running".into(),
            started_at: started_at.into(),
            ended_at: None,
            inputs: serde_json::json!({"a": 1}),
            resumed_from: None,
            report: None,
            error: None,
        }
    }

    #[test]
    fn keys_move_from_claimed_to_settled() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("x/state.db")).unwrap();
        assert_eq!(s.key_state("w", "lead", "+79990001122").unwrap(), None);
        assert_eq!(s.claim_key("w", "lead", "+79990001122", "r1", false).unwrap(), None);
        // Claimed: not again, by this run or another.
        assert_eq!(
            s.claim_key("w", "lead", "+79990001122", "r1", true).unwrap(),
            Some(KeyState::Sending)
        );
        // `r1` is not recorded as running: a run that died mid-send, whose
        // write may be sent again only where that is safe.
        assert_eq!(
            s.claim_key("w", "lead", "+79990001122", "r2", false).unwrap(),
            Some(KeyState::Uncertain)
        );
        // Claimed and never settled: a crash in flight.
        assert_eq!(
            s.key_state("w", "lead", "+79990001122").unwrap(),
            Some(KeyState::Uncertain)
        );
        s.settle_key("w", "lead", "+79990001122", KeyOutcome::Done).unwrap();
        assert_eq!(s.key_state("w", "lead", "+79990001122").unwrap(), Some(KeyState::Done));
        assert_eq!(
            s.claim_key("w", "lead", "+79990001122", "r2", true).unwrap(),
            Some(KeyState::Done)
        );
        assert_eq!(s.claim_key("w", "lead", "k2", "r1", false).unwrap(), None);
        s.settle_key("w", "lead", "k2", KeyOutcome::Released).unwrap();
        assert_eq!(s.key_state("w", "lead", "k2").unwrap(), None);
        // Uncertain: claimed again only where a second send is safe.
        assert_eq!(s.claim_key("w", "lead", "k3", "r1", false).unwrap(), None);
        s.settle_key("w", "lead", "k3", KeyOutcome::Uncertain).unwrap();
        assert_eq!(
            s.claim_key("w", "lead", "k3", "r2", false).unwrap(),
            Some(KeyState::Uncertain)
        );
        assert_eq!(s.claim_key("w", "lead", "k3", "r2", true).unwrap(), None);
        s.settle_key("w", "lead", "k3", KeyOutcome::Done).unwrap();
        // Left `sending` by a run still running: being sent, not taken.
        s.begin_run(&run("live", "w", "2026-01-01T00:00:00Z")).unwrap();
        assert_eq!(s.claim_key("w", "lead", "k4", "live", true).unwrap(), None);
        assert_eq!(
            s.claim_key("w", "lead", "k4", "r2", true).unwrap(),
            Some(KeyState::Sending)
        );
        // Left `sending` by a run that died: taken again where that is safe.
        assert_eq!(s.claim_key("w", "lead", "k5", "dead", true).unwrap(), None);
        assert_eq!(
            s.claim_key("w", "lead", "k5", "r2", false).unwrap(),
            Some(KeyState::Uncertain)
        );
        assert_eq!(s.claim_key("w", "lead", "k5", "r2", true).unwrap(), None);
        s.settle_key("w", "lead", "k5", KeyOutcome::Done).unwrap();
        // Forgetting the uncertain ones takes a write left `sending` by a
        // run that died, and leaves the one a running run is sending.
        assert_eq!(s.claim_key("w", "lead", "k6", "dead", false).unwrap(), None);
        assert_eq!(s.reset("w", None, ForgetKeys::Uncertain).unwrap(), (0, 1));
        assert_eq!(s.key_state("w", "lead", "k6").unwrap(), None);
        assert_eq!(
            s.claim_key("w", "lead", "k4", "r2", true).unwrap(),
            Some(KeyState::Sending)
        );
        let counts = s.key_counts("w").unwrap();
        assert_eq!((counts[0].done, counts[0].uncertain), (3, 1));
        // Keys are kept as digests, never as given.
        let raw = std::fs::read(dir.path().join("x/state.db")).unwrap();
        let wal = std::fs::read(dir.path().join("x/state.db-wal")).unwrap_or_default();
        let needle = b"+79990001122";
        assert!(!raw.windows(needle.len()).any(|w| w == needle));
        assert!(!wal.windows(needle.len()).any(|w| w == needle));
    }

    #[test]
    fn history_prunes_and_finds_the_run_to_resume() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("state.db")).unwrap();
        s.begin_run(&run("2020-a", "w", "2020-01-01T00:00:00.000Z")).unwrap();
        s.finish_run("2020-a", "succeeded", &serde_json::json!({}), None)
            .unwrap();
        for i in 0..5 {
            let id = format!("r{i}");
            s.begin_run(&run(&id, "w", &now())).unwrap();
            s.finish_run(
                &id,
                if i == 4 { "failed" } else { "succeeded" },
                &serde_json::json!({"i": i}),
                None,
            )
            .unwrap();
        }
        assert_eq!(s.resumable("w").unwrap().map(|r| r.id), Some("r4".into()));
        assert_eq!(s.run("r").err().map(|e| e.message.contains("several")), Some(true));
        assert_eq!(
            s.run("r3").unwrap().and_then(|r| r.report),
            Some(serde_json::json!({"i": 3}))
        );
        // The 2020 run is too old; of the rest only three are kept.
        let removed = s.prune(Retention { days: 30, runs: 3 }).unwrap();
        assert_eq!(removed, 3);
        let ids: Vec<String> = s.runs(Some("w"), 10).unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["r4", "r3", "r2"]);
    }

    #[test]
    fn runs_of_a_dead_process_are_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("state.db")).unwrap();
        s.begin_run(&run("mine", "w", &now())).unwrap();
        s.with(|db| {
            db.execute(
                "INSERT INTO runs (id, workflow, file, status, started_at, inputs, pid)
                 VALUES ('gone', 'w', 'w.yaml', 'running', ?1, '{}', 999999999)",
                params![now()],
            )
        })
        .unwrap();
        // A run recorded with this process's ID that this process did not
        // begin: an earlier process that had the same ID.
        s.with(|db| {
            db.execute(
                "INSERT INTO runs (id, workflow, file, status, started_at, inputs, pid)
                 VALUES ('same-pid', 'w', 'w.yaml', 'running', ?1, '{}', ?2)",
                params![now(), i64::from(std::process::id())],
            )
        })
        .unwrap();
        s.mark_interrupted().unwrap();
        assert_eq!(s.run("gone").unwrap().map(|r| r.status), Some("interrupted".into()));
        assert_eq!(s.run("same-pid").unwrap().map(|r| r.status), Some("interrupted".into()));
        assert_eq!(s.run("mine").unwrap().map(|r| r.status), Some("running".into()));
    }

    #[test]
    fn cursors_move_together_and_reset() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("state.db")).unwrap();
        s.set_cursors("w", &[("a".into(), "1".into()), ("b".into(), "2024-01-02".into())])
            .unwrap();
        s.set_cursors("w", &[("a".into(), "5".into())]).unwrap();
        let c = s.cursors("w").unwrap();
        assert_eq!((c[0].value.as_str(), c[1].value.as_str()), ("5", "2024-01-02"));
        assert_eq!(s.reset("w", Some("a"), ForgetKeys::None).unwrap(), (1, 0));
        assert_eq!(s.cursors("w").unwrap().len(), 1);
    }
}
