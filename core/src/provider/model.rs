//! The provider descriptor format: everything flow needs to know about one
//! HTTP API, as data. Every field's doc comment is user documentation and
//! goes into the JSON Schema (`flow schema --descriptor`).

use crate::units::Duration;
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

/// A provider: one HTTP API.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Descriptor {
    /// The provider's name, used in `connections` and `flow call` (lower case).
    pub name: String,
    /// The name people know it by.
    #[serde(default)]
    pub title: Option<String>,
    /// What the API is for.
    #[serde(default)]
    pub description: Option<String>,
    /// Where the API's documentation is.
    #[serde(default)]
    pub docs: Option<String>,
    /// The base URL, a template over `config` (`https://{{ config.crm_url }}/backend/public`).
    pub base_url: String,
    /// What a connection must give: credentials and account settings.
    #[serde(default)]
    pub config: IndexMap<String, ConfigField>,
    /// Headers sent with every request (templates over `config`).
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// How requests are authenticated.
    #[serde(default)]
    pub auth: Auth,
    /// Wraps every action into one RPC call: all actions go to one URL and
    /// the body is this template.
    #[serde(default)]
    pub envelope: Option<Envelope>,
    /// How list actions page through results, unless an action says otherwise.
    #[serde(default)]
    pub pagination: Option<Pagination>,
    /// Which responses are errors and what they say.
    #[serde(default)]
    pub errors: Errors,
    /// How many requests the API allows, shared by every step of a run.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// How failed requests are retried.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// How long a request may take.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// The header in which the API accepts an idempotency key
    /// (`Idempotency-Key`), if it does: a write step's `key:` is sent in it,
    /// so a write whose outcome was unknown can safely be sent again.
    #[serde(default)]
    pub idempotency_header: Option<String>,
    /// The largest answer read (a page is held whole to be parsed): one
    /// that goes on past it fails the request rather than fill the memory.
    /// Default 1GiB.
    #[serde(default = "one_gib")]
    pub max_answer: crate::units::ByteSize,
    /// The API's endpoints, by action name.
    pub actions: IndexMap<String, Action>,
}

fn one_gib() -> crate::units::ByteSize {
    crate::units::ByteSize(1 << 30)
}

impl Descriptor {
    /// This provider with an account's own request budget and page
    /// parallelism (a connection's `rate_limit` and `parallel`).
    pub fn with_limits(&self, rate_limit: Option<&RateLimit>, parallel: Option<usize>) -> Descriptor {
        let mut d = self.clone();
        if let Some(r) = rate_limit {
            d.rate_limit = Some(r.clone());
        }
        if let Some(n) = parallel {
            let set = |p: &mut Pagination| {
                if let Pagination::PageNumber { parallel, .. } | Pagination::Offset { parallel, .. } = p {
                    *parallel = Some(n);
                }
            };
            if let Some(p) = d.pagination.as_mut() {
                set(p);
            }
            for action in d.actions.values_mut() {
                if let Some(ActionPagination::Custom(p)) = action.pagination.as_mut() {
                    set(p);
                }
            }
        }
        d
    }
}

/// A setting a connection gives.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigField {
    /// What it is.
    #[serde(default)]
    pub description: Option<String>,
    /// The type of the value.
    #[serde(default, rename = "type")]
    pub kind: ParamType,
    /// A connection must give it.
    #[serde(default)]
    pub required: bool,
    /// A credential: masked in every log, error and state record.
    #[serde(default)]
    pub secret: bool,
    /// The value used when the connection gives none.
    #[serde(default)]
    pub default: Option<serde_json::Value>,
}

/// The type of a parameter or setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    /// Text.
    #[default]
    String,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A date or date-time, sent as given.
    Date,
    /// A list.
    Array,
    /// A map.
    Object,
    /// Anything.
    Any,
}

/// Where a parameter goes in the request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Location {
    /// Into the path, replacing `{{ params.<name> }}`.
    Path,
    /// Into the query string.
    #[default]
    Query,
    /// Into the JSON body.
    Body,
    /// Into a form body (`application/x-www-form-urlencoded`, PHP-style keys
    /// such as `site[url]` kept as written).
    Form,
}

/// An HTTP method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// GET.
    #[default]
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
}

impl Method {
    /// The method's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// A parameter of an action.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Param {
    /// What it means.
    #[serde(default)]
    pub description: Option<String>,
    /// The type of the value.
    #[serde(default, rename = "type")]
    pub kind: ParamType,
    /// The action cannot be called without it.
    #[serde(default)]
    pub required: bool,
    /// The value sent when none is given.
    #[serde(default)]
    pub default: Option<serde_json::Value>,
    /// Where it goes; by default the query for GET and DELETE, the body otherwise.
    #[serde(default, rename = "in")]
    pub location: Option<Location>,
}

