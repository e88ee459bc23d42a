//! A connection: one provider with one account's config, ready to call its
//! actions. It builds requests from the descriptor, authenticates them,
//! holds the provider's rate limit, retries what is safe to retry, turns
//! error responses into messages, and pages through list actions, streaming
//! each page's records on as it arrives.

mod auth;
mod paginate;
mod ratelimit;
pub mod request;

use crate::checkpoint::Marks;
use crate::diagnostic::did_you_mean;
use crate::provider::model::{Action, ActionPagination, Auth, Location, Method, ParamType, Width};
use crate::provider::Descriptor;
use crate::record::{Batch, Outlet, Records};
use crate::select::Selector;
use crate::template::Templates;
use minijinja::Value as Mj;
use paginate::Page;
use request::{Body, Request};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A failed call, ready to print: the action, the request (secrets masked)
/// and what went wrong.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct CallError(pub String);

/// A provider with one account's configuration.
pub struct Connection {
    /// The connection's name (the provider's, for `flow call`).
    pub name: String,
    /// The provider.
    pub descriptor: Arc<Descriptor>,
    base_url: String,
    config: Mj,
    client: reqwest::Client,
    templates: Arc<Templates>,
    limiter: Option<ratelimit::RateLimiter>,
    token: tokio::sync::Mutex<Option<(String, Instant)>>,
}

/// Set when the run is asked to stop (a signal): no request goes out from
/// then on, and waits before one (a retry, the rate limit) end at once.
static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static STOPPED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Stops every connection of the process from sending requests; those in
/// flight get their answers.
pub fn stop_requests() {
    STOPPING.store(true, std::sync::atomic::Ordering::SeqCst);
    STOPPED.notify_waiters();
}

fn stopping() -> bool {
    STOPPING.load(std::sync::atomic::Ordering::SeqCst)
}

/// Resolves once [`stop_requests`] has been called.
pub(crate) async fn until_stopped() {
    loop {
        let notified = STOPPED.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if stopping() {
            return;
        }
        notified.await;
    }
}

/// What a request the run stopped before sending fails with.
pub(crate) const NOT_SENT_STOPPING: &str = "not sent: the run is stopping";

/// An action of a provider, or an error that names the closest one.
pub fn action_of<'d>(descriptor: &'d Descriptor, name: &str) -> Result<&'d Action, String> {
    descriptor.actions.get(name).ok_or_else(|| {
        let mut m = format!("the provider `{}` has no action `{name}`", descriptor.name);
        if let Some(s) = did_you_mean(name, descriptor.actions.keys().map(String::as_str)) {
            m.push_str(&format!("; did you mean `{s}`?"));
        }
        m
    })
}

/// The environment variable that overrides a provider's base URL.
pub fn base_url_variable(provider: &str) -> String {
    format!("FLOW_{}_BASE_URL", provider.to_ascii_uppercase().replace('-', "_"))
}

/// The base URL `FLOW_<PROVIDER>_BASE_URL` sets, if any.
pub fn base_url_from_env(provider: &str) -> Option<String> {
    std::env::var(base_url_variable(provider))
        .ok()
        .filter(|v| !v.is_empty())
}

/// The path of a base URL (`/api/v1` of `https://host/api/v1/`), none for a
/// bare host. The host part may be a template (`https://{{ config.host }}/api`).
pub fn base_path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let mut depth = 0usize;
    let bytes = rest.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b'{' if bytes.get(i + 1) == Some(&b'{') => depth += 1,
            b'}' if bytes.get(i + 1) == Some(&b'}') => depth = depth.saturating_sub(1),
            b'/' | b'?' | b'#' if depth == 0 => {
                let path = &rest[i..];
                let path = path.split(['?', '#']).next().unwrap_or_default();
                return path.trim_end_matches('/');
            }
            _ => {}
        }
    }
    ""
}

