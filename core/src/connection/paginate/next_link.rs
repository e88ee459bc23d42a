//! Next links: the response gives the full URL of the next page, in the
//! body or in a `Link: <...>; rel="next"` header.

use super::{Page, Paginator};
use crate::connection::request::Request;
use crate::provider::model::Location;
use crate::select::Selector;

pub struct NextLink {
    next: Option<Selector>,
    url: Option<String>,
}

impl NextLink {
    pub fn new(next: Option<&str>) -> Result<Self, String> {
        Ok(NextLink {
            next: next.map(Selector::new).transpose()?,
            url: None,
        })
    }
}

/// The `rel="next"` target of a `Link` header.
fn link_next(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (url, rest) = part.split_once(';')?;
        let is_next = rest.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        is_next.then(|| url.trim().trim_start_matches('<').trim_end_matches('>').to_owned())
    })
}

impl Paginator for NextLink {
    fn apply(&self, req: &mut Request, _: Location) {
        if let Some(url) = &self.url {
            req.replace_url(url);
        }
    }

    fn advance(&mut self, page: &Page) -> Result<bool, String> {
        let next = match &self.next {
            Some(sel) => sel.first(page.body).and_then(|v| v.as_str()).map(str::to_owned),
            None => page.link.and_then(link_next),
        };
        Ok(match next.filter(|n| !n.is_empty()) {
            Some(n) if self.url.as_deref() != Some(n.as_str()) => {
                self.url = Some(n);
                true
            }
            _ => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::link_next;

    #[test]
    fn parses_link_headers() {
        let h = r#"<https://a.io/x?page=1>; rel="prev", <https://a.io/x?page=3>; rel="next""#;
        assert_eq!(link_next(h).as_deref(), Some("https://a.io/x?page=3"));
        assert_eq!(link_next(r#"<https://a.io/x?page=1>; rel="prev""#), None);
    }
}
