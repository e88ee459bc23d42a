//! Page numbers: `page=1`, `page=2`, ... The end is the last page named by
//! the response, the total number of records, or an empty page. When the
//! first answer names the last page (or the total and the page size tell
//! it), the other pages may be fetched several at once.

use super::{number, End, Page, Paginator};
use crate::connection::request::Request;
use crate::provider::model::{Location, Width};
use crate::select::Selector;
use serde_json::Value;

pub struct PageNumber {
    param: String,
    /// The first page of the listing.
    start: u64,
    page: u64,
    location: Option<Location>,
    size: Option<(String, u64)>,
    last_page: Option<Selector>,
    total: Option<Selector>,
    seen: u64,
    parallel: Width,
    /// The last page, once an answer has told it.
    last: Option<u64>,
    /// Where the counts end the listing (set by [`super::build`]).
    pub(super) end: End,
}

impl PageNumber {
    pub fn new(
        param: String,
        start: u64,
        location: Option<Location>,
        size: Option<(String, u64)>,
        last_page: Option<&str>,
        total: Option<&str>,
        parallel: Width,
    ) -> Result<Self, String> {
        Ok(PageNumber {
            param,
            start,
            page: start,
            location,
            size,
            last_page: last_page.map(Selector::new).transpose()?,
            total: total.map(Selector::new).transpose()?,
            seen: 0,
            parallel,
            last: None,
            end: End::default(),
        })
    }
}

impl Paginator for PageNumber {
    fn apply(&self, req: &mut Request, default: Location) {
        self.apply_page(req, default, self.page);
    }

    fn apply_page(&self, req: &mut Request, default: Location, page: u64) {
        let at = self.location.unwrap_or(default);
        req.set(at, &self.param, Value::from(page));
        if let Some((name, size)) = &self.size {
            req.set(at, name, Value::from(*size));
        }
    }

    fn confirms_end(&self) -> bool {
        self.end.confirm
    }

    fn said_end(&self) -> bool {
        self.end.said
    }

    fn skip(&mut self, pages: u64) -> bool {
        self.page += pages;
        if let Some((_, size)) = &self.size {
            self.seen += pages * size;
        }
        true
    }

    fn remaining(&self) -> Option<(std::ops::RangeInclusive<u64>, Width)> {
        // With `parallel: 1` too: one request at a time, but each page is
        // parsed while the next one travels.
        let last = self.last?;
        (last >= self.page).then_some((self.page..=last, self.parallel))
    }

    fn advance(&mut self, page: &Page) -> Result<bool, String> {
        self.seen += page.records as u64;
        if page.records == 0 {
            return Ok(false);
        }
        // With `confirm_end`, what the answer tells only says which pages
        // to fetch ahead.
        let mut said_end = false;
        if let Some(last) = number(self.last_page.as_ref(), page.body)? {
            self.last = Some(last);
            said_end |= self.page >= last;
        }
        if let Some(total) = number(self.total.as_ref(), page.body)? {
            if let (None, Some((_, size))) = (self.last, &self.size) {
                self.last = Some(total.div_ceil((*size).max(1)) + self.start - 1);
            }
            said_end |= self.seen >= total;
        }
        if let Some((_, size)) = &self.size {
            said_end |= (page.records as u64) < *size;
        }
        if !self.end.goes_on(said_end) {
            return Ok(false);
        }
        self.page += 1;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_confirmed_end_reads_on_but_says_where_the_counts_ended() {
        let mut p =
            PageNumber::new("page".into(), 1, None, None, Some("$.last"), None, Width::of(None)).expect("pager");
        p.end = End::new(true);
        let at = |last: u64, records: usize, p: &mut PageNumber| {
            p.advance(&Page {
                body: &json!({ "last": last }),
                link: None,
                records,
            })
        };
        assert_eq!(at(2, 10, &mut p), Ok(true));
        assert!(!p.said_end());
        // Page 2 is the last by the count: the read goes on to page 3, but
        // page 2 is not one a resumed read may skip.
        assert_eq!(at(2, 10, &mut p), Ok(true));
        assert!(p.said_end());
        assert_eq!(at(2, 0, &mut p), Ok(false));
    }

    #[test]
    fn a_skipped_read_knows_its_last_page_from_the_total() {
        let mut p = PageNumber::new(
            "page".into(),
            1,
            None,
            Some(("per_page".into(), 200)),
            None,
            Some("$.total"),
            Width::of(None),
        )
        .expect("pager");
        assert!(p.skip(3));
        let body = json!({"total": 1000});
        // The first page fetched is page 4 of 5.
        assert_eq!(
            p.advance(&Page {
                body: &body,
                link: None,
                records: 200,
            }),
            Ok(true)
        );
        assert_eq!(p.remaining(), Some((5..=5, Width { start: 4, most: 8 })));
        // A page count that is there but is no number ends the read.
        let body = json!({"total": "many"});
        let err = p
            .advance(&Page {
                body: &body,
                link: None,
                records: 200,
            })
            .unwrap_err();
        assert!(err.contains("`$.total` is \"many\", not a number"), "{err}");
    }
}