/// Checks a connection's config against the provider's fields, fills in
/// defaults, and returns the problems as sentences.
pub fn resolve_config(d: &Descriptor, given: &Map<String, Value>) -> Result<Map<String, Value>, Vec<String>> {
    let mut errors = Vec::new();
    let mut out = Map::new();
    for key in given.keys() {
        if !d.config.contains_key(key) {
            let hint = crate::diagnostic::suggest(key, d.config.keys().map(String::as_str), "it takes");
            errors.push(format!("the provider `{}` has no config `{key}`; {hint}", d.name));
        }
    }
    for (key, field) in &d.config {
        match given.get(key).or(field.default.as_ref()) {
            Some(v) => {
                out.insert(key.clone(), v.clone());
            }
            None if field.required => errors.push(format!("the provider `{}` needs config `{key}`", d.name)),
            None => {}
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

impl Connection {
    /// A connection. `config` has been resolved with [`resolve_config`];
    /// `base_url` overrides the descriptor's; the caller decides where it
    /// comes from (a flag, the sandbox, `FLOW_<PROVIDER>_BASE_URL` through
    /// [`base_url_from_env`], the workflow).
    pub fn new(
        name: &str,
        descriptor: Arc<Descriptor>,
        config: Map<String, Value>,
        base_url: Option<String>,
    ) -> Result<Self, String> {
        for (key, field) in &descriptor.config {
            if let (true, Some(Value::String(s))) = (field.secret, config.get(key)) {
                crate::secrets::register(s);
            }
        }
        let templates = Arc::new(Templates::new());
        let config_mj = Mj::from_serialize(&config);
        let base = match base_url {
            Some(b) => b,
            None => templates
                .render_str(
                    &descriptor.base_url,
                    &minijinja::context! { config => config_mj.clone() },
                )
                .map_err(|e| format!("base_url: {e}"))?,
        };
        match reqwest::Url::parse(base.trim()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            Ok(u) => {
                return Err(format!(
                    "the base URL `{base}` is not http or https (it is `{}:`)",
                    u.scheme()
                ))
            }
            Err(e) => {
                return Err(format!(
                    "the base URL `{base}` is not a URL ({e}); it should look like https://api.example.com/v1"
                ))
            }
        }
        let client = reqwest::Client::builder()
            .connect_timeout(descriptor.timeouts.connect.0)
            .timeout(descriptor.timeouts.request.0)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("flow/", env!("CARGO_PKG_VERSION")))
            // A redirect to another host must not carry the URL, keys in
            // its query included, along in a `Referer`.
            .referer(false)
            .build()
            .map_err(|e| format!("cannot set up HTTP: {e}"))?;
        let limiter = descriptor
            .rate_limit
            .as_ref()
            .map(|r| ratelimit::RateLimiter::new(r.requests, r.per.0));
        Ok(Connection {
            name: name.to_owned(),
            base_url: base.trim_end_matches('/').to_owned(),
            config: config_mj,
            client,
            templates,
            limiter,
            token: tokio::sync::Mutex::new(None),
            descriptor,
        })
    }

    /// The base URL in use.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// An action by name, or an error that suggests the closest.
    pub fn action(&self, name: &str) -> Result<&Action, String> {
        action_of(&self.descriptor, name)
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    pub(crate) fn render_config(&self, t: &str) -> Result<String, String> {
        self.templates
            .render_str(t, &minijinja::context! { config => self.config.clone() })
            .map_err(|e| e.to_string())
    }

    pub(crate) fn render_with_token(&self, t: &str, token: &str) -> Result<String, String> {
        self.templates
            .render_str(
                t,
                &minijinja::context! { config => self.config.clone(), token => token },
            )
            .map_err(|e| e.to_string())
    }

    pub(crate) fn render_sign(&self, t: &str, secret: &str, query: &str) -> Result<String, String> {
        self.templates
            .render_str(
                t,
                &minijinja::context! { config => self.config.clone(), secret => secret, query => query },
            )
            .map_err(|e| e.to_string())
    }

    /// An error about a request: `provider.action: METHOD url: message`.
    pub(crate) fn error(&self, action: &str, req: &Request, message: impl AsRef<str>) -> CallError {
        let text = format!(
            "{}.{action}: {} {}: {}",
            self.descriptor.name,
            req.method.as_str(),
            req.full_url(),
            message.as_ref()
        );
        CallError(crate::secrets::mask(&text))
    }

    /// Checks and completes an action's parameters: unknown names, missing
    /// required ones, defaults.
    pub fn check_params(&self, action_name: &str, given: &Map<String, Value>) -> Result<Map<String, Value>, String> {
        let action = self.action(action_name)?;
        let mut out = Map::new();
        for (k, v) in given {
            if !action.params.contains_key(k) {
                let hint = did_you_mean(k, action.params.keys().map(String::as_str))
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                return Err(format!(
                    "`{}.{action_name}` has no parameter `{k}`{hint}",
                    self.descriptor.name
                ));
            }
            if !v.is_null() {
                let kind = action.params[k].kind;
                let v = coerce(kind, v);
                if let Some(wanted) = type_error(kind, &v) {
                    return Err(format!(
                        "the parameter `{k}` of `{}.{action_name}` must be {wanted}; it is {}",
                        self.descriptor.name,
                        snippet(v.to_string().as_bytes())
                    ));
                }
                out.insert(k.clone(), v);
            }
        }
        for (k, p) in &action.params {
            if !out.contains_key(k) {
                match &p.default {
                    Some(d) => {
                        out.insert(k.clone(), d.clone());
                    }
                    None if p.required => {
                        return Err(format!(
                            "`{}.{action_name}` needs the parameter `{k}`",
                            self.descriptor.name
                        ))
                    }
                    None => {}
                }
            }
        }
        Ok(out)
    }

    /// The request for an action with its parameters, before auth and paging.
    fn build(&self, action_name: &str, action: &Action, params: &Map<String, Value>) -> Result<Request, String> {
        let d = &self.descriptor;
        let mut params = params.clone();
        if let Auth::Static { params: extra, .. } = &d.auth {
            let ctx = minijinja::context! { config => self.config.clone() };
            for (k, v) in extra {
                // A single expression keeps its type: `userId: "{{ config.user_id }}"` stays a number.
                params.insert(k.clone(), self.templates.render(v, &ctx).map_err(|e| e.to_string())?);
            }
        }
        let path_ctx = minijinja::context! { params => Mj::from_serialize(&params), config => self.config.clone() };
        if let Some(env) = &d.envelope {
            let mut req = Request::new(env.method, self.url(&env.path));
            let ctx = minijinja::context! {
                params => Mj::from_serialize(&params),
                config => self.config.clone(),
                action => minijinja::context! { name => action_name, rpc => action.rpc.clone() },
            };
            req.body = Body::Raw(self.render_tree(&env.body, &ctx)?);
            return Ok(req);
        }
        let path = self
            .templates
            .render_str(&action.path, &path_ctx)
            .map_err(|e| format!("path: {e}"))?;
        let mut req = Request::new(action.method, self.url(&path));
        for (k, v) in params {
            let at = action
                .params
                .get(&k)
                .map(|p| action.location_of(p))
                .unwrap_or_else(|| self.default_location(action));
            if at != Location::Path {
                req.set(at, &k, v);
            }
        }
        Ok(req)
    }

    fn default_location(&self, action: &Action) -> Location {
        match action.method {
            Method::Get | Method::Delete => Location::Query,
            _ => match action.body {
                Some(crate::provider::model::BodyEncoding::Form) => Location::Form,
                _ => Location::Body,
            },
        }
    }

    /// Renders every string in a JSON structure; a string that is one
    /// expression keeps the expression's type.
    fn render_tree(&self, v: &Value, ctx: &Mj) -> Result<Value, String> {
        Ok(match v {
            Value::String(s) => self.templates.render(s, ctx).map_err(|e| e.to_string())?,
            Value::Array(a) => Value::Array(a.iter().map(|x| self.render_tree(x, ctx)).collect::<Result<_, _>>()?),
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, x) in m {
                    out.insert(k.clone(), self.render_tree(x, ctx)?);
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }

    /// The current token of a session or signed connection, logging in when
    /// there is none, it is too old, or it is `rejected` (the one a request
    /// was refused with). Requests share one login: one that was refused
    /// with a token already replaced meanwhile takes the new one.
    async fn token(&self, rejected: Option<&str>) -> Result<Option<String>, CallError> {
        let (lifetime, is_token) = match &self.descriptor.auth {
            Auth::Session { lifetime, .. } | Auth::Signed { lifetime, .. } => (lifetime.map(|l| l.0), true),
            _ => (None, false),
        };
        if !is_token {
            return Ok(None);
        }
        let mut guard = self.token.lock().await;
        if let Some((tok, at)) = guard.as_ref() {
            // Renew a little before the end of the lifetime.
            let fresh = lifetime.is_none_or(|l| at.elapsed() + l / 20 < l);
            if fresh && rejected != Some(tok.as_str()) {
                return Ok(Some(tok.clone()));
            }
        }
        let tok = match &self.descriptor.auth {
            Auth::Session { login, token, .. } => auth::session::login(self, login, token).await?,
            Auth::Signed {
                login,
                login_secret,
                token,
                sign_param,
                sign,
                ..
            } => auth::signed::login(self, login, login_secret, sign_param, sign, token).await?,
            _ => return Ok(None),
        };
        crate::secrets::register(&tok);
        tracing::debug!(provider = %self.descriptor.name, "Obtained a new token.");
        *guard = Some((tok.clone(), Instant::now()));
        Ok(Some(tok))
    }

    pub(crate) fn pick_token(
        &self,
        action: &str,
        req: &Request,
        body: &Value,
        path: &str,
    ) -> Result<String, CallError> {
        let sel = Selector::new(path).map_err(|e| self.error(action, req, e))?;
        match sel.first(body) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            _ => Err(self.error(action, req, format!("the response has no token at `{path}`"))),
        }
    }

    fn authenticate(&self, req: &mut Request, token: Option<&str>, default: Location) -> Result<(), String> {
        match &self.descriptor.auth {
            Auth::None => Ok(()),
            Auth::Static { headers, query, .. } => auth::static_creds::apply(self, req, headers, query),
            Auth::Session { headers, query, .. } => {
                auth::session::apply(self, req, token.unwrap_or_default(), headers, query)
            }
            Auth::Signed {
                params,
                sign_param,
                sign,
                ..
            } => auth::signed::apply(self, req, token.unwrap_or_default(), params, sign_param, sign, default),
        }
    }

    /// Calls an action and sends its records to `outlet`: each record of
    /// every page for list actions, the response itself otherwise. Returns
    /// how many records were sent.
    pub async fn stream(
        &self,
        action_name: &str,
        params: &Map<String, Value>,
        outlet: &Outlet,
        progress: &(dyn Fn(u64) + Send + Sync),
        key: Option<&str>,
        pages: Option<&Arc<crate::checkpoint::Tracker>>,
    ) -> Result<u64, CallError> {
        let action = self.action(action_name).map_err(CallError)?;
        let params = self.check_params(action_name, params).map_err(CallError)?;
        let pagination = self.pagination_of(action);
        let mut pager = paginate::build(pagination).map_err(CallError)?;
        // Pages are marked only where they can be found again by position;
        // a resumed read starts after the pages handled before.
        let tracker = pages.filter(|t| pager.skip(t.skipped()));
        let mut index = 0u64;
        let selector = action
            .records
            .as_deref()
            .map(Selector::new)
            .transpose()
            .map_err(CallError)?;
        let default = self.default_location(action);
        // Records of a simple list path stay JSON text, unless the
        // paginator reads its next cursor from inside the records.
        let raw = selector
            .as_ref()
            .and_then(|s| s.spread_keys())
            .filter(|keys| match pagination {
                Some(crate::provider::model::Pagination::Cursor { next, .. }) => {
                    !next.starts_with(&format!("$.{}", keys.join(".")))
                }
                _ => true,
            });
        let mut sent = 0u64;
        // Whether an answer of this read said the API is overloaded: pages
        // fetched at once then start with half as many in flight.
        let mut overloaded = false;
        let fail = |e: String| CallError(format!("{}.{action_name}: {e}", self.descriptor.name));
        let keyed = |mut req: Request| {
            if let (Some(header), Some(key)) = (&self.descriptor.idempotency_header, key) {
                req.headers.push((header.clone(), key.to_owned()));
            }
            req
        };
        loop {
            let mut req = keyed(self.build(action_name, action, &params).map_err(fail)?);
            pager.apply(&mut req, default);
            let parse = match raw {
                Some(path) => Parse::Split(path, outlet.wants_fields()),
                None => Parse::Whole,
            };
            let Answer {
                body,
                link,
                records,
                overloaded: slowed,
                ..
            } = self.send(action_name, action, &req, default, parse).await?;
            overloaded |= slowed;
            let (records, more) = match &selector {
                Some(sel) => {
                    let n = match &records {
                        Some(r) => r.len(),
                        None => {
                            // A missing list fails a page after the first
                            // only: before it, no page can be dropped.
                            list_of(sel, &body, index > 0).map_err(|e| self.error(action_name, &req, e))?;
                            sel.select(&body).len()
                        }
                    };
                    let more = pager
                        .advance(&Page {
                            body: &body,
                            link: link.as_deref(),
                            records: n,
                        })
                        .map_err(|e| self.error(action_name, &req, e))?;
                    let records = match records {
                        Some(r) => Records::Raw(r),
                        None => Records::Values(sel.take(body)),
                    };
                    (records.into_objects(), more)
                }
                None => (
                    Records::Values(vec![if body.is_object() {
                        body
                    } else {
                        serde_json::json!({ "value": body })
                    }]),
                    false,
                ),
            };
            sent += records.len() as u64;
            // A page the counts name as the last is never marked handled,
            // even when an empty page must confirm it: records that arrive
            // later may fill it.
            let tracker = tracker.filter(|_| pager.positioned());
            if !send_page(outlet, records, tracker, &mut index, !more || pager.said_end()).await {
                return Ok(sent);
            }
            progress(sent);
            if !more {
                return Ok(sent);
            }
            if let (Some((pages, width)), Some(sel)) = (pager.remaining(), &selector) {
                // The last page is known: fetch several at once, in order.
                // Each request is built when its turn comes (thousands of
                // pages must not sit in memory as requests). Answers are
                // parsed in another task while the next requests travel.
                // An empty one ends the read; when only an empty page may
                // end it (`confirm_end`), it goes on after them.
                let confirm = pager.confirms_end();
                let full = pager.full_page();
                // Answers wait for their turn in the fetcher (see
                // `fetch_in_order`), not here.
                let (tx, mut rx) = tokio::sync::mpsc::channel(1);
                let (first, last) = (*pages.start(), *pages.end());
                let pager_ref = &pager;
                let params = &params;
                let slowed = |item: &Result<(u64, Request, Parsed), CallError>| {
                    item.as_ref().is_ok_and(|(_, _, parsed)| parsed.overloaded)
                };
                let path: Option<Arc<[String]>> = raw.map(Arc::from);
                let fields = outlet.wants_fields();
                let fetch = fetch_in_order(pages, Window::new(width, overloaded), slowed, tx, |page| {
                    let path = path.clone();
                    async move {
                        let mut req = self.build(action_name, action, params).map_err(fail)?;
                        pager_ref.apply_page(&mut req, default, page);
                        let answer = self.send(action_name, action, &req, default, Parse::Later).await?;
                        let bytes = answer.bytes.unwrap_or_default();
                        // Parsed in a task of its own (on the runtime's
                        // workers, not a new thread) as soon as it comes,
                        // beside the other pages and the requests; the
                        // request's slot is free once the answer is in.
                        let body = tokio::spawn(async move {
                            match path {
                                Some(path) => parse_split(bytes, &path, fields),
                                None => parse_body(&bytes).map(|b| (b, None)),
                            }
                        });
                        let parsed = Parsed {
                            body,
                            overloaded: answer.overloaded,
                        };
                        Ok::<_, CallError>((page, req, parsed))
                    }
                });
                // `move`: when it stops early, `rx` goes with it and the fetches stop.
                let consume = async move {
                    while let Some(item) = rx.recv().await {
                        let (page, req, parsed) = item?;
                        let (body, raw_records) = parsed
                            .body
                            .await
                            .map_err(|e| CallError(format!("internal error: {e}")))?
                            .map_err(|e| self.error(action_name, &req, e))?;
                        if let Some(msg) = self.body_error(&body) {
                            return Err(self.error(
                                action_name,
                                &req,
                                format!("the API answered with an error: {msg}"),
                            ));
                        }
                        let records = match raw_records {
                            Some(r) => Records::Raw(r),
                            None => {
                                list_of(sel, &body, true).map_err(|e| self.error(action_name, &req, e))?;
                                Records::Values(sel.take(body))
                            }
                        }
                        .into_objects();
                        let (empty, n) = (records.is_empty(), records.len() as u64);
                        sent += n;
                        // An empty page ends the read whatever the count
                        // said (an inflated `last_page` is not followed).
                        let ends = empty || page == last;
                        if empty && page < last && !confirm {
                            tracing::warn!(
                                provider = %self.descriptor.name,
                                action = action_name,
                                "Page {page} came back empty, before page {last}, the last one the answers named; the read ends here."
                            );
                        }
                        // Offsets past a page shorter than the limit are
                        // not where the records after it start: the read
                        // goes on from right after it, one page at a time.
                        let short = full.is_some_and(|size| !ends && n < size);
                        // (Nor does it count for the checkpoint: the pages
                        // after it are not where their numbers put them.)
                        let tracker = tracker.filter(|_| !short);
                        if !send_page(outlet, records, tracker, &mut index, ends).await {
                            return Ok((sent, index, false, None));
                        }
                        progress(sent);
                        if short {
                            return Ok((sent, index, true, Some((page, n))));
                        }
                        if empty || (ends && !confirm) {
                            return Ok((sent, index, false, None));
                        }
                    }
                    Ok((sent, index, confirm, None))
                };
                let (slowed, result) = tokio::join!(fetch, consume);
                overloaded |= slowed;
                let (goes_on, short);
                (sent, index, goes_on, short) = result?;
                if !goes_on {
                    return Ok(sent);
                }
                match short {
                    Some((page, n)) => pager.after_short_page(page, n),
                    None => {
                        pager.skip(last + 1 - first);
                    }
                }
            }
        }
    }
}

/// Fetches every page of `pages`, as many at once as `window` says, and
/// sends the answers to `tx` in page order. A page answered early frees its
/// slot at once rather than waiting for the pages before it (one slow page
/// does not stall the others); a few more answers than the window holds wait
/// for their turn (see [`Window::ahead`]). While an answer waits for room in `tx` (a slow reader), the
/// requests in flight are still read, so none of them times out for it.
/// `overloaded` tells an answer that said the API is overloaded. Stops, and
/// drops the requests in flight, as soon as the receiver is gone. True when
/// an answer said the API is overloaded.
async fn fetch_in_order<T, F, Fut>(
    pages: std::ops::RangeInclusive<u64>,
    mut window: Window,
    overloaded: impl Fn(&T) -> bool,
    tx: tokio::sync::mpsc::Sender<T>,
    fetch: F,
) -> bool
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    use futures::StreamExt;
    let (mut next, last) = (*pages.start(), *pages.end());
    let mut due = next;
    let mut running = futures::stream::FuturesUnordered::new();
    let mut answered = std::collections::BTreeMap::new();
    loop {
        while running.len() < window.now() && next <= last && next < due + window.ahead() {
            let page = next;
            let answer = fetch(page);
            window.sent(page);
            running.push(async move {
                let sent = Instant::now();
                let answer = answer.await;
                (page, answer, sent.elapsed())
            });
            next += 1;
        }
        // Whether the read waits for the API alone: the window holds back a
        // request, and the reader has nothing to take (not the reader, nor
        // the end of the pages, is what it waits for).
        let ready = answered.contains_key(&due);
        let waiting = !ready && running.len() >= window.now() && next <= last && next < due + window.ahead();
        if running.is_empty() && !ready {
            return window.overloaded();
        }
        tokio::select! {
            biased;
            () = tx.closed() => return window.overloaded(),
            room = tx.reserve(), if ready => {
                let Ok(room) = room else { return window.overloaded() };
                if let Some(answer) = answered.remove(&due) {
                    room.send(answer);
                }
                due += 1;
            }
            Some((page, answer, took)) = running.next(), if !running.is_empty() => {
                let overloaded = overloaded(&answer).then_some(page);
                window.answered(Instant::now(), took, waiting, overloaded);
                answered.insert(page, answer);
            }
        }
    }
}

/// How many pages a read keeps in flight. It starts at `width.start`, and
/// probes for more while the read waits for an API that is slow to answer
/// but not slowed by the requests (latency, not load): the mean time of the
/// first window of answers the read waited for is the base; after each
/// later window whose answers the read mostly waited for, and whose mean
/// stays within [`Window::STEADY`] of the base, one more page goes out at
/// once, up to `width.most`. Where requests queue at the server, answers
/// take longer as more go at once, and the window stops growing; where the
/// reader is slower than the API, the read does not wait for answers, and
/// it does not grow either. An answer that says the API is overloaded (429,
/// or a status the descriptor retries) halves the window, a fixed one too,
/// for the rest of the read.
struct Window {
    start: usize,
    now: usize,
    most: usize,
    /// The mean time of the first window of answers the read waited for.
    base: Option<f64>,
    /// The window being measured: since when, how many answers came, how
    /// many of them the read waited for (see [`Window::answered`]), and
    /// their seconds.
    since: Option<Instant>,
    answers: usize,
    waited: usize,
    sum: f64,
    /// The answers a second before the last page added, while it is on
    /// trial.
    trial: Option<f64>,
    /// One past the last page sent, and the first page sent after the
    /// window was last halved: the pages before it were already on their
    /// way, and what they say of an overload has been heard.
    sent: u64,
    heard_below: u64,
    overloaded: bool,
}

impl Window {
    /// How much slower a window of answers may be, on average, than the
    /// first, and still show no queueing.
    const STEADY: f64 = 1.2;

    /// How many more answers a second a page more in flight must bring to
    /// be kept.
    const GAIN: f64 = 1.1;

    /// The shortest time a window is measured over (and at least as many
    /// answers as it holds): over less, how often answers come is mostly
    /// noise.
    const SPAN: Duration = Duration::from_millis(100);

    /// The window of a read whose pages go `width` at once; halved from
    /// the start when an answer of the read already said the API is
    /// overloaded.
    fn new(width: Width, overloaded: bool) -> Self {
        let mut w = Window {
            start: width.start.max(1),
            now: width.start.max(1),
            most: width.most.max(width.start).max(1),
            base: None,
            since: None,
            answers: 0,
            waited: 0,
            sum: 0.0,
            trial: None,
            sent: 0,
            heard_below: 0,
            overloaded: false,
        };
        if overloaded {
            w.slow_down();
        }
        w
    }

    fn now(&self) -> usize {
        self.now
    }

    /// How far past the page whose turn it is requests may go: the window
    /// and as many again as it started with, so that one slow page does not
    /// stall the others.
    fn ahead(&self) -> u64 {
        (self.now + self.start) as u64
    }

    fn overloaded(&self) -> bool {
        self.overloaded
    }

    fn slow_down(&mut self) {
        self.overloaded = true;
        self.now = (self.now / 2).max(1);
        self.most = self.now;
        self.trial = None;
        self.heard_below = self.sent;
    }

    /// Page `page` was sent.
    fn sent(&mut self, page: u64) {
        self.sent = self.sent.max(page + 1);
    }

    /// An answer that came `at` and took `took`; `waited` when the read
    /// was waiting for the API alone (the window held the next request
    /// back, and the reader had nothing to take); `overloaded` the page,
    /// when the API said it was overloaded before answering it. Pages sent
    /// before the window was last halved do not halve it again: a burst of
    /// 429s on the pages in flight halves it once. A window grows only when the read waited for at least
    /// half its answers: where the reader is what holds the read back, more
    /// pages in flight would only take memory. A page added is kept only if
    /// the next window's answers come at least [`Window::GAIN`] times as
    /// often; otherwise it is given back, and the window stays.
    fn answered(&mut self, at: Instant, took: Duration, waited: bool, overloaded: Option<u64>) {
        if let Some(page) = overloaded {
            if page >= self.heard_below {
                self.slow_down();
            }
            return;
        }
        if self.now >= self.most && self.trial.is_none() {
            return;
        }
        let Some(since) = self.since else {
            self.since = Some(at);
            return;
        };
        self.answers += 1;
        if waited {
            self.waited += 1;
            self.sum += took.as_secs_f64();
        }
        let span = at.saturating_duration_since(since);
        if self.answers < self.now || span < Self::SPAN {
            return;
        }
        let rate = self.answers as f64 / span.as_secs_f64();
        let (waited, sum) = (self.waited, self.sum);
        (self.since, self.answers, self.waited, self.sum) = (Some(at), 0, 0, 0.0);
        if let Some(before) = self.trial.take() {
            if rate < before * Self::GAIN {
                self.now -= 1;
                self.most = self.now;
                tracing::debug!(
                    pages = self.now,
                    "One more page at once brought no more answers; back to {}.",
                    self.now
                );
                return;
            }
        }
        if self.now >= self.most || waited * 2 < self.now {
            return;
        }
        let mean = sum / waited as f64;
        let base = *self.base.get_or_insert(mean);
        if mean <= base * Self::STEADY {
            self.trial = Some(rate);
            self.now += 1;
            tracing::debug!(
                pages = self.now,
                "Answers stay as fast with more in flight; one more page at once."
            );
        }
    }
}

/// Sends the records of the `index`th page of a read with the page's mark
/// (none when the read is not followed). The page that `ends` the read gets
/// no mark: records that arrive later may fill it, so a resumed run must
/// read it again. False when no consumer is left.
async fn send_page(
    outlet: &Outlet,
    records: Records,
    tracker: Option<&Arc<crate::checkpoint::Tracker>>,
    index: &mut u64,
    ends: bool,
) -> bool {
    let marks = match tracker {
        Some(t) if !ends => t.mark(*index),
        _ => Marks::default(),
    };
    *index += 1;
    if records.is_empty() {
        marks.settle();
        return true;
    }
    outlet.send(Batch::marked(records, marks)).await
}

impl Connection {
    /// The paginator an action uses: its own, none, or the provider's for
    /// list actions.
    fn pagination_of<'a>(&'a self, action: &'a Action) -> Option<&'a crate::provider::model::Pagination> {
        match (&action.pagination, &action.records) {
            (Some(ActionPagination::Off(_)), _) | (None, None) => None,
            (Some(ActionPagination::Custom(p)), _) => Some(p),
            (None, Some(_)) => self.descriptor.pagination.as_ref(),
        }
    }

    /// The first request an action would send, for `--dry-run`: method, URL,
    /// headers and body, with secrets masked. Nothing is sent; a token that
    /// a login would give shows as `<token>`.
    pub fn preview(&self, action_name: &str, params: &Map<String, Value>) -> Result<String, CallError> {
        let action = self.action(action_name).map_err(CallError)?;
        let params = self.check_params(action_name, params).map_err(CallError)?;
        let pager = paginate::build(self.pagination_of(action)).map_err(CallError)?;
        let default = self.default_location(action);
        let fail = |e: String| CallError(format!("{}.{action_name}: {e}", self.descriptor.name));
        let mut req = self.build(action_name, action, &params).map_err(fail)?;
        pager.apply(&mut req, default);
        let token = matches!(self.descriptor.auth, Auth::Session { .. } | Auth::Signed { .. }).then_some("<token>");
        self.authenticate(&mut req, token, default).map_err(fail)?;
        let mut text = format!("{} {}", req.method.as_str(), req.full_url());
        for (k, v) in &self.descriptor.headers {
            text.push_str(&format!("\n  {k}: {}", self.render_config(v).map_err(fail)?));
        }
        for (k, v) in &req.headers {
            text.push_str(&format!("\n  {k}: {v}"));
        }
        match &req.body {
            Body::None => {}
            Body::Json(m) => text.push_str(&format!("\n  {}", Value::Object(m.clone()))),
            Body::Raw(v) => text.push_str(&format!("\n  {v}")),
            Body::Form(m) => text.push_str(&format!("\n  {}", crate::php::build_query(m))),
        }
        Ok(crate::secrets::mask(&text))
    }

    /// Sends a request made by the connection itself (a login), with retries
    /// but no auth, and returns the parsed body.
    pub(crate) async fn send_plain(&self, action: &str, req: &Request) -> Result<Value, CallError> {
        self.exchange(action, req, true, None, Parse::Whole)
            .await
            .map(|a| a.body)
    }

    /// Sends an action's request: authenticates it, retries what is safe,
    /// logs in again once when the token is rejected.
    async fn send(
        &self,
        action_name: &str,
        action: &Action,
        base: &Request,
        default: Location,
        parse: Parse<'_>,
    ) -> Result<Answer, CallError> {
        let renew_on: &[u16] = match &self.descriptor.auth {
            Auth::Session { renew_on, .. } | Auth::Signed { renew_on, .. } => renew_on,
            _ => &[],
        };
        let mut renewed = false;
        loop {
            let token = self.token(None).await?;
            let mut req = base.clone();
            self.authenticate(&mut req, token.as_deref(), default)
                .map_err(|e| self.error(action_name, &req, e))?;
            // A write sent with the API's idempotency key may be sent again:
            // the API applies it once.
            let keyed = self
                .descriptor
                .idempotency_header
                .as_ref()
                .is_some_and(|h| req.headers.iter().any(|(k, _)| k == h));
            match self
                .exchange(
                    action_name,
                    &req,
                    action.is_idempotent() || keyed,
                    Some(renew_on),
                    parse,
                )
                .await
            {
                Err(e) if e.0.contains(REJECTED) && !renewed => {
                    tracing::info!(provider = %self.descriptor.name, "Token rejected; logging in again.");
                    renewed = true;
                    self.token(Some(token.as_deref().unwrap_or_default())).await?;
                }
                other => return other,
            }
        }
    }

    /// One request with retries; the body parsed and checked for errors.
    async fn exchange(
        &self,
        action: &str,
        req: &Request,
        idempotent: bool,
        renew_on: Option<&[u16]>,
        parse: Parse<'_>,
    ) -> Result<Answer, CallError> {
        let policy = &self.descriptor.retry;
        let mut attempt = 1u32;
        // Whether an answer before the one returned said the API is
        // overloaded (429, or a status the descriptor retries).
        let mut overloaded = false;
        loop {
            if let Some(l) = &self.limiter {
                tokio::select! {
                    () = l.acquire() => {}
                    () = until_stopped() => {}
                }
            }
            if stopping() {
                return Err(self.error(action, req, NOT_SENT_STOPPING));
            }
            let outcome = self.once(action, req).await;
            let (retry, wait_hint, err) = match outcome {
                Ok((status, headers, bytes)) => {
                    if renew_on.is_some_and(|r| r.contains(&status)) {
                        return Err(self.error(action, req, format!("HTTP {status}: {REJECTED}")));
                    }
                    let retry_after = headers
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after);
                    if status == 429 || self.descriptor.errors.retry_on.contains(&status) {
                        overloaded = true;
                    }
                    if status == 429 {
                        (
                            true,
                            retry_after,
                            self.error(
                                action,
                                req,
                                format!("HTTP 429: too many requests{}", self.message_suffix(&bytes)),
                            ),
                        )
                    } else if self.descriptor.errors.retry_on.contains(&status) {
                        let why = format!("HTTP {status}{}", self.message_suffix(&bytes));
                        let e = if idempotent {
                            self.error(action, req, why)
                        } else {
                            // The server failed while handling it: the write
                            // may have happened.
                            self.error(action, req, format!("{why}; {MAYBE_SENT}, so it is not sent again"))
                        };
                        (idempotent, retry_after, e)
                    } else if !(200..300).contains(&status)
                        || (self.descriptor.errors.success.as_ref()).is_some_and(|ok| !ok.contains(&status))
                    {
                        return Err(self.error(action, req, format!("HTTP {status}{}", self.message_suffix(&bytes))));
                    } else {
                        let link = headers
                            .get(reqwest::header::LINK)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        let (body, records) = match parse {
                            Parse::Later => {
                                return Ok(Answer {
                                    body: Value::Null,
                                    link,
                                    records: None,
                                    bytes: Some(bytes),
                                    overloaded,
                                })
                            }
                            Parse::Split(path, fields) => parse_split(bytes, path, fields),
                            Parse::Whole => parse_body(&bytes).map(|b| (b, None)),
                        }
                        .map_err(|e| self.error(action, req, e))?;
                        if let Some(msg) = self.body_error(&body) {
                            return Err(self.error(action, req, format!("the API answered with an error: {msg}")));
                        }
                        return Ok(Answer {
                            body,
                            link,
                            records,
                            bytes: None,
                            overloaded,
                        });
                    }
                }
                Err(Failure::NotSent(e)) => (true, None, self.error(action, req, e)),
                Err(Failure::MaybeSent(e)) => {
                    let e = if idempotent {
                        self.error(action, req, e)
                    } else {
                        self.error(action, req, format!("{e}; {MAYBE_SENT}, so it is not sent again"))
                    };
                    (idempotent, None, e)
                }
            };
            if !retry || attempt >= policy.attempts {
                return Err(err);
            }
            let wait = wait_hint.unwrap_or_else(|| backoff(policy.backoff.0, policy.max_backoff.0, attempt));
            tracing::warn!(provider = %self.descriptor.name, action, attempt, wait_ms = wait.as_millis() as u64, "Retrying: {}", err.0);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                // Stopping: the last answer is the one to report.
                () = until_stopped() => return Err(err),
            }
            attempt += 1;
        }
    }

    async fn once(
        &self,
        action: &str,
        req: &Request,
    ) -> Result<(u16, reqwest::header::HeaderMap, bytes::Bytes), Failure> {
        let method =
            reqwest::Method::from_bytes(req.method.as_str().as_bytes()).map_err(|e| Failure::NotSent(e.to_string()))?;
        let mut rb = self.client.request(method, req.full_url());
        for (k, v) in self.descriptor.headers.iter() {
            let v = self.render_config(v).map_err(Failure::NotSent)?;
            rb = rb.header(k.as_str(), v);
        }
        for (k, v) in &req.headers {
            rb = rb.header(k.as_str(), v.as_str());
        }
        rb = match &req.body {
            Body::None => rb,
            Body::Json(m) => rb.json(m),
            Body::Raw(v) => rb.json(v),
            Body::Form(m) => rb
                .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(crate::php::build_query(m)),
        };
        tracing::debug!(provider = %self.descriptor.name, action, method = req.method.as_str(), url = %crate::secrets::mask(&req.full_url()), "Sending request.");
        let resp = rb.send().await.map_err(|e| {
            let text = describe_reqwest(&e);
            if e.is_connect() {
                Failure::NotSent(text)
            } else {
                Failure::MaybeSent(text)
            }
        })?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        // Read whole, up to the descriptor's `max_answer`: an answer that
        // never ends must not fill the memory.
        let max = usize::try_from(self.descriptor.max_answer.0).unwrap_or(usize::MAX);
        let too_large = |max: usize| {
            let size = if max >= 1 << 20 {
                format!("{} MiB", max >> 20)
            } else {
                format!("{} KiB", max >> 10)
            };
            Failure::MaybeSent(format!(
                "the answer is larger than {size} (the descriptor's `max_answer`); ask for smaller pages, or raise it"
            ))
        };
        // A length given up front is all the answer may hold (the HTTP
        // framing ends it there): read whole at once.
        match resp.content_length() {
            Some(n) if n > max as u64 => return Err(too_large(max)),
            Some(_) if !resp.headers().contains_key(reqwest::header::CONTENT_ENCODING) => {
                let bytes = resp
                    .bytes()
                    .await
                    .map_err(|e| Failure::MaybeSent(format!("the answer broke off: {}", describe_reqwest(&e))))?;
                tracing::trace!(provider = %self.descriptor.name, action, status, bytes = bytes.len(), "Got response.");
                return Ok((status, headers, bytes));
            }
            _ => {}
        }
        let mut resp = resp;
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| Failure::MaybeSent(format!("the answer broke off: {}", describe_reqwest(&e))))?
        {
            if body.len() + chunk.len() > max {
                return Err(too_large(max));
            }
            body.extend_from_slice(&chunk);
        }
        let bytes = bytes::Bytes::from(body);
        tracing::trace!(provider = %self.descriptor.name, action, status, bytes = bytes.len(), "Got response.");
        Ok((status, headers, bytes))
    }

    fn message_suffix(&self, bytes: &[u8]) -> String {
        match parse_body(bytes).ok().and_then(|b| self.message_of(&b)) {
            Some(m) => format!(": {m}"),
            None if bytes.is_empty() => String::new(),
            None => format!(": {}", snippet(bytes)),
        }
    }

    fn message_of(&self, body: &Value) -> Option<String> {
        self.descriptor.errors.message.iter().find_map(|p| {
            let sel = Selector::new(p).ok()?;
            match sel.first(body)? {
                Value::Null => None,
                Value::String(s) if s.is_empty() => None,
                Value::String(s) => Some(s.clone()),
                Value::Object(m) if m.is_empty() => None,
                Value::Object(m) => Some(
                    m.iter()
                        .map(|(k, v)| {
                            format!(
                                "{k}: {}",
                                v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
                other => Some(other.to_string()),
            }
        })
    }

    fn body_error(&self, body: &Value) -> Option<String> {
        for rule in &self.descriptor.errors.in_body {
            let Ok(sel) = Selector::new(&rule.path) else { continue };
            let hit = match (sel.first(body), &rule.equals) {
                (Some(v), Some(want)) => v == want,
                (Some(v), None) => {
                    !matches!(v, Value::Null | Value::Bool(false))
                        && !v.as_str().is_some_and(str::is_empty)
                        && !v.as_object().is_some_and(|o| o.is_empty())
                        && !v.as_array().is_some_and(|a| a.is_empty())
                }
                (None, _) => false,
            };
            if hit {
                let parts: Vec<String> = rule
                    .message
                    .iter()
                    .flat_map(|m| m.as_slice())
                    .filter_map(|m| Selector::new(m).ok()?.first(body).cloned())
                    .filter_map(|v| match v {
                        Value::Null => None,
                        Value::String(s) if s.is_empty() => None,
                        Value::String(s) => Some(s),
                        v => Some(v.to_string()),
                    })
                    .collect();
                return Some(match parts.is_empty() {
                    false => parts.join(": "),
                    true => self
                        .message_of(body)
                        .unwrap_or_else(|| snippet(body.to_string().as_bytes())),
                });
            }
        }
        None
    }
}

/// Marks an error after which a write may or may not have happened.
pub const MAYBE_SENT: &str = "the request may have reached the server";

/// Marks an error that means the token was rejected.
const REJECTED: &str = "the token was rejected";

enum Failure {
    /// The request certainly did not reach the server.
    NotSent(String),
    /// It may have.
    MaybeSent(String),
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "the request timed out".into();
    }
    if e.is_connect() {
        return "cannot connect".into();
    }
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    // reqwest puts the URL in its messages; the caller names it already.
    if let Some(url) = e.url() {
        msg = msg.replace(&format!(" ({url})"), "").replace(url.as_str(), "");
    }
    msg
}

/// An answer: the parsed body (with the records left out when they were
/// kept as text), the `Link` header, and the records as text.
pub(crate) struct Answer {
    pub body: Value,
    pub link: Option<String>,
    pub records: Option<crate::rawjson::RawRecords>,
    /// The body unparsed, when parsing was left to the caller.
    pub bytes: Option<bytes::Bytes>,
    /// Whether the API said it was overloaded (429, or a status the
    /// descriptor retries) before this answer came.
    pub overloaded: bool,
}

/// A page of a parallel read, being parsed: the document (with its records
/// as text where they can stay so), or why it is not JSON.
struct Parsed {
    body: tokio::task::JoinHandle<Result<(Value, Option<crate::rawjson::RawRecords>), String>>,
    /// See [`Answer::overloaded`].
    overloaded: bool,
}

/// How `exchange` treats a successful body.
#[derive(Clone, Copy)]
pub(crate) enum Parse<'a> {
    /// Parse it whole.
    Whole,
    /// Keep the records of the list at this path as text; with `true`,
    /// find the fields of each too (see [`crate::rawjson::split`]).
    Split(&'a [String], bool),
    /// Leave it to the caller (which checks it for errors too).
    Later,
}

/// Parses a body whose records (the list at `path`) stay text, with the
/// fields of each found when `fields` is set.
fn parse_split(
    bytes: bytes::Bytes,
    path: &[String],
    fields: bool,
) -> Result<(Value, Option<crate::rawjson::RawRecords>), String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok((Value::Null, None));
    }
    if simdutf8::basic::from_utf8(&bytes).is_err() {
        return Err(format!("the response is not valid UTF-8: {}", snippet(&bytes)));
    }
    // The body's own buffer where nothing else holds it: no copy.
    let vec = Vec::from(bytes);
    // SAFETY: checked to be UTF-8 just above.
    let text = unsafe { String::from_utf8_unchecked(vec) };
    crate::rawjson::split(text, path, fields)
        .map_err(|(e, text)| format!("the response is not valid JSON ({e}): {}", snippet(text.as_bytes())))
}

/// Checks that a list page holds the list its records come from (for a
/// plain path such as `$.data[*]`: a list, or a map of records keyed by ID
/// such as `{"17": {...}}`, at `$.data`).
/// - On a page after the first (`later`), an answer without it (an empty
///   body, `{"maintenance": true}`, `"data": null`) is not taken as an empty
///   page: that would end the listing and drop the pages after it without a
///   word. (A first answer like that is an empty list.)
/// - On any page, a map with a value that is no object is an answer of
///   another shape (a wrapper such as `{"status": "ok", "items": [...]}`),
///   whose fields would each become a record.
fn list_of(sel: &Selector, body: &Value, later: bool) -> Result<(), String> {
    let Some(keys) = sel.spread_keys() else {
        return Ok(());
    };
    let place = || {
        if keys.is_empty() {
            "$".to_owned()
        } else {
            format!("$.{}", keys.join("."))
        }
    };
    let found = keys.iter().try_fold(body, |v, k| v.get(k.as_str()));
    match found {
        Some(Value::Object(m)) if m.values().any(|v| !v.is_object()) => Err(format!(
            "the answer has a map at `{}` where the records' list should be, and its fields are not records; \
             check the action's `records:` against this answer: {}",
            place(),
            snippet(body.to_string().as_bytes())
        )),
        Some(Value::Array(_) | Value::Object(_)) => Ok(()),
        _ if !later => Ok(()),
        Some(other) => Err(format!(
            "the answer has {} at `{}` where the records' list should be, so the listing cannot be read on: {}",
            snippet(other.to_string().as_bytes()),
            place(),
            snippet(body.to_string().as_bytes())
        )),
        None => Err(format!(
            "the answer has no `{}`, where the records' list should be, so the listing cannot be read on: {}",
            place(),
            snippet(body.to_string().as_bytes())
        )),
    }
}

fn parse_body(bytes: &[u8]) -> Result<Value, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(bytes).map_err(|e| format!("the response is not valid JSON ({e}): {}", snippet(bytes)))
}