/// One endpoint of the API.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// What it does.
    #[serde(default)]
    pub description: Option<String>,
    /// The HTTP method (ignored with an envelope).
    #[serde(default)]
    pub method: Method,
    /// The path after the base URL, a template (`/project/{{ params.id }}`).
    #[serde(default)]
    pub path: String,
    /// The RPC method name, for providers with an envelope.
    #[serde(default)]
    pub rpc: Option<String>,
    /// The parameters, by name as the API spells them.
    #[serde(default)]
    pub params: IndexMap<String, Param>,
    /// For list actions: the JSONPath of the records in a response (`$.data[*]`).
    #[serde(default)]
    pub records: Option<String>,
    /// How this action pages: `none`, or a paginator overriding the provider's.
    #[serde(default)]
    pub pagination: Option<ActionPagination>,
    /// The action creates, changes or removes data. Default: true for POST,
    /// PUT, PATCH and DELETE actions without `records`.
    #[serde(default)]
    pub writes: Option<bool>,
    /// Sending the request twice has the same effect as once, so it may be
    /// retried even after it may have reached the server.
    #[serde(default)]
    pub idempotent: Option<bool>,
    /// How the body is encoded: `json` (default) or `form`.
    #[serde(default)]
    pub body: Option<BodyEncoding>,
}

impl Action {
    /// True when the action changes data on the server.
    pub fn is_write(&self) -> bool {
        self.writes
            .unwrap_or(self.records.is_none() && self.method != Method::Get)
    }

    /// True when the action may be sent twice safely.
    pub fn is_idempotent(&self) -> bool {
        self.idempotent.unwrap_or(!self.is_write())
    }

    /// Where a parameter goes.
    pub fn location_of(&self, p: &Param) -> Location {
        p.location.unwrap_or(match self.method {
            Method::Get | Method::Delete => Location::Query,
            _ => match self.body {
                Some(BodyEncoding::Form) => Location::Form,
                _ => Location::Body,
            },
        })
    }
}

/// How a request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BodyEncoding {
    /// JSON.
    Json,
    /// `application/x-www-form-urlencoded` with PHP-style nested keys.
    Form,
}

/// How an action pages.
#[derive(Debug, Clone, JsonSchema)]
#[serde(untagged)]
pub enum ActionPagination {
    /// `none`: a single request.
    Off(Off),
    /// A paginator of its own.
    Custom(Pagination),
}

impl<'de> Deserialize<'de> for ActionPagination {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, MapAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ActionPagination;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`none` or a paginator map with `type`")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ActionPagination, E> {
                match s {
                    "none" => Ok(ActionPagination::Off(Off::None)),
                    other => Err(E::custom(format!(
                        "`{other}` is not `none`; give `none` or a paginator map"
                    ))),
                }
            }
            fn visit_map<M: MapAccess<'de>>(self, m: M) -> Result<ActionPagination, M::Error> {
                Pagination::deserialize(de::value::MapAccessDeserializer::new(m)).map(ActionPagination::Custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// The word `none`.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Off {
    /// No pagination.
    None,
}

/// A paginator.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pagination {
    /// Page numbers: `?page=1`, `?page=2`, ... until the last page, the
    /// total, or an empty page.
    PageNumber {
        /// The page parameter.
        param: String,
        /// The first page's number.
        #[serde(default = "one")]
        start: u64,
        /// Where the page parameters go.
        #[serde(default, rename = "in")]
        location: Option<Location>,
        /// The page-size parameter, if the API takes one.
        #[serde(default)]
        size_param: Option<String>,
        /// The page size to ask for.
        #[serde(default)]
        size: Option<u64>,
        /// JSONPath of the last page's number in a response.
        #[serde(default)]
        last_page: Option<String>,
        /// JSONPath of the number of records in all pages.
        #[serde(default)]
        total: Option<String>,
        /// How many pages may be fetched at once once the first answer tells
        /// the last page (records still come out in page order); 1 fetches
        /// one page after another. Unset: 4, and up to 8 while the API
        /// answers as fast with more in flight (see [`Width`]).
        #[serde(default)]
        parallel: Option<usize>,
        /// The last page, the total and a short page only tell which pages
        /// to fetch ahead: the read ends at the first page that comes back
        /// empty, one request later. For APIs whose documents leave unclear
        /// what their counts count.
        #[serde(default)]
        confirm_end: bool,
    },
    /// Offsets: `offset=0&limit=100`, then `offset=100`, ... until the total
    /// or a page shorter than the limit.
    Offset {
        /// The offset parameter.
        offset_param: String,
        /// The page-size parameter.
        limit_param: String,
        /// The page size.
        limit: u64,
        /// Where the parameters go.
        #[serde(default, rename = "in")]
        location: Option<Location>,
        /// JSONPath of the total number of records in a response. Once it
        /// is known, the remaining pages are fetched `parallel` at a time.
        #[serde(default)]
        total: Option<String>,
        /// How many pages may be fetched at once once the total is known
        /// (unset: as for page numbers).
        #[serde(default)]
        parallel: Option<usize>,
        /// The total and a short page only tell which pages to fetch
        /// ahead: the read ends at the first page that comes back empty.
        #[serde(default)]
        confirm_end: bool,
    },
    /// A cursor from each response sent back with the next request, until
    /// the response has none.
    Cursor {
        /// The parameter that carries the cursor.
        param: String,
        /// JSONPath of the next cursor in a response.
        next: String,
        /// Where the parameter goes.
        #[serde(default, rename = "in")]
        location: Option<Location>,
    },
    /// The URL of the next page, from the body or the `Link` header.
    NextLink {
        /// JSONPath of the next page's URL in a response; without it, the
        /// `Link: <...>; rel="next"` header is used.
        #[serde(default)]
        next: Option<String>,
    },
}

