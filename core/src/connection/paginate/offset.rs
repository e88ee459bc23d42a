//! Offsets: `offset=0&limit=N`, `offset=N`, ... The end is the total named by
//! the response, or a page shorter than the limit.

use super::{number, Page, Paginator};
use crate::connection::request::Request;
use crate::provider::model::Location;
use crate::select::Selector;
use serde_json::Value;

pub struct Offset {
    offset_param: String,
    limit_param: String,
    limit: u64,
    offset: u64,
    location: Option<Location>,
    total: Option<Selector>,
}

impl Offset {
    pub fn new(
        offset_param: String,
        limit_param: String,
        limit: u64,
        location: Option<Location>,
        total: Option<&str>,
    ) -> Result<Self, String> {
        Ok(Offset {
            offset_param,
            limit_param,
            limit,
            offset: 0,
            location,
            total: total.map(Selector::new).transpose()?,
        })
    }
}

impl Paginator for Offset {
    fn apply(&self, req: &mut Request, default: Location) {
        let at = self.location.unwrap_or(default);
        req.set(at, &self.offset_param, Value::from(self.offset));
        req.set(at, &self.limit_param, Value::from(self.limit));
    }

    fn skip(&mut self, pages: u64) -> bool {
        self.offset += pages * self.limit;
        true
    }

    fn advance(&mut self, page: &Page) -> Result<bool, String> {
        let n = page.records as u64;
        if n < self.limit {
            return Ok(false);
        }
        self.offset += n;
        Ok(match number(self.total.as_ref(), page.body)? {
            Some(total) => self.offset < total,
            None => true,
        })
    }
}
