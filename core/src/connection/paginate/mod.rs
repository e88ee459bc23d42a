//! Paginators: how a list action walks through pages. One file per kind;
//! each puts its parameters on a request and decides, from a response,
//! whether there is a next page.

mod cursor;
mod next_link;
mod offset;
mod page_number;

use super::request::Request;
use crate::provider::model::{Location, Pagination, Width};
use serde_json::Value;

/// What a paginator sees of a response.
pub struct Page<'a> {
    /// The parsed body.
    pub body: &'a Value,
    /// The `Link` header, if any.
    pub link: Option<&'a str>,
    /// How many records the page held.
    pub records: usize,
}

/// Walks the pages of one call.
pub trait Paginator: Send + Sync {
    /// Puts the current page's parameters on a request.
    fn apply(&self, req: &mut Request, default: Location);
    /// Looks at a response; true when there is another page to fetch. An
    /// error when the response says where the listing ends in a way that
    /// cannot be read (a page count that is not a number).
    fn advance(&mut self, page: &Page) -> Result<bool, String>;
    /// When the remaining pages are known (the first answer named the last
    /// page): their numbers and how many may be fetched at once.
    fn remaining(&self) -> Option<(std::ops::RangeInclusive<u64>, Width)> {
        None
    }
    /// Puts a given page's parameters on a request (for pages fetched at once).
    fn apply_page(&self, _req: &mut Request, _default: Location, _page: u64) {}
    /// How many records every page but the last holds, when pages are found
    /// by position (offsets): a shorter one before the end means the API
    /// pages by fewer than it was asked, and the pages fetched at once past
    /// it would leave gaps.
    fn full_page(&self) -> Option<u64> {
        None
    }
    /// Goes on from right after page `page` of those fetched at once, which
    /// held only `records` records (see [`Paginator::full_page`]), one page
    /// at a time.
    fn after_short_page(&mut self, _page: u64, _records: u64) {}
    /// Whether the pages read so far are where their numbers put them, so
    /// that a resumed read can skip those handled by position. False for
    /// offsets once a page came back shorter than the limit before the end:
    /// from that page on, none counts for the checkpoint.
    fn positioned(&self) -> bool {
        true
    }
    /// True when the last answer's counts (or a short page) named it the
    /// last page, even if the read goes on to confirm it.
    fn said_end(&self) -> bool {
        false
    }
    /// True when the end the answers tell is confirmed by an empty page:
    /// after the pages fetched at once, the read goes on.
    fn confirms_end(&self) -> bool {
        false
    }
    /// Moves past the first `pages` pages without fetching them (a resumed
    /// read, or pages fetched at once). False when pages cannot be told apart by position (cursors,
    /// next links): such reads start over.
    fn skip(&mut self, _pages: u64) -> bool {
        false
    }
}

/// Where a listing ends by its counts (a last page, a total, a short
/// page): what the last answer said, and whether only an empty page may
/// end the read (`confirm_end`).
#[derive(Default)]
struct End {
    confirm: bool,
    said: bool,
}

impl End {
    fn new(confirm: bool) -> Self {
        End { confirm, said: false }
    }

    /// Notes whether the counts named the page just read the last one;
    /// true when the read goes on.
    fn goes_on(&mut self, said_end: bool) -> bool {
        self.said = said_end;
        !said_end || self.confirm
    }
}

/// No pagination: one request.
struct Single;

impl Paginator for Single {
    fn apply(&self, _: &mut Request, _: Location) {}
    fn advance(&mut self, _: &Page) -> Result<bool, String> {
        Ok(false)
    }
}

/// The paginator for a configuration (compiled JSONPaths were checked when
/// the descriptor was loaded).
pub fn build(p: Option<&Pagination>) -> Result<Box<dyn Paginator>, String> {
    Ok(match p {
        None => Box::new(Single),
        Some(Pagination::PageNumber {
            param,
            start,
            location,
            size_param,
            size,
            last_page,
            total,
            parallel,
            confirm_end,
        }) => {
            let mut p = page_number::PageNumber::new(
                param.clone(),
                *start,
                *location,
                size_param.clone().zip(*size),
                last_page.as_deref(),
                total.as_deref(),
                Width::of(*parallel),
            )?;
            p.end = End::new(*confirm_end);
            Box::new(p)
        }
        Some(Pagination::Offset {
            offset_param,
            limit_param,
            limit,
            location,
            total,
            parallel,
            confirm_end,
        }) => {
            let mut p = offset::Offset::new(
                offset_param.clone(),
                limit_param.clone(),
                *limit,
                *location,
                total.as_deref(),
                Width::of(*parallel),
            )?;
            p.end = End::new(*confirm_end);
            Box::new(p)
        }
        Some(Pagination::Cursor { param, next, location }) => {
            Box::new(cursor::Cursor::new(param.clone(), next, *location)?)
        }
        Some(Pagination::NextLink { next }) => Box::new(next_link::NextLink::new(next.as_deref())?),
    })
}

/// A number in a response, written as a number or as text.
/// The count at `sel` in `body`: none when the answer leaves it out (or
/// gives `null`), an error when it is there but not a whole number, rather
/// than paging on without an end.
fn number(sel: Option<&crate::select::Selector>, body: &Value) -> Result<Option<u64>, String> {
    let Some(sel) = sel else { return Ok(None) };
    let n = match sel.first(body) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Some(Value::String(s)) => s.trim().parse().ok(),
        Some(_) => None,
    };
    match n {
        Some(n) => Ok(Some(n)),
        None => Err(format!(
            "the answer's `{}` is {}, not a number, so where the listing ends is unknown; check the pagination of the descriptor",
            sel.as_str(),
            crate::connection::snippet(sel.first(body).map(Value::to_string).unwrap_or_default().as_bytes())
        )),
    }
}
