//! A table in a SQLite file: created when missing, with columns from the
//! records; a record with a new field adds the column. Rows are inserted in
//! large transactions.

use super::{Sink, SinkError};
use rusqlite::types::Value as SqlValue;
use rusqlite::Connection;
use serde_json::Value;
use std::path::Path;

pub struct SqliteSink {
    conn: Connection,
    path: String,
    table: String,
    columns: Vec<String>,
    insert_sql: String,
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn sql_type(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "INTEGER",
        Value::Number(n) if n.is_i64() || n.is_u64() => "INTEGER",
        Value::Number(_) => "REAL",
        _ => "TEXT",
    }
}

fn to_sql(v: Option<&Value>) -> SqlValue {
    match v {
        None | Some(Value::Null) => SqlValue::Null,
        Some(Value::Bool(b)) => SqlValue::Integer(*b as i64),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(SqlValue::Integer)
            .unwrap_or_else(|| SqlValue::Real(n.as_f64().unwrap_or(f64::NAN))),
        Some(Value::String(s)) => SqlValue::Text(s.clone()),
        Some(other) => SqlValue::Text(other.to_string()),
    }
}

impl SqliteSink {
    pub fn open(path: &Path, table: &str, append: bool) -> Result<Self, SinkError> {
        let p = path.display().to_string();
        let err = |e: rusqlite::Error| SinkError::Sqlite {
            path: p.clone(),
            message: e.to_string(),
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(err)?;
        conn.execute_batch("PRAGMA journal_mode=WAL; BEGIN").map_err(err)?;
        if !append {
            conn.execute(&format!("DROP TABLE IF EXISTS {}", quote(table)), [])
                .map_err(err)?;
        }
        let mut sink = SqliteSink {
            conn,
            path: p.clone(),
            table: table.to_owned(),
            columns: Vec::new(),
            insert_sql: String::new(),
        };
        sink.columns = sink.existing_columns().map_err(err)?;
        Ok(sink)
    }

    fn err(&self, e: rusqlite::Error) -> SinkError {
        SinkError::Sqlite {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn existing_columns(&self) -> rusqlite::Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare(&format!("PRAGMA table_info({})", quote(&self.table)))?;
        let cols = stmt.query_map([], |r| r.get::<_, String>(1))?.collect();
        cols
    }

    fn widen(&mut self, map: &serde_json::Map<String, Value>) -> Result<(), SinkError> {
        let new: Vec<(&String, &Value)> = map.iter().filter(|(k, _)| !self.columns.contains(k)).collect();
        if new.is_empty() {
            return Ok(());
        }
        if self.columns.is_empty() {
            let defs: Vec<String> = new
                .iter()
                .map(|(k, v)| format!("{} {}", quote(k), sql_type(v)))
                .collect();
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {} ({})",
                quote(&self.table),
                defs.join(", ")
            );
            self.conn.execute(&sql, []).map_err(|e| self.err(e))?;
        } else {
            for (k, v) in &new {
                let sql = format!(
                    "ALTER TABLE {} ADD COLUMN {} {}",
                    quote(&self.table),
                    quote(k),
                    sql_type(v)
                );
                self.conn.execute(&sql, []).map_err(|e| self.err(e))?;
            }
        }
        self.columns.extend(new.into_iter().map(|(k, _)| k.clone()));
        let cols: Vec<String> = self.columns.iter().map(|c| quote(c)).collect();
        let marks = vec!["?"; cols.len()].join(", ");
        self.insert_sql = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            quote(&self.table),
            cols.join(", "),
            marks
        );
        Ok(())
    }
}

impl Sink for SqliteSink {
    fn write(&mut self, record: &Value) -> Result<(), SinkError> {
        let Value::Object(map) = record else {
            return Err(SinkError::Sqlite {
                path: self.path.clone(),
                message: "a row must come from a record with named fields".into(),
            });
        };
        self.widen(map)?;
        if self.insert_sql.is_empty() {
            let cols: Vec<String> = self.columns.iter().map(|c| quote(c)).collect();
            let marks = vec!["?"; cols.len()].join(", ");
            self.insert_sql = format!(
                "INSERT INTO {} ({}) VALUES ({})",
                quote(&self.table),
                cols.join(", "),
                marks
            );
        }
        let values: Vec<SqlValue> = self.columns.iter().map(|c| to_sql(map.get(c))).collect();
        let mut stmt = self.conn.prepare_cached(&self.insert_sql).map_err(|e| self.err(e))?;
        stmt.execute(rusqlite::params_from_iter(values))
            .map_err(|e| self.err(e))?;
        drop(stmt);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), SinkError> {
        self.conn.execute_batch("COMMIT").map_err(|e| self.err(e))
    }
}