/// The start of a body, for a message. Masked before it is cut, so that a
/// secret the cut runs through is masked whole rather than shown in part.
/// Only the first MiB is looked at: what the masks take out of it is far
/// less, so nothing past it moves up into the first 200 characters.
pub(crate) fn snippet(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(1 << 20)];
    let text = crate::secrets::mask(&String::from_utf8_lossy(head));
    let t: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        format!("{t}...")
    } else {
        t
    }
}

fn parse_retry_after(v: &str) -> Option<Duration> {
    let secs: u64 = v.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(300)))
}

/// Exponential backoff with jitter: between half and all of base * 2^(n-1).
fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let full = base.as_secs_f64() * 2f64.powi(attempt.saturating_sub(1) as i32);
    let capped = full.min(max.as_secs_f64());
    let jitter: f64 = rand::random::<f64>() * 0.5 + 0.5;
    Duration::from_secs_f64(capped * jitter)
}

/// A parameter value in the type its descriptor declares, where the change
/// loses nothing: `7` for a text parameter is sent as `"7"` (a phone or an ID
/// typed on the command line or produced by a script stays text), `"7"` for
/// a number parameter as `7`, and `"true"` for a boolean as `true`. What
/// still does not fit the type is refused (see [`type_error`]).
fn coerce(kind: ParamType, v: &Value) -> Value {
    match (kind, v) {
        (ParamType::String | ParamType::Date, Value::Number(n)) => Value::String(n.to_string()),
        (ParamType::String, Value::Bool(b)) => Value::String(b.to_string()),
        (ParamType::Integer, Value::String(s)) => match s.trim().parse::<i64>() {
            Ok(n) => Value::from(n),
            Err(_) => s
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(whole)
                .unwrap_or_else(|| v.clone()),
        },
        // `5.0` (a division, `round`, a sum in Lua) is the whole number 5.
        (ParamType::Integer, Value::Number(n)) if !n.is_i64() && !n.is_u64() => {
            n.as_f64().and_then(whole).unwrap_or_else(|| v.clone())
        }
        (ParamType::Number, Value::String(s)) => serde_json::from_str::<serde_json::Number>(s.trim())
            .map(Value::Number)
            .unwrap_or_else(|_| v.clone()),
        (ParamType::Boolean, Value::String(s)) => match s.trim() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => v.clone(),
        },
        _ => v.clone(),
    }
}