fn one() -> u64 {
    1
}

/// How many pages of a read may be in flight at once: `start` at first,
/// and up to `most` while the answers show the API is not the limit (see
/// `fetch_in_order` in the connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Width {
    /// Pages in flight at first.
    pub start: usize,
    /// The most pages in flight.
    pub most: usize,
}

/// The most pages a read may have in flight at once (`parallel`).
pub const MOST_PAGES_AT_ONCE: usize = 64;

/// What is wrong with a `parallel` of pages at once, if anything.
pub fn check_parallel(n: usize) -> Option<String> {
    match n {
        0 => Some("`parallel` must be at least 1 (one page after another)".to_owned()),
        n if n > MOST_PAGES_AT_ONCE => Some(format!(
            "`parallel` is {n}: at most {MOST_PAGES_AT_ONCE} pages go at once (each is a connection to the API)"
        )),
        _ => None,
    }
}

impl Width {
    /// The width a pagination's `parallel` gives: that many pages, or when
    /// it is unset 4, growing to 8 against an API that is slow to answer
    /// but not loaded by more requests.
    pub fn of(parallel: Option<usize>) -> Width {
        match parallel {
            Some(n) => Width {
                start: n.max(1),
                most: n.max(1),
            },
            None => Width { start: 4, most: 8 },
        }
    }
}

/// How requests are authenticated.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    /// No authentication.
    #[default]
    None,
    /// Fixed credentials added to every request.
    Static {
        /// Headers (templates over `config`).
        #[serde(default)]
        headers: IndexMap<String, String>,
        /// Query parameters.
        #[serde(default)]
        query: IndexMap<String, String>,
        /// Parameters added to every action's parameters (inside the
        /// envelope's `params`, or the JSON body).
        #[serde(default)]
        params: IndexMap<String, String>,
    },
    /// A login request gives a token, sent with every request; the login is
    /// repeated once when the API rejects the token.
    Session {
        /// The login request.
        login: LoginRequest,
        /// JSONPath of the token in the login response.
        token: String,
        /// How long a token lives; renewed before then.
        #[serde(default)]
        lifetime: Option<Duration>,
        /// Headers that carry the token (`Authorization: "Bearer {{ token }}"`).
        #[serde(default)]
        headers: IndexMap<String, String>,
        /// Query parameters that carry the token.
        #[serde(default)]
        query: IndexMap<String, String>,
        /// HTTP statuses that mean the token was rejected.
        #[serde(default = "default_reauth")]
        renew_on: Vec<u16>,
    },
    /// Signed requests: a token request, then a signature over every
    /// request's parameters, sorted and encoded the way PHP's
    /// `http_build_query` does.
    Signed {
        /// The token request; its parameters are signed with `secret`.
        login: LoginRequest,
        /// The secret that signs the token request (a template over `config`).
        login_secret: String,
        /// JSONPath of the token in the token response.
        token: String,
        /// How long a token lives; renewed before then.
        #[serde(default)]
        lifetime: Option<Duration>,
        /// Parameters added to every request before signing (`uid`).
        #[serde(default)]
        params: IndexMap<String, String>,
        /// The parameter that carries the signature.
        #[serde(default = "default_sign")]
        sign_param: String,
        /// What is hashed: a template over `secret` (the token, or the login
        /// secret for the token request) and `query` (the sorted, encoded
        /// parameters).
        #[serde(default = "default_sign_template")]
        sign: String,
        /// HTTP statuses that mean the token was rejected.
        #[serde(default = "default_reauth")]
        renew_on: Vec<u16>,
    },
}

