//! A request being built: parameters stay structured until it is sent, so
//! that signatures see exactly what goes on the wire.

use crate::provider::model::{Location, Method};
use serde_json::{Map, Value};

/// One HTTP request before encoding.
#[derive(Debug, Clone)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The URL without the query string (or a full next-page URL).
    pub url: String,
    /// Query parameters, encoded PHP-style when sent.
    pub query: Map<String, Value>,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Body,
    /// The URL already carries its query (a next-page link).
    pub url_has_query: bool,
}

/// A request body.
#[derive(Debug, Clone)]
pub enum Body {
    /// No body.
    None,
    /// A JSON object.
    Json(Map<String, Value>),
    /// A form, encoded PHP-style.
    Form(Map<String, Value>),
    /// A JSON document of any shape (an envelope).
    Raw(Value),
}

impl Request {
    /// A request with nothing but a method and URL.
    pub fn new(method: Method, url: String) -> Self {
        Request {
            method,
            url,
            query: Map::new(),
            headers: Vec::new(),
            body: Body::None,
            url_has_query: false,
        }
    }

    /// Puts a parameter where it goes.
    pub fn set(&mut self, at: Location, name: &str, value: Value) {
        match at {
            Location::Query | Location::Path => {
                self.query.insert(name.to_owned(), value);
            }
            Location::Body => match &mut self.body {
                Body::Json(m) | Body::Form(m) => {
                    m.insert(name.to_owned(), value);
                }
                Body::Raw(Value::Object(m)) => {
                    m.insert(name.to_owned(), value);
                }
                other => {
                    let mut m = Map::new();
                    m.insert(name.to_owned(), value);
                    *other = Body::Json(m);
                }
            },
            Location::Form => match &mut self.body {
                Body::Form(m) => {
                    m.insert(name.to_owned(), value);
                }
                other => {
                    let mut m = Map::new();
                    m.insert(name.to_owned(), value);
                    *other = Body::Form(m);
                }
            },
        }
    }

    /// Goes to a full URL instead (next-page links); its query is kept.
    pub fn replace_url(&mut self, url: &str) {
        self.url = url.to_owned();
        self.query.clear();
        self.url_has_query = true;
    }

    /// The URL with its query string.
    pub fn full_url(&self) -> String {
        if self.query.is_empty() {
            return self.url.clone();
        }
        let sep = if self.url_has_query || self.url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{sep}{}", self.url, crate::php::build_query(&self.query))
    }

    /// Every parameter a signature covers: the query and a form or JSON body.
    pub fn signed_params(&self) -> Map<String, Value> {
        let mut all = self.query.clone();
        if let Body::Form(m) | Body::Json(m) = &self.body {
            for (k, v) in m {
                all.insert(k.clone(), v.clone());
            }
        }
        all
    }
}
