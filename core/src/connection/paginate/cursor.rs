//! Cursors: each response names the next page's cursor; the end is a
//! response without one (or with the same one again).

use super::{Page, Paginator};
use crate::connection::request::Request;
use crate::provider::model::Location;
use crate::select::Selector;
use serde_json::Value;

pub struct Cursor {
    param: String,
    next: Selector,
    location: Option<Location>,
    cursor: Option<Value>,
}

impl Cursor {
    pub fn new(param: String, next: &str, location: Option<Location>) -> Result<Self, String> {
        Ok(Cursor {
            param,
            next: Selector::new(next)?,
            location,
            cursor: None,
        })
    }
}

impl Paginator for Cursor {
    fn apply(&self, req: &mut Request, default: Location) {
        if let Some(c) = &self.cursor {
            req.set(self.location.unwrap_or(default), &self.param, c.clone());
        }
    }

    fn advance(&mut self, page: &Page) -> Result<bool, String> {
        let next = match self.next.first(page.body) {
            Some(Value::String(s)) if !s.is_empty() => Value::String(s.clone()),
            Some(Value::Number(n)) => Value::Number(n.clone()),
            _ => return Ok(false),
        };
        if self.cursor.as_ref() == Some(&next) {
            return Ok(false);
        }
        self.cursor = Some(next);
        Ok(true)
    }
}