fn default_reauth() -> Vec<u16> {
    vec![401]
}

fn default_sign() -> String {
    "sign".into()
}

fn default_sign_template() -> String {
    "{{ secret }}{{ query }}".into()
}

/// A login or token request.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The method.
    #[serde(default)]
    pub method: Method,
    /// The path after the base URL.
    pub path: String,
    /// Query parameters (templates over `config`).
    #[serde(default)]
    pub query: IndexMap<String, String>,
    /// JSON body fields (templates over `config`).
    #[serde(default)]
    pub body: IndexMap<String, String>,
}

/// An RPC envelope.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// The method of every call.
    #[serde(default = "post")]
    pub method: Method,
    /// The one path every call goes to.
    #[serde(default)]
    pub path: String,
    /// The body: a structure whose strings are templates over `action`
    /// (`action.rpc`) and `params` (`"{{ params }}"` keeps the map).
    pub body: serde_json::Value,
}

fn post() -> Method {
    Method::Post
}

/// Which responses are errors.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Errors {
    /// JSONPaths tried in order for an error's message.
    #[serde(default = "default_messages")]
    pub message: Vec<String>,
    /// Errors that come with a 2xx status: a response is an error when any
    /// of these matches.
    #[serde(default)]
    pub in_body: Vec<BodyError>,
    /// Statuses worth another try (besides connection failures and timeouts).
    #[serde(default = "default_retry_on")]
    pub retry_on: Vec<u16>,
    /// The only statuses that mean success, for an API that counts other
    /// 2xx answers (203, 206, ...) as errors. Default: every 2xx.
    #[serde(default)]
    pub success: Option<Vec<u16>>,
}

impl Default for Errors {
    fn default() -> Self {
        Errors {
            message: default_messages(),
            in_body: Vec::new(),
            retry_on: default_retry_on(),
            success: None,
        }
    }
}

fn default_messages() -> Vec<String> {
    ["$.error.message", "$.error", "$.errors", "$.message"]
        .map(String::from)
        .to_vec()
}

fn default_retry_on() -> Vec<u16> {
    vec![429, 500, 502, 503, 504]
}

/// A rule for an error in a 2xx response.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BodyError {
    /// JSONPath of a value in the response.
    pub path: String,
    /// The response is an error when the value equals this; without it, when
    /// the value exists and is not null, false or empty.
    #[serde(default)]
    pub equals: Option<serde_json::Value>,
    /// JSONPath of the message for this kind of error, or a list of them
    /// whose values are joined with `: ` (`[$.error, $.description]` gives
    /// `validation_error: name is required`).
    #[serde(default)]
    pub message: Option<Paths>,
}

/// One JSONPath or a list of them.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Paths {
    /// One path.
    One(String),
    /// Several, in order.
    Many(Vec<String>),
}

impl Paths {
    /// The paths in order.
    pub fn as_slice(&self) -> &[String] {
        match self {
            Paths::One(p) => std::slice::from_ref(p),
            Paths::Many(ps) => ps,
        }
    }
}

/// A request budget.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// How many requests...
    pub requests: u32,
    /// ...in how long.
    #[serde(default = "second")]
    pub per: Duration,
}

fn second() -> Duration {
    Duration(std::time::Duration::from_secs(1))
}

/// How failed requests are retried.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    #[serde(default = "four")]
    pub attempts: u32,
    /// The first wait; it doubles each time, with jitter.
    #[serde(default = "half_second")]
    pub backoff: Duration,
    /// The longest wait.
    #[serde(default = "thirty_seconds")]
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: four(),
            backoff: half_second(),
            max_backoff: thirty_seconds(),
        }
    }
}

fn four() -> u32 {
    4
}

fn half_second() -> Duration {
    Duration(std::time::Duration::from_millis(500))
}

fn thirty_seconds() -> Duration {
    Duration(std::time::Duration::from_secs(30))
}

/// Request time limits.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// To open a connection.
    #[serde(default = "ten_seconds")]
    pub connect: Duration,
    /// For a whole request, the answer included.
    #[serde(default = "sixty_seconds")]
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: ten_seconds(),
            request: sixty_seconds(),
        }
    }
}

fn ten_seconds() -> Duration {
    Duration(std::time::Duration::from_secs(10))
}

fn sixty_seconds() -> Duration {
    Duration(std::time::Duration::from_secs(60))
}