/// The whole number `f` is, if it is one an i64 holds.
fn whole(f: f64) -> Option<Value> {
    (f.fract() == 0.0 && f.abs() < 9.0e15).then(|| Value::from(f as i64))
}

/// Why `v` (after [`coerce`]) cannot be a parameter of this type, if it
/// cannot: a number parameter given text that is no number, a list given a
/// map, a date parameter text that is no date. Text takes any scalar, and
/// `any` takes anything.
fn type_error(kind: ParamType, v: &Value) -> Option<&'static str> {
    let fits = match kind {
        ParamType::Integer => v.is_i64() || v.is_u64(),
        ParamType::Number => v.is_number(),
        ParamType::Boolean => v.is_boolean(),
        ParamType::String => !v.is_array() && !v.is_object(),
        // Sent as given, once it reads as a date.
        ParamType::Date => v
            .as_str()
            .is_some_and(|s| s.trim().is_empty() || crate::dates::parse(s).is_some()),
        ParamType::Array => v.is_array(),
        ParamType::Object => v.is_object(),
        _ => true,
    };
    (!fits).then_some(match kind {
        ParamType::Integer => "a whole number",
        ParamType::Number => "a number",
        ParamType::Boolean => "true or false",
        ParamType::Array => "a list",
        ParamType::Object => "a map",
        ParamType::Date => {
            "a date or date-time (2024-05-01, 2024-05-01 10:00:00, RFC 3339, 01.05.2024 or Unix seconds)"
        }
        _ => "text",
    })
}

