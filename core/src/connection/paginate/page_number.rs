//! Page numbers: `page=1`, `page=2`, ... The end is the last page named by
//! the response, the total number of records, or an empty page.

use super::{number, Page, Paginator};
use crate::connection::request::Request;
use crate::provider::model::Location;
use crate::select::Selector;
use serde_json::Value;

pub struct PageNumber {
    param: String,
    page: u64,
    location: Option<Location>,
    size: Option<(String, u64)>,
    last_page: Option<Selector>,
    total: Option<Selector>,
    seen: u64,
}

impl PageNumber {
    pub fn new(
        param: String,
        start: u64,
        location: Option<Location>,
        size: Option<(String, u64)>,
        last_page: Option<&str>,
        total: Option<&str>,
    ) -> Result<Self, String> {
        Ok(PageNumber {
            param,
            page: start,
            location,
            size,
            last_page: last_page.map(Selector::new).transpose()?,
            total: total.map(Selector::new).transpose()?,
            seen: 0,
        })
    }
}

impl Paginator for PageNumber {
    fn apply(&self, req: &mut Request, default: Location) {
        let at = self.location.unwrap_or(default);
        req.set(at, &self.param, Value::from(self.page));
        if let Some((name, size)) = &self.size {
            req.set(at, name, Value::from(*size));
        }
    }

    fn advance(&mut self, page: &Page) -> bool {
        self.seen += page.records as u64;
        if page.records == 0 {
            return false;
        }
        if let Some(last) = self.last_page.as_ref().and_then(|s| number(s.first(page.body))) {
            if self.page >= last {
                return false;
            }
        }
        if let Some(total) = self.total.as_ref().and_then(|s| number(s.first(page.body))) {
            if self.seen >= total {
                return false;
            }
        }
        if let Some((_, size)) = &self.size {
            if (page.records as u64) < *size {
                return false;
            }
        }
        self.page += 1;
        true
    }
}
