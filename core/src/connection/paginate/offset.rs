//! Offsets: `offset=0&limit=N`, `offset=N`, ... The end is the total named by
//! the response, or a page shorter than the limit. Once the total is known,
//! the remaining pages (page k starts at offset k × N) may be fetched
//! several at once.

use super::{number, End, Page, Paginator};
use crate::connection::request::Request;
use crate::provider::model::{Location, Width};
use crate::select::Selector;
use serde_json::Value;

pub struct Offset {
    offset_param: String,
    limit_param: String,
    limit: u64,
    offset: u64,
    location: Option<Location>,
    total: Option<Selector>,
    parallel: Width,
    /// The index of the last page, once an answer has told the total.
    last: Option<u64>,
    /// A page before the end held fewer records than the limit: pages do
    /// not start at multiples of it, and are fetched one at a time.
    uneven: bool,
    /// Where the counts end the listing (set by [`super::build`]).
    pub(super) end: End,
}

impl Offset {
    pub fn new(
        offset_param: String,
        limit_param: String,
        limit: u64,
        location: Option<Location>,
        total: Option<&str>,
        parallel: Width,
    ) -> Result<Self, String> {
        Ok(Offset {
            offset_param,
            limit_param,
            limit: limit.max(1),
            offset: 0,
            location,
            total: total.map(Selector::new).transpose()?,
            parallel,
            last: None,
            uneven: false,
            end: End::default(),
        })
    }
}

impl Paginator for Offset {
    fn apply(&self, req: &mut Request, default: Location) {
        let at = self.location.unwrap_or(default);
        req.set(at, &self.offset_param, Value::from(self.offset));
        req.set(at, &self.limit_param, Value::from(self.limit));
    }

    fn apply_page(&self, req: &mut Request, default: Location, page: u64) {
        let at = self.location.unwrap_or(default);
        req.set(at, &self.offset_param, Value::from(page * self.limit));
        req.set(at, &self.limit_param, Value::from(self.limit));
    }

    fn remaining(&self) -> Option<(std::ops::RangeInclusive<u64>, Width)> {
        // Pages fall on multiples of the limit: every page before was full.
        let (last, page) = (self.last?, self.offset / self.limit);
        (!self.uneven && self.offset % self.limit == 0 && last >= page).then_some((page..=last, self.parallel))
    }

    fn skip(&mut self, pages: u64) -> bool {
        self.offset += pages * self.limit;
        true
    }

    fn full_page(&self) -> Option<u64> {
        Some(self.limit)
    }

    fn positioned(&self) -> bool {
        !self.uneven
    }

    fn after_short_page(&mut self, page: u64, records: u64) {
        self.offset = page * self.limit + records;
        self.uneven = true;
    }

    fn advance(&mut self, page: &Page) -> Result<bool, String> {
        let n = page.records as u64;
        if n == 0 {
            return Ok(false);
        }
        self.offset += n;
        // A short page that does not end the read (`confirm_end`, or a
        // total past it): the API pages by fewer than the limit.
        self.uneven |= n < self.limit;
        // The total, when the answer gives one, says where the listing
        // ends: an API that pages by fewer than the limit sends short pages
        // long before it. Without one, a short page is the last.
        let said_end = match number(self.total.as_ref(), page.body)? {
            Some(total) => {
                self.last = total.checked_sub(1).map(|t| t / self.limit);
                self.offset >= total
            }
            None => n < self.limit,
        };
        Ok(self.end.goes_on(said_end))
    }

    fn confirms_end(&self) -> bool {
        self.end.confirm
    }

    fn said_end(&self) -> bool {
        self.end.said
    }
}