#[cfg(test)]
mod tests {
    use super::{fetch_in_order, Window};
    use crate::provider::model::Width;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::sync::Notify;

    #[tokio::test]
    async fn a_slow_page_holds_back_its_answer_but_not_the_next_fetches() {
        let fourth_done = Arc::new(Notify::new());
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (first_done, fifth_early) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let fetch = fetch_in_order(
            1..=6,
            Window::new(Width::of(Some(2)), false),
            |_| false,
            tx,
            |page| {
                let (fourth_done, running, most) = (fourth_done.clone(), running.clone(), most.clone());
                let (first_done, fifth_early) = (first_done.clone(), fifth_early.clone());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    if page == 5 {
                        fifth_early.store(!first_done.load(Ordering::SeqCst), Ordering::SeqCst);
                    }
                    // Page 1 answers only after page 4: with each slot held
                    // until its page's turn, page 3 would never start.
                    if page == 1 {
                        fourth_done.notified().await;
                    }
                    tokio::task::yield_now().await;
                    match page {
                        1 => first_done.store(true, Ordering::SeqCst),
                        4 => fourth_done.notify_one(),
                        _ => {}
                    }
                    running.fetch_sub(1, Ordering::SeqCst);
                    page * 10
                }
            },
        );
        let collect = async {
            let mut got = Vec::new();
            while let Some(answer) = rx.recv().await {
                got.push(answer);
            }
            got
        };
        let (_, got) = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            tokio::join!(fetch, collect)
        })
        .await
        .expect("page 1 waited for page 4, which never ran");
        assert_eq!(got, [10, 20, 30, 40, 50, 60], "answers in page order");
        assert_eq!(most.load(Ordering::SeqCst), 2, "never more than the width at once");
        // Twice the width may wait for their turn: pages 1 to 4, not 5.
        assert!(
            !fifth_early.load(Ordering::SeqCst),
            "page 5 started before page 1 was answered"
        );
    }

    #[tokio::test]
    async fn fetching_stops_when_nobody_reads_the_answers() {
        let fetched = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        drop(rx);
        let count = fetched.clone();
        fetch_in_order(
            1..=100,
            Window::new(Width::of(None), false),
            |_| false,
            tx,
            move |_| {
                let count = count.clone();
                async move { count.fetch_add(1, Ordering::SeqCst) }
            },
        )
        .await;
        assert!(
            fetched.load(Ordering::SeqCst) <= 4,
            "{} pages fetched",
            fetched.load(Ordering::SeqCst)
        );
    }

    #[test]
    fn the_path_of_a_base_url_is_what_follows_its_host() {
        use super::base_path;
        assert_eq!(base_path("https://neiros.cloud/api/userapi/v1"), "/api/userapi/v1");
        assert_eq!(base_path("https://api.pozvonim.com/v2u/"), "/v2u");
        assert_eq!(
            base_path("https://{{ config.crm_url }}/backend/public"),
            "/backend/public"
        );
        assert_eq!(base_path("https://{{ config.a ~ '/x' }}/api?k=1"), "/api");
        assert_eq!(base_path("http://127.0.0.1:8080"), "");
        assert_eq!(base_path("http://host?k=/v"), "");
    }

    /// An API seen through a window: each answer takes `took` (given the
    /// pages in flight), and comes `every` after the one before.
    struct Api {
        at: std::time::Instant,
    }

    impl Api {
        fn new() -> Self {
            Api {
                at: std::time::Instant::now(),
            }
        }

        /// `n` answers the read waited for.
        fn feed(&mut self, w: &mut Window, n: usize, took: impl Fn(usize) -> f64, every: impl Fn(usize) -> f64) {
            for _ in 0..n {
                let now = w.now();
                self.at += Duration::from_secs_f64(every(now) / 1000.0);
                w.answered(self.at, Duration::from_secs_f64(took(now) / 1000.0), true, None);
            }
        }
    }

    #[test]
    fn the_window_grows_while_more_in_flight_bring_more_answers() {
        // 20 ms an answer whatever the load: k pages in flight bring k
        // answers every 20 ms.
        let mut w = Window::new(Width::of(None), false);
        assert_eq!(w.now(), 4);
        let mut api = Api::new();
        api.feed(&mut w, 20, |_| 20.0, |k| 20.0 / k as f64);
        assert_eq!(w.now(), 4, "a window lasts 100 ms at least");
        api.feed(&mut w, 1, |_| 20.0, |k| 20.0 / k as f64);
        assert_eq!(w.now(), 5, "the first window sets the base; then one more");
        api.feed(&mut w, 200, |_| 20.0, |k| 20.0 / k as f64);
        assert_eq!(w.now(), 8, "up to its most");
        // Answers that vary a lot but not with the load: their mean counts.
        let mut w = Window::new(Width::of(None), false);
        let mut api = Api::new();
        let mut flip = false;
        for _ in 0..400 {
            flip = !flip;
            let took = if flip { 200.0 } else { 400.0 };
            api.feed(&mut w, 1, |_| took, |k| 300.0 / k as f64);
        }
        assert_eq!(w.now(), 8);
    }

    #[test]
    fn the_window_stays_where_more_in_flight_bring_nothing() {
        // Requests that queue at the server: answers come as often
        // whatever the pages in flight, and each takes as much longer.
        let mut w = Window::new(Width::of(None), false);
        Api::new().feed(&mut w, 1000, |k| 2.5 * k as f64, |_| 2.5);
        assert_eq!(w.now(), 4);
        // Answers as fast with more in flight, but no more of them a second
        // (both sides share a busy machine): the page tried is given back.
        let mut w = Window::new(Width::of(None), false);
        Api::new().feed(&mut w, 4000, |_| 1.0, |_| 0.25);
        assert_eq!(w.now(), 4);
        // Answers the read did not wait for (the reader was slower, or the
        // pages ran out) say nothing about the API; nor do a few among many.
        let mut w = Window::new(Width::of(None), false);
        let start = std::time::Instant::now();
        for i in 0..400u64 {
            let at = start + Duration::from_millis(5 * i);
            w.answered(at, Duration::from_millis(20), i % 4 == 0, None);
        }
        assert_eq!(w.now(), 4);
        // A fixed width never grows.
        let mut fixed = Window::new(Width::of(Some(3)), false);
        Api::new().feed(&mut fixed, 100, |_| 20.0, |k| 20.0 / k as f64);
        assert_eq!(fixed.now(), 3);
    }

    #[test]
    fn an_overloaded_answer_halves_the_window_for_good() {
        let mut w = Window::new(Width::of(None), false);
        let mut api = Api::new();
        api.feed(&mut w, 200, |_| 20.0, |k| 20.0 / k as f64);
        assert_eq!(w.now(), 8);
        for page in 1..=8 {
            w.sent(page);
        }
        w.answered(api.at, Duration::from_millis(20), true, Some(3));
        assert_eq!(w.now(), 4);
        assert!(w.overloaded());
        // The other pages that were in flight with it say the same: heard.
        for page in [1, 5, 8] {
            w.answered(api.at, Duration::from_millis(20), true, Some(page));
        }
        assert_eq!(w.now(), 4, "a burst of 429s halves the window once");
        api.feed(&mut w, 100, |_| 20.0, |k| 20.0 / k as f64);
        assert_eq!(w.now(), 4);
        for page in 9..20 {
            w.sent(page);
            w.answered(api.at, Duration::from_millis(20), true, Some(page));
        }
        assert_eq!(w.now(), 1, "never below one page");
        // A fixed width is halved too; and a read whose first page was
        // answered after a 429 starts at half.
        let mut fixed = Window::new(Width::of(Some(8)), false);
        fixed.answered(api.at, Duration::from_millis(20), false, Some(0));
        assert_eq!(fixed.now(), 4);
        assert_eq!(Window::new(Width::of(None), true).now(), 2);
    }
}
