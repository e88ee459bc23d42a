//! The Pozvonim simulator (API v2u): a token from `GET /auth/token`, then
//! every request signed with it.
//!
//! * `GET /auth/token?uid=..&sign=..` checks
//!   `sign = md5(api_key + http_build_query(ksort(params)))`, which for the
//!   usual request is `md5(api_key + "uid=" + uid)`, and answers
//!   `{"token": "...", "expire": <seconds it lives>}`. The token lives
//!   `Options::token_lifetime` and is bound to the address that asked for it.
//! * Every other request carries `uid` and
//!   `sign = md5(token + http_build_query(ksort(params)))` over all its
//!   parameters but `sign` (path IDs are not parameters): in the query for
//!   GET and DELETE, in an `application/x-www-form-urlencoded` body for POST
//!   and PUT. The token itself is not sent, so the simulator tries the
//!   tokens it issued to that uid.
//! * Failures answer `{"error": {"code", "http_code", "message"}}` with a
//!   non-2xx status, as documented. The document names no code but
//!   `GEN-SERVER-ERROR`, so the codes and statuses here are invented: 401
//!   for a token that expired, was issued to another address or was never
//!   issued; 403 for a sign that matches no issued token (the server cannot
//!   tell a wrong sign from a sign made with a token it has forgotten, so
//!   it is a status the engine renews on too, once) or a disabled API; 400
//!   for a malformed request; 404 for an unknown object; 422 for a rejected
//!   parameter, named in the message.
//!
//! The document shows no answer bodies, so their shapes are invented too
//! (seeds notes, section 6.3): lists are bare JSON arrays, single reads and
//! updates one object (200), creations the new object (201), a delayed call
//! 202, a removal 204 with no body.
//!
//! Strict about parameters: PHP-style nested keys (`site[url]`,
//! `managers[0][phone]`, `widget[schelude][monday][from]`) are parsed from
//! the pairs; an unknown key is refused, `site[url]` and one manager's phone
//! are required on creates and updates, a schedule day or an algorithm is
//! sent whole or not at all, and flags are `0` or `1`.
//!
//! The test-only header `X-Sim-Client-IP` stands in for the caller's
//! address, so a test can act as another machine; the real API knows no
//! such header.

use crate::data::{self, form_pairs, md5_hex, php_signed_query, Rng};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::future::BoxFuture;
use serde_json::{json, Map, Value};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The simulator and the config a connection needs against it.
pub fn build(opts: &crate::Options) -> (Router, Vec<(&'static str, String)>) {
    let mut rng = Rng::new(opts.seed, "pozvonim");
    let db = Db::seeded(&mut rng, opts.records);
    let config = vec![("uid", db.uid.clone()), ("api_key", db.api_key.clone())];
    let sim: Sim = Arc::new(Shared {
        lifetime: opts.token_lifetime,
        seed: opts.seed,
        db: Mutex::new(db),
    });
    let api = Router::new()
        .route("/auth/token", get(op0(Op::Token)))
        .route("/server/time/now", get(op0(Op::ServerTime)))
        .route("/sites", get(op0(Op::ListSites)).post(op0(Op::CreateSite)))
        .route(
            "/sites/{site_id}",
            get(op1(Op::GetSite))
                .put(op1(Op::UpdateSite))
                .delete(op1(Op::DeleteSite)),
        )
        .route("/sites/{site_id}/call", post(op1(Op::MakeCall)))
        .route("/sites/{site_id}/call/delayed", post(op1(Op::DelayedCall)))
        .route("/widget", get(op0(Op::ListWidgets)))
        .route("/widget/{widget_id}", get(op1(Op::GetWidget)))
        .route("/calls", get(op0(Op::ListCalls)))
        .route("/calls/{call_id}", get(op1(Op::GetCall)))
        .route("/profile", get(op0(Op::GetProfile)).put(op0(Op::UpdateProfile)))
        .route("/payments/contributors/{contributor_id}", post(op1(Op::Payment)))
        .route(
            "/contributors",
            get(op0(Op::ListContributors)).post(op0(Op::CreateContributor)),
        )
        // A fixed segment wins over `{contributor_id}` in axum's router.
        .route("/contributors/sites", post(op0(Op::CreateContributorWithSite)))
        .route("/contributors/{contributor_id}", get(op1(Op::GetContributor)))
        .route(
            "/contributors/{contributor_id}/sites",
            get(op1(Op::ListContributorSites)).post(op1(Op::CreateContributorSite)),
        )
        .route(
            "/contributors/{contributor_id}/sites/{site_id}",
            get(op2(Op::GetContributorSite))
                .put(op2(Op::UpdateContributorSite))
                .delete(op2(Op::DeleteContributorSite)),
        )
        .route(
            "/contributors/{contributor_id}/calls",
            get(op1(Op::ListContributorCalls)),
        )
        .route(
            "/contributors/{contributor_id}/calls/{call_id}",
            get(op2(Op::GetContributorCall)),
        )
        .route("/contributors/{contributor_id}/payments", post(op1(Op::PaymentAlias)))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method);
    let router = Router::new().nest(BASE_PATH, api).fallback(no_route).with_state(sim);
    (router, config)
}

/// The path of the document's base URL (`https://api.pozvonim.com/v2u/`):
/// requests elsewhere are not found, as on the real server.
pub const BASE_PATH: &str = "/v2u";

type Sim = Arc<Shared>;

struct Shared {
    lifetime: Duration,
    seed: u64,
    db: Mutex<Db>,
}

/// What a route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Token,
    ListSites,
    CreateSite,
    GetSite,
    UpdateSite,
    DeleteSite,
    ServerTime,
    MakeCall,
    DelayedCall,
    ListWidgets,
    GetWidget,
    ListCalls,
    GetCall,
    GetProfile,
    UpdateProfile,
    Payment,
    PaymentAlias,
    ListContributors,
    CreateContributor,
    GetContributor,
    CreateContributorWithSite,
    ListContributorSites,
    CreateContributorSite,
    GetContributorSite,
    UpdateContributorSite,
    DeleteContributorSite,
    ListContributorCalls,
    GetContributorCall,
}

// Handlers for routes with no, one and two path parameters: every route
// goes through `serve`, which reads the request, checks the signature and
// runs the operation.

type Handled = BoxFuture<'static, Response>;

fn op0(op: Op) -> impl Fn(State<Sim>, Request) -> Handled + Clone + Send + Sync + 'static {
    move |State(sim): State<Sim>, req: Request| -> Handled { Box::pin(serve(sim, op, Vec::new(), req)) }
}

fn op1(op: Op) -> impl Fn(State<Sim>, Path<String>, Request) -> Handled + Clone + Send + Sync + 'static {
    move |State(sim): State<Sim>, Path(a): Path<String>, req: Request| -> Handled {
        Box::pin(serve(sim, op, vec![a], req))
    }
}

fn op2(op: Op) -> impl Fn(State<Sim>, Path<(String, String)>, Request) -> Handled + Clone + Send + Sync + 'static {
    move |State(sim): State<Sim>, Path((a, b)): Path<(String, String)>, req: Request| -> Handled {
        Box::pin(serve(sim, op, vec![a, b], req))
    }
}

async fn no_route(uri: Uri) -> Response {
    Fail::not_found(format!("there is no method at {}", uri.path())).into_response()
}

/// A method the path does not take: 405, in the documented error shape.
async fn wrong_method(method: axum::http::Method, uri: Uri) -> Response {
    Fail::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD-NOT-ALLOWED",
        format!("{} is not allowed at {}", method, uri.path()),
    )
    .into_response()
}

async fn serve(sim: Sim, op: Op, ids: Vec<String>, req: Request) -> Response {
    let incoming = match Incoming::read(req).await {
        Ok(i) => i,
        Err(f) => return f.into_response(),
    };
    match handle(&sim, op, &ids, &incoming) {
        Ok(reply) => reply.into_response(),
        Err(fail) => fail.into_response(),
    }
}

fn handle(sim: &Shared, op: Op, ids: &[String], inc: &Incoming) -> Result<Reply, Fail> {
    let mut db = sim.db.lock().unwrap_or_else(|p| p.into_inner());
    if op == Op::Token {
        return db.issue_token(sim.lifetime, sim.seed, inc);
    }
    let params = db.authorize(sim.lifetime, inc)?;
    db.run(op, ids, &params)
}

/// A request's parameters as pairs in wire order, and who sent it.
struct Incoming {
    pairs: Vec<(String, String)>,
    ip: Option<IpAddr>,
}

impl Incoming {
    async fn read(req: Request) -> Result<Incoming, Fail> {
        let (parts, body) = req.into_parts();
        let ip = client_ip(&parts.headers, parts.extensions.get::<ConnectInfo<SocketAddr>>());
        let query = parts.uri.query().unwrap_or("").to_owned();
        let bytes = axum::body::to_bytes(body, 1 << 20)
            .await
            .map_err(|_| Fail::bad_request("the request body is too large or broken off"))?;
        let pairs = if parts.method == Method::POST || parts.method == Method::PUT {
            if !query.is_empty() {
                return Err(Fail::bad_request(
                    "POST and PUT parameters, uid and sign included, go in the form body, not the query string",
                ));
            }
            let content_type = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !content_type.starts_with("application/x-www-form-urlencoded") {
                return Err(Fail::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "GEN-BAD-CONTENT-TYPE",
                    format!("send POST and PUT parameters as application/x-www-form-urlencoded, not `{content_type}`"),
                ));
            }
            let body = std::str::from_utf8(&bytes).map_err(|_| Fail::bad_request("the form body is not UTF-8"))?;
            form_pairs(body)
        } else {
            form_pairs(&query)
        };
        Ok(Incoming { pairs, ip })
    }
}

/// The caller's address: `X-Sim-Client-IP` when present (test-only, see
/// the module comment), else the peer's.
fn client_ip(headers: &HeaderMap, peer: Option<&ConnectInfo<SocketAddr>>) -> Option<IpAddr> {
    headers
        .get("x-sim-client-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse().ok())
        .or_else(|| peer.map(|c| c.0.ip()))
}

fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A successful answer.
struct Reply {
    status: StatusCode,
    body: Option<Value>,
}

impl Reply {
    fn ok(v: Value) -> Reply {
        Reply {
            status: StatusCode::OK,
            body: Some(v),
        }
    }
    fn created(v: Value) -> Reply {
        Reply {
            status: StatusCode::CREATED,
            body: Some(v),
        }
    }
    fn accepted(v: Value) -> Reply {
        Reply {
            status: StatusCode::ACCEPTED,
            body: Some(v),
        }
    }
    fn no_content() -> Reply {
        Reply {
            status: StatusCode::NO_CONTENT,
            body: None,
        }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        match self.body {
            Some(v) => (self.status, Json(v)).into_response(),
            None => self.status.into_response(),
        }
    }
}

/// A failed request, answered in the documented error envelope.
#[derive(Debug)]
struct Fail {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Fail {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Fail {
        Fail {
            status,
            code,
            message: message.into(),
        }
    }
    fn bad_request(message: impl Into<String>) -> Fail {
        Fail::new(StatusCode::BAD_REQUEST, "GEN-BAD-REQUEST", message)
    }
    fn not_found(message: impl Into<String>) -> Fail {
        Fail::new(StatusCode::NOT_FOUND, "NOT-FOUND", message)
    }
    fn unauthorized(code: &'static str, message: impl Into<String>) -> Fail {
        Fail::new(StatusCode::UNAUTHORIZED, code, message)
    }
    fn forbidden(code: &'static str, message: impl Into<String>) -> Fail {
        Fail::new(StatusCode::FORBIDDEN, code, message)
    }
}

/// A rejected parameter: `422 VALIDATION-ERROR`, `field: problem`.
fn invalid(field: &str, problem: impl std::fmt::Display) -> Fail {
    Fail::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION-ERROR",
        format!("{field}: {problem}"),
    )
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        let body = json!({
            "error": { "code": self.code, "http_code": self.status.as_u16(), "message": self.message }
        });
        (self.status, Json(body)).into_response()
    }
}

// ------------------------------------------------------------------ data

/// A token the simulator issued.
struct Token {
    value: String,
    ip: Option<IpAddr>,
    issued: Instant,
}

struct Profile {
    email: String,
    name: String,
    timezone: String,
    api_enable: bool,
    balance: f64,
    partner_balance: f64,
}

/// A project: its settings as the site block nests them
/// (`{"site": {...}, "widget": {...}, "blacklists": {...}}`) and its managers.
struct Site {
    id: u64,
    contributor: Option<u64>,
    widget_id: u64,
    created_at: String,
    settings: Map<String, Value>,
    managers: Vec<Value>,
}

impl Site {
    fn url(&self) -> &str {
        self.settings
            .get("site")
            .and_then(|s| s.get("url"))
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "contributor_id": self.contributor,
            "url": self.url(),
            "created_at": self.created_at,
            "widget_id": self.widget_id,
            "site": self.settings.get("site"),
            "managers": self.managers,
            "widget": self.settings.get("widget"),
            "blacklists": self.settings.get("blacklists"),
        })
    }

    /// The widget's settings, flat, with its ID and project.
    fn widget_json(&self) -> Value {
        let mut w = Map::new();
        w.insert("id".into(), json!(self.widget_id));
        w.insert("site_id".into(), json!(self.id));
        w.insert("url".into(), json!(self.url()));
        if let Some(Value::Object(settings)) = self.settings.get("widget") {
            for (k, v) in settings {
                w.insert(k.clone(), v.clone());
            }
        }
        Value::Object(w)
    }
}

struct Call {
    id: u64,
    site_id: u64,
    contributor: Option<u64>,
    status_id: u64,
    client: String,
    manager: String,
    created_at: String,
    duration: u64,
    region: Option<i64>,
    source_call: Option<String>,
    source_enter: Option<String>,
    source_referer: Option<String>,
    return_count: Option<i64>,
    ip: Option<String>,
    useragent: Option<String>,
    delayed: Option<String>,
    record_url: Option<String>,
}

/// Call statuses; the document does not list them, so these are invented.
fn status_name(id: u64) -> &'static str {
    match id {
        1 => "new",
        2 => "success",
        3 => "client_no_answer",
        4 => "manager_no_answer",
        5 => "delayed",
        _ => "unknown",
    }
}

impl Call {
    fn summary(&self) -> Value {
        json!({
            "id": self.id,
            "site_id": self.site_id,
            "contributor_id": self.contributor,
            "status_id": self.status_id,
            "status": status_name(self.status_id),
            "client": self.client,
            "manager": self.manager,
            "created_at": self.created_at,
            "duration": self.duration,
        })
    }

    /// The summary and the details (`ids` filters and single reads).
    fn detail(&self) -> Value {
        let mut v = self.summary();
        if let Value::Object(m) = &mut v {
            let extra = json!({
                "region": self.region,
                "source_call": self.source_call,
                "source_enter": self.source_enter,
                "source_referer": self.source_referer,
                "return_count": self.return_count,
                "ip": self.ip,
                "useragent": self.useragent,
                "delayed": self.delayed,
                "record_url": self.record_url,
            });
            if let Value::Object(extra) = extra {
                m.extend(extra);
            }
        }
        v
    }
}

struct Contributor {
    id: u64,
    email: String,
    /// Kept as md5, never shown.
    #[allow(dead_code)]
    password_md5: String,
    created_at: String,
    balance: f64,
}

struct Payment {
    id: u64,
    contributor_id: u64,
    kind: i64,
    amount: f64,
    created_at: String,
}

impl Payment {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "contributor_id": self.contributor_id,
            "type": self.kind,
            "amount": self.amount,
            "created_at": self.created_at,
        })
    }
}

struct Db {
    uid: String,
    uid_number: u64,
    api_key: String,
    profile: Profile,
    tokens: Vec<Token>,
    tokens_issued: u64,
    sites: Vec<Site>,
    calls: Vec<Call>,
    contributors: Vec<Contributor>,
    payments: Vec<Payment>,
    next_site: u64,
    next_widget: u64,
    next_call: u64,
    next_contributor: u64,
    next_payment: u64,
}

fn next(counter: &mut u64) -> u64 {
    *counter += 1;
    *counter
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

const DAYS: &[&str] = &[
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];
const SLUGS: &[&str] = &["okna", "dveri", "remont", "mebel", "avto", "kuhni", "stroy", "potolki"];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0",
];

/// The site block with the document's defaults ("Value" column).
fn default_settings() -> Map<String, Value> {
    let days: Map<String, Value> = DAYS
        .iter()
        .map(|d| ((*d).to_owned(), json!({ "from": 9, "to": 18, "enable": 1 })))
        .collect();
    object(json!({
        "site": {
            "url": "",
            "manager_rule": 0,
            "manager_region_enable": 0,
            "report_email": "",
            "report_period": 86400,
            "report_analytic": 1,
            "auto_payment": 0,
            "phone_for_client": 0,
            "phone_for_manager": 0,
            "notification_email": "",
            "notification_phone": "",
            "notification_type": 2,
            "notification_notify": null,
        },
        "widget": {
            "mobile_enable": 1,
            "period": 1,
            "schelude_night": 0,
            "api_enable": 0,
            "api_callback": "",
            "timezone": "Europe/Moscow",
            "timezone_auto": 1,
            "tracking_google_enable": 0,
            "tracking_yandex_enable": 0,
            "tracking_yandex_target": "pozvonimcall",
            "tracking_google_target": "pozvonimcall",
            "schelude": days,
            "schelude_call_delay": 2,
            "algoritms": {
                "onenter": { "time": 30, "enable": 0 },
                "onexit": { "time": 30, "enable": 0 },
                "onwait": { "time": 30, "enable": 0 },
                "onreturn": { "enable": 0 },
            },
            "button": 1,
            "button_display": 1,
            "button_position": 1,
            "button_position_y": 0,
            "button_position_x": 0,
            "window_position": 2,
            "call_time": 28,
            "phone_prefix": "+7",
        },
        "blacklists": { "ip": "", "url": "", "phone": "", "referer": "" },
    }))
}

/// Merges `patch` into `into`, objects key by key.
fn merge(into: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (k, v) in patch {
        match v {
            Value::Object(src) => match into.get_mut(&k) {
                Some(Value::Object(dst)) => merge(dst, src),
                _ => {
                    into.insert(k, Value::Object(src));
                }
            },
            other => {
                into.insert(k, other);
            }
        }
    }
}

impl Db {
    fn seeded(rng: &mut Rng, n: usize) -> Db {
        let uid_number = 10_000 + rng.below(90_000);
        let mut db = Db {
            uid: uid_number.to_string(),
            uid_number,
            api_key: md5_hex(format!("pozvonim-api-key:{}", rng.next_u64()).as_bytes()),
            profile: Profile {
                email: "studio@example.ru".into(),
                name: data::company(rng),
                timezone: "Europe/Moscow".into(),
                api_enable: true,
                balance: 100_000.0,
                partner_balance: 25_000.0,
            },
            tokens: Vec::new(),
            tokens_issued: 0,
            sites: Vec::new(),
            calls: Vec::new(),
            contributors: Vec::new(),
            payments: Vec::new(),
            next_site: 100,
            next_widget: 500,
            next_call: 7000,
            next_contributor: 300,
            next_payment: 0,
        };
        for i in 0..n {
            db.seed_site(rng, i, None);
        }
        // Studio clients, each with one or two projects.
        for i in 0..n {
            let id = next(&mut db.next_contributor);
            db.contributors.push(Contributor {
                id,
                email: format!("client{}@example.ru", i + 1),
                password_md5: md5_hex(format!("secret{i}").as_bytes()),
                created_at: data::datetime(i),
                balance: (rng.below(500_000) as f64) / 100.0,
            });
            for k in 0..1 + i % 2 {
                db.seed_site(rng, n + 2 * i + k, Some(id));
            }
        }
        // Calls: `n` on the account's projects, `n` more on the clients'
        // projects in turn, so the first client has calls.
        let own: Vec<usize> = (0..db.sites.len())
            .filter(|&s| db.sites[s].contributor.is_none())
            .collect();
        let theirs: Vec<usize> = (0..db.sites.len())
            .filter(|&s| db.sites[s].contributor.is_some())
            .collect();
        if !own.is_empty() {
            for i in 0..n {
                let site = own[rng.below(own.len() as u64) as usize];
                db.seed_call(rng, i, site);
            }
        }
        if !theirs.is_empty() {
            for i in 0..n {
                db.seed_call(rng, i, theirs[i % theirs.len()]);
            }
        }
        db
    }

    fn seed_site(&mut self, rng: &mut Rng, i: usize, contributor: Option<u64>) {
        let id = next(&mut self.next_site);
        let widget_id = next(&mut self.next_widget);
        let slug = rng.pick(SLUGS);
        let weekend = rng.below(2);
        let mut settings = default_settings();
        merge(
            &mut settings,
            object(json!({
                "site": { "url": format!("https://{slug}-{id}.ru"), "report_email": format!("report@{slug}-{id}.ru") },
                "widget": {
                    "call_time": 20 + rng.below(20),
                    "schelude": { "saturday": { "enable": weekend }, "sunday": { "enable": weekend } },
                },
            })),
        );
        let managers = (0..1 + rng.below(3))
            .map(|_| json!({ "phone": data::phone(rng), "name": data::name(rng), "region": 0 }))
            .collect();
        self.sites.push(Site {
            id,
            contributor,
            widget_id,
            created_at: data::datetime(i),
            settings,
            managers,
        });
    }

    fn seed_call(&mut self, rng: &mut Rng, i: usize, site: usize) {
        let s = &self.sites[site];
        let (site_id, contributor, url) = (s.id, s.contributor, s.url().to_owned());
        let manager = s
            .managers
            .first()
            .and_then(|m| m.get("phone"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let id = next(&mut self.next_call);
        let status_id = [2, 2, 2, 3, 4][rng.below(5) as usize];
        self.calls.push(Call {
            id,
            site_id,
            contributor,
            status_id,
            // Every other client also asked EyeNewton for a callback.
            client: data::client_phone(2 * i),
            manager,
            created_at: data::datetime(i),
            duration: if status_id == 2 { 30 + rng.below(400) } else { 0 },
            region: None,
            source_call: Some(format!("{url}/catalog")),
            source_enter: Some(format!("{url}/")),
            source_referer: Some(
                rng.pick(&["https://yandex.ru/", "https://www.google.com/", ""])
                    .to_owned(),
            )
            .filter(|r| !r.is_empty()),
            return_count: Some(1 + rng.below(8) as i64),
            ip: Some(data::ip(rng)),
            useragent: Some(rng.pick(AGENTS).to_owned()),
            delayed: None,
            record_url: (status_id == 2).then(|| format!("https://records.pozvonim.com/{id}.mp3")),
        });
    }

    /// Now, in the profile's time zone.
    fn now(&self) -> String {
        data::format_unix(data::unix_now() + clock::offset(&self.profile.timezone))
    }

    // -------------------------------------------------------------- auth

    fn issue_token(&mut self, lifetime: Duration, seed: u64, inc: &Incoming) -> Result<Reply, Fail> {
        let uid = param(&inc.pairs, "uid").ok_or_else(|| Fail::bad_request("uid is required"))?;
        let sign = param(&inc.pairs, "sign").ok_or_else(|| Fail::bad_request("sign is required"))?;
        if uid != self.uid {
            return Err(Fail::forbidden(
                "AUTH-UID-UNKNOWN",
                format!("there is no user with uid {uid}"),
            ));
        }
        let want = md5_hex(format!("{}{}", self.api_key, php_signed_query(&inc.pairs)).as_bytes());
        if sign != want {
            return Err(Fail::forbidden(
                "AUTH-SIGN-INVALID",
                "the sign is wrong: the token request is signed md5(api_key + \"uid=\" + uid) with the API key set in the profile",
            ));
        }
        if !self.profile.api_enable {
            return Err(Fail::forbidden("API-DISABLED", "the API is disabled in the profile"));
        }
        // Forget long-expired tokens; keep recent ones, so that an expired
        // token is told from an unknown one.
        self.tokens.retain(|t| t.issued.elapsed() < lifetime.saturating_mul(2));
        if self.tokens.len() >= 256 {
            self.tokens.remove(0);
        }
        self.tokens_issued += 1;
        let value = md5_hex(format!("pozvonim-token:{seed}:{uid}:{}", self.tokens_issued).as_bytes());
        self.tokens.push(Token {
            value: value.clone(),
            ip: inc.ip,
            issued: Instant::now(),
        });
        Ok(Reply::ok(json!({ "token": value, "expire": lifetime.as_secs() })))
    }

    /// Checks `uid` and `sign`; returns the other parameters.
    fn authorize(&self, lifetime: Duration, inc: &Incoming) -> Result<Vec<(String, String)>, Fail> {
        let uid = param(&inc.pairs, "uid").ok_or_else(|| Fail::bad_request("uid is required with every request"))?;
        let sign = param(&inc.pairs, "sign").ok_or_else(|| Fail::bad_request("sign is required with every request"))?;
        if uid != self.uid || self.tokens.is_empty() {
            return Err(Fail::unauthorized(
                "AUTH-TOKEN-MISSING",
                format!("no token was issued to uid {uid}; get one from /auth/token"),
            ));
        }
        if !self.profile.api_enable {
            return Err(Fail::forbidden("API-DISABLED", "the API is disabled in the profile"));
        }
        let signed = php_signed_query(&inc.pairs);
        let Some(token) = self
            .tokens
            .iter()
            .rev()
            .find(|t| md5_hex(format!("{}{signed}", t.value).as_bytes()) == sign)
        else {
            return Err(Fail::forbidden(
                "AUTH-SIGN-INVALID",
                "the sign matches no token issued to this uid: sign = md5(token + http_build_query(ksort(params))) \
                 over every parameter but sign, uid included",
            ));
        };
        if token.issued.elapsed() >= lifetime {
            return Err(Fail::unauthorized(
                "AUTH-TOKEN-EXPIRED",
                format!("the token has expired (tokens live {} s)", lifetime.as_secs()),
            ));
        }
        if token.ip != inc.ip {
            return Err(Fail::unauthorized(
                "AUTH-TOKEN-IP",
                "the token was issued to another IP address",
            ));
        }
        Ok(inc
            .pairs
            .iter()
            .filter(|(k, _)| k != "uid" && k != "sign")
            .cloned()
            .collect())
    }

    // ------------------------------------------------------- operations

    fn run(&mut self, op: Op, ids: &[String], p: &[(String, String)]) -> Result<Reply, Fail> {
        match op {
            // Answered before the signature check, in `handle`.
            Op::Token => Err(Fail::not_found("no such method")),
            Op::ServerTime => {
                check(p, &[])?;
                Ok(Reply::ok(json!({
                    "time": self.now(),
                    "timezone": self.profile.timezone,
                    "timestamp": data::unix_now(),
                })))
            }
            Op::ListSites => {
                let a = check(p, &[opt("ids", Kind::Ids)])?;
                Ok(Reply::ok(self.site_list(None, &a)))
            }
            Op::CreateSite => {
                let (_, block) = site_block(p, &[])?;
                Ok(Reply::created(self.create_site(None, block)))
            }
            Op::GetSite => {
                check(p, &[])?;
                let i = self.site_index(None, path_id(ids, 0, "project (site)")?)?;
                Ok(Reply::ok(self.sites[i].json()))
            }
            Op::UpdateSite => {
                let (_, block) = site_block(p, &[])?;
                let i = self.site_index(None, path_id(ids, 0, "project (site)")?)?;
                Ok(Reply::ok(self.update_site(i, block)))
            }
            Op::DeleteSite => {
                check(p, &[])?;
                let i = self.site_index(None, path_id(ids, 0, "project (site)")?)?;
                self.sites.remove(i);
                Ok(Reply::no_content())
            }
            Op::MakeCall | Op::DelayedCall => {
                let delayed = op == Op::DelayedCall;
                let a = check(p, if delayed { DELAYED_CALL } else { CALL })?;
                let i = self.site_index(None, path_id(ids, 0, "project (site)")?)?;
                self.place_call(i, &a, delayed)
            }
            Op::ListWidgets => {
                let a = check(p, &[opt("sites_ids", Kind::Ids)])?;
                let want = a.ids("sites_ids");
                let widgets = self
                    .sites
                    .iter()
                    .filter(|s| s.contributor.is_none())
                    .filter(|s| want.as_ref().is_none_or(|w| w.contains(&s.id)))
                    .map(Site::widget_json)
                    .collect();
                Ok(Reply::ok(Value::Array(widgets)))
            }
            Op::GetWidget => {
                check(p, &[])?;
                let id = path_id(ids, 0, "widget")?;
                self.sites
                    .iter()
                    .find(|s| s.contributor.is_none() && s.widget_id == id)
                    .map(|s| Reply::ok(s.widget_json()))
                    .ok_or_else(|| Fail::not_found(format!("widget {id} not found")))
            }
            Op::ListCalls => {
                let a = check(p, LIST_CALLS)?;
                Ok(Reply::ok(self.call_list(None, &a)))
            }
            Op::GetCall => {
                check(p, &[])?;
                self.call_detail(None, path_id(ids, 0, "call")?)
            }
            Op::GetProfile => {
                check(p, &[])?;
                Ok(Reply::ok(self.profile_json()))
            }
            Op::UpdateProfile => {
                let a = check(
                    p,
                    &[
                        req("timezone", Kind::TimeZone),
                        req("api_enable", Kind::Flag),
                        req("api_key", Kind::Text),
                    ],
                )?;
                let key = a.text("api_key").unwrap_or_default();
                if key.chars().any(char::is_whitespace) {
                    return Err(invalid("api_key", "must not contain spaces"));
                }
                // A new key or api_enable 0 takes effect at once: the next
                // token request must use the new key (the descriptor warns).
                self.api_key = key.to_owned();
                self.profile.timezone = a.text("timezone").unwrap_or_default().to_owned();
                self.profile.api_enable = a.int("api_enable") == Some(1);
                Ok(Reply::ok(self.profile_json()))
            }
            Op::Payment | Op::PaymentAlias => {
                let a = check(p, &[req("type", Kind::Int), req("amount", Kind::Amount)])?;
                let contributor = self.contributor_index(path_id(ids, 0, "studio client")?)?;
                self.pay(contributor, &a)
            }
            Op::ListContributors => {
                check(p, &[])?;
                let list = self.contributors.iter().map(|c| self.contributor_summary(c)).collect();
                Ok(Reply::ok(Value::Array(list)))
            }
            Op::CreateContributor => {
                let a = check(p, NEW_CONTRIBUTOR)?;
                let c = self.new_contributor(&a)?;
                Ok(Reply::created(self.contributor_detail(c)))
            }
            Op::GetContributor => {
                check(p, &[])?;
                let c = self.contributor_index(path_id(ids, 0, "studio client")?)?;
                Ok(Reply::ok(self.contributor_detail(c)))
            }
            Op::CreateContributorWithSite => {
                let (a, block) = site_block(p, NEW_CONTRIBUTOR)?;
                let c = self.new_contributor(&a)?;
                let cid = self.contributors[c].id;
                let site = self.create_site(Some(cid), block);
                Ok(Reply::created(
                    json!({ "contributor": self.contributor_detail(c), "site": site }),
                ))
            }
            Op::ListContributorSites => {
                let a = check(p, &[opt("ids", Kind::Ids)])?;
                let cid = self.contributor_id(ids)?;
                Ok(Reply::ok(self.site_list(Some(cid), &a)))
            }
            Op::CreateContributorSite => {
                let (_, block) = site_block(p, &[])?;
                let cid = self.contributor_id(ids)?;
                Ok(Reply::created(self.create_site(Some(cid), block)))
            }
            Op::GetContributorSite => {
                check(p, &[])?;
                let cid = self.contributor_id(ids)?;
                let i = self.site_index(Some(cid), path_id(ids, 1, "project (site)")?)?;
                Ok(Reply::ok(self.sites[i].json()))
            }
            Op::UpdateContributorSite => {
                let (_, block) = site_block(p, &[])?;
                let cid = self.contributor_id(ids)?;
                let i = self.site_index(Some(cid), path_id(ids, 1, "project (site)")?)?;
                Ok(Reply::ok(self.update_site(i, block)))
            }
            Op::DeleteContributorSite => {
                check(p, &[])?;
                let cid = self.contributor_id(ids)?;
                let i = self.site_index(Some(cid), path_id(ids, 1, "project (site)")?)?;
                self.sites.remove(i);
                Ok(Reply::no_content())
            }
            Op::ListContributorCalls => {
                let a = check(p, LIST_CONTRIBUTOR_CALLS)?;
                let cid = self.contributor_id(ids)?;
                Ok(Reply::ok(self.call_list(Some(cid), &a)))
            }
            Op::GetContributorCall => {
                check(p, &[])?;
                let cid = self.contributor_id(ids)?;
                self.call_detail(Some(cid), path_id(ids, 1, "call")?)
            }
        }
    }

    /// The projects of the account (`None`) or of one studio client.
    fn site_list(&self, owner: Option<u64>, a: &Args) -> Value {
        let want = a.ids("ids");
        Value::Array(
            self.sites
                .iter()
                .filter(|s| s.contributor == owner)
                .filter(|s| want.as_ref().is_none_or(|w| w.contains(&s.id)))
                .map(Site::json)
                .collect(),
        )
    }

    fn site_index(&self, owner: Option<u64>, id: u64) -> Result<usize, Fail> {
        self.sites
            .iter()
            .position(|s| s.id == id && s.contributor == owner)
            .ok_or_else(|| Fail::not_found(format!("project (site) {id} not found")))
    }

    fn create_site(&mut self, contributor: Option<u64>, block: SiteBlock) -> Value {
        let mut settings = default_settings();
        merge(&mut settings, block.settings);
        let site = Site {
            id: next(&mut self.next_site),
            contributor,
            widget_id: next(&mut self.next_widget),
            created_at: self.now(),
            settings,
            managers: block.managers,
        };
        let out = site.json();
        self.sites.push(site);
        out
    }

    /// Changes what the block sends and keeps the rest; the managers are
    /// replaced by the ones sent.
    fn update_site(&mut self, i: usize, block: SiteBlock) -> Value {
        let site = &mut self.sites[i];
        merge(&mut site.settings, block.settings);
        site.managers = block.managers;
        site.json()
    }

    fn place_call(&mut self, site: usize, a: &Args, delayed: bool) -> Result<Reply, Fail> {
        let phone = a.text("phone").unwrap_or_default().to_owned();
        let s = &self.sites[site];
        let blacklist = s
            .settings
            .get("blacklists")
            .and_then(|b| b.get("phone"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if blacklist
            .lines()
            .any(|l| !phone_key(l).is_empty() && phone_key(l) == phone_key(&phone))
        {
            return Err(invalid("phone", "is on the project's blacklist"));
        }
        let when = match (delayed, a.text("delayed")) {
            (true, Some(text)) => {
                let at = clock::parse_when(text, clock::offset(&self.profile.timezone))
                    .ok_or_else(|| invalid("delayed", "is not an ISO 8601 date-time"))?;
                if at < data::unix_now() - 60 {
                    return Err(invalid("delayed", "is in the past"));
                }
                Some(text.to_owned())
            }
            _ => None,
        };
        let (site_id, contributor) = (s.id, s.contributor);
        let manager = s
            .managers
            .first()
            .and_then(|m| m.get("phone"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let text = |k: &str| a.text(k).filter(|v| !v.is_empty()).map(str::to_owned);
        let call = Call {
            id: next(&mut self.next_call),
            site_id,
            contributor,
            status_id: if delayed { 5 } else { 1 },
            client: phone,
            manager,
            created_at: self.now(),
            duration: 0,
            region: a.int("region"),
            source_call: text("source_call"),
            source_enter: text("source_enter"),
            source_referer: text("source_referer"),
            return_count: a.int("return_count"),
            ip: text("ip"),
            useragent: text("useragent"),
            delayed: when,
            record_url: None,
        };
        let body = call.detail();
        self.calls.push(call);
        Ok(if delayed {
            Reply::accepted(body)
        } else {
            Reply::created(body)
        })
    }

    /// The calls of the account (`None`) or of one studio client, filtered.
    fn call_list(&self, owner: Option<u64>, a: &Args) -> Value {
        let mine = self.calls.iter().filter(|c| c.contributor == owner);
        // Calls by ID come with their details, and every other filter is
        // ignored, as documented.
        if let Some(ids) = a.ids("ids") {
            return Value::Array(mine.filter(|c| ids.contains(&c.id)).map(Call::detail).collect());
        }
        let start = a.text("start_at").map(|s| data::range_bound(s, false));
        let end = a.text("end_at").map(|s| data::range_bound(s, true));
        let statuses = a.ids("status_ids");
        let sites = a.ids("sites_ids");
        let client = a.text("client").map(phone_key).filter(|k| !k.is_empty());
        let manager = a.text("manager").map(phone_key).filter(|k| !k.is_empty());
        Value::Array(
            mine.filter(|c| start.as_deref().is_none_or(|s| c.created_at.as_str() >= s))
                .filter(|c| end.as_deref().is_none_or(|e| c.created_at.as_str() <= e))
                .filter(|c| statuses.as_ref().is_none_or(|s| s.contains(&c.status_id)))
                .filter(|c| sites.as_ref().is_none_or(|s| s.contains(&c.site_id)))
                .filter(|c| client.as_deref().is_none_or(|k| phone_key(&c.client) == k))
                .filter(|c| manager.as_deref().is_none_or(|k| phone_key(&c.manager) == k))
                .map(Call::summary)
                .collect(),
        )
    }

    fn call_detail(&self, owner: Option<u64>, id: u64) -> Result<Reply, Fail> {
        self.calls
            .iter()
            .find(|c| c.id == id && c.contributor == owner)
            .map(|c| Reply::ok(c.detail()))
            .ok_or_else(|| Fail::not_found(format!("call {id} not found")))
    }

    fn profile_json(&self) -> Value {
        // The API key is a credential: never shown.
        json!({
            "id": self.uid_number,
            "email": self.profile.email,
            "name": self.profile.name,
            "timezone": self.profile.timezone,
            "api_enable": u8::from(self.profile.api_enable),
            "balance": self.profile.balance,
            "partner_balance": self.profile.partner_balance,
            "is_studio": 1,
        })
    }

    /// Moves money from the main (`type` 1) or partner (`type` 2) balance
    /// to a client's; the meaning of the numbers is invented, the document
    /// does not give it.
    fn pay(&mut self, contributor: usize, a: &Args) -> Result<Reply, Fail> {
        let kind = a.int("type").unwrap_or_default();
        let amount = round2(a.num("amount").unwrap_or_default());
        if amount <= 0.0 {
            return Err(invalid("amount", "must be at least 0.01"));
        }
        let source = match kind {
            1 => &mut self.profile.balance,
            2 => &mut self.profile.partner_balance,
            _ => {
                return Err(invalid(
                    "type",
                    "must be 1 (the main balance) or 2 (the partner balance)",
                ))
            }
        };
        if *source < amount {
            return Err(invalid("amount", format!("is more than the balance ({:.2})", *source)));
        }
        *source = round2(*source - amount);
        let left = *source;
        let client = &mut self.contributors[contributor];
        client.balance = round2(client.balance + amount);
        let (contributor_id, client_balance) = (client.id, client.balance);
        let payment = Payment {
            id: next(&mut self.next_payment),
            contributor_id,
            kind,
            amount,
            created_at: self.now(),
        };
        let mut body = object(payment.json());
        body.insert("contributor_balance".into(), json!(client_balance));
        body.insert("balance".into(), json!(left));
        self.payments.push(payment);
        Ok(Reply::created(Value::Object(body)))
    }

    fn contributor_index(&self, id: u64) -> Result<usize, Fail> {
        self.contributors
            .iter()
            .position(|c| c.id == id)
            .ok_or_else(|| Fail::not_found(format!("studio client {id} not found")))
    }

    /// The studio client named by the first path ID, which must exist.
    fn contributor_id(&self, ids: &[String]) -> Result<u64, Fail> {
        let id = path_id(ids, 0, "studio client")?;
        self.contributor_index(id).map(|_| id)
    }

    fn new_contributor(&mut self, a: &Args) -> Result<usize, Fail> {
        let email = a.text("email").unwrap_or_default().trim().to_lowercase();
        let password = a.text("password").unwrap_or_default();
        if password.chars().count() < 6 {
            return Err(invalid("password", "must be at least 6 characters"));
        }
        if self.contributors.iter().any(|c| c.email == email) {
            return Err(invalid("email", format!("{email} is already registered")));
        }
        let contributor = Contributor {
            id: next(&mut self.next_contributor),
            email,
            password_md5: md5_hex(password.as_bytes()),
            created_at: self.now(),
            balance: 0.0,
        };
        self.contributors.push(contributor);
        Ok(self.contributors.len() - 1)
    }

    fn contributor_summary(&self, c: &Contributor) -> Value {
        json!({
            "id": c.id,
            "email": c.email,
            "created_at": c.created_at,
            "balance": c.balance,
            "sites_count": self.sites.iter().filter(|s| s.contributor == Some(c.id)).count(),
        })
    }

    /// The summary and the extended information: projects, call count and
    /// transfers.
    fn contributor_detail(&self, i: usize) -> Value {
        let c = &self.contributors[i];
        let mut v = object(self.contributor_summary(c));
        let sites: Vec<Value> = self
            .sites
            .iter()
            .filter(|s| s.contributor == Some(c.id))
            .map(|s| json!({ "id": s.id, "url": s.url(), "widget_id": s.widget_id }))
            .collect();
        let payments: Vec<Value> = self
            .payments
            .iter()
            .filter(|p| p.contributor_id == c.id)
            .map(Payment::json)
            .collect();
        v.insert("sites".into(), Value::Array(sites));
        v.insert(
            "calls_count".into(),
            json!(self.calls.iter().filter(|k| k.contributor == Some(c.id)).count()),
        );
        v.insert("payments".into(), Value::Array(payments));
        Value::Object(v)
    }
}

/// A path ID; one that is not a number names nothing.
fn path_id(ids: &[String], n: usize, what: &str) -> Result<u64, Fail> {
    let raw = ids.get(n).map(String::as_str).unwrap_or("");
    raw.parse()
        .map_err(|_| Fail::not_found(format!("{what} `{raw}` not found")))
}

/// The last ten digits of a phone number, so `+7 999 ...` and `8999...`
/// compare equal.
fn phone_key(s: &str) -> String {
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    digits[digits.len().saturating_sub(10)..].to_owned()
}

// ------------------------------------------------------------ parameters

/// How a parameter's value is checked and typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Any text.
    Text,
    /// A whole number, zero or more.
    Int,
    /// `0` or `1`.
    Flag,
    /// An hour, 0 to 24.
    Hour,
    /// A percentage, 0 to 100.
    Percent,
    /// A positive sum of money.
    Amount,
    /// A phone number (10 to 15 digits), or empty.
    Phone,
    /// An `http(s)://` address or a bare domain, or empty.
    Url,
    /// An e-mail address, or empty.
    Email,
    /// An IP address, or empty.
    Ip,
    /// A JavaScript function name, or empty.
    JsName,
    /// `Area/City` or `UTC`.
    TimeZone,
    /// DATETIME (`2015-10-02 17:58:43`).
    Date,
    /// ISO 8601 (`2015-10-02T17:58:43+03:00`).
    When,
    /// A list of IDs, sent as `name[0]`, `name[1]`, ...
    Ids,
}

struct Spec {
    name: &'static str,
    kind: Kind,
    required: bool,
}

const fn req(name: &'static str, kind: Kind) -> Spec {
    Spec {
        name,
        kind,
        required: true,
    }
}

const fn opt(name: &'static str, kind: Kind) -> Spec {
    Spec {
        name,
        kind,
        required: false,
    }
}

const CALL: &[Spec] = &[
    req("phone", Kind::Phone),
    opt("region", Kind::Int),
    opt("source_call", Kind::Url),
    opt("source_enter", Kind::Url),
    opt("source_referer", Kind::Url),
    opt("return_count", Kind::Int),
    opt("ip", Kind::Ip),
    opt("useragent", Kind::Text),
];

const DELAYED_CALL: &[Spec] = &[
    req("phone", Kind::Phone),
    req("delayed", Kind::When),
    opt("region", Kind::Int),
    opt("source_call", Kind::Url),
    opt("source_enter", Kind::Url),
    opt("source_referer", Kind::Url),
    opt("return_count", Kind::Int),
    opt("ip", Kind::Ip),
    opt("useragent", Kind::Text),
];

const LIST_CALLS: &[Spec] = &[
    opt("start_at", Kind::Date),
    opt("end_at", Kind::Date),
    opt("ids", Kind::Ids),
    opt("status_ids", Kind::Ids),
    opt("sites_ids", Kind::Ids),
    opt("client", Kind::Phone),
    opt("manager", Kind::Phone),
];

const LIST_CONTRIBUTOR_CALLS: &[Spec] = &[
    opt("start_at", Kind::Date),
    opt("end_at", Kind::Date),
    opt("ids", Kind::Ids),
    opt("status_ids", Kind::Ids),
    opt("sites_ids", Kind::Ids),
];

const NEW_CONTRIBUTOR: &[Spec] = &[req("email", Kind::Email), req("password", Kind::Text)];

/// Checked, typed parameters.
struct Args(Map<String, Value>);

impl Args {
    fn text(&self, k: &str) -> Option<&str> {
        self.0.get(k).and_then(Value::as_str)
    }
    fn int(&self, k: &str) -> Option<i64> {
        self.0.get(k).and_then(Value::as_i64)
    }
    fn num(&self, k: &str) -> Option<f64> {
        self.0.get(k).and_then(Value::as_f64)
    }
    fn ids(&self, k: &str) -> Option<Vec<u64>> {
        self.0
            .get(k)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
    }
}

/// `a[b][c]` as `["a", "b", "c"]`; None for a malformed name.
fn segments(key: &str) -> Option<Vec<String>> {
    let (head, mut rest) = match key.find('[') {
        Some(i) => (&key[..i], &key[i..]),
        None => (key, ""),
    };
    if head.is_empty() || head.contains(']') {
        return None;
    }
    let mut out = vec![head.to_owned()];
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let end = inner.find(']')?;
        out.push(inner[..end].to_owned());
        rest = &inner[end + 1..];
    }
    Some(out)
}

/// Checks flat parameters (and `name[N]` lists) against a method's specs.
fn check(pairs: &[(String, String)], specs: &[Spec]) -> Result<Args, Fail> {
    let mut out = Map::new();
    for (key, raw) in pairs {
        let segs = segments(key).ok_or_else(|| invalid(key, "is not a valid parameter name"))?;
        let Some(spec) = specs.iter().find(|s| s.name == segs[0]) else {
            return Err(invalid(key, "is not a parameter of this method"));
        };
        if spec.kind == Kind::Ids {
            let index_ok = segs.len() == 2 && segs[1].bytes().all(|b| b.is_ascii_digit());
            if !index_ok {
                return Err(invalid(key, format!("send the list as {0}[0], {0}[1], ...", spec.name)));
            }
            let id: u64 = raw.trim().parse().map_err(|_| invalid(key, "must be a whole number"))?;
            let list = out
                .entry(spec.name.to_owned())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(a) = list {
                a.push(json!(id));
            }
            continue;
        }
        if segs.len() != 1 {
            return Err(invalid(key, "takes a single value"));
        }
        if out.contains_key(spec.name) {
            return Err(invalid(key, "is sent twice"));
        }
        if spec.required && raw.trim().is_empty() {
            return Err(invalid(key, "must not be empty"));
        }
        out.insert(
            spec.name.to_owned(),
            typed(spec.kind, raw).map_err(|m| invalid(key, m))?,
        );
    }
    if let Some(missing) = specs.iter().find(|s| s.required && !out.contains_key(s.name)) {
        return Err(invalid(missing.name, "is required"));
    }
    Ok(Args(out))
}

/// A raw value checked and typed; the message says what is wrong.
fn typed(kind: Kind, raw: &str) -> Result<Value, String> {
    let v = raw.trim();
    let whole = |lo: i64, hi: i64| -> Result<Value, String> {
        match v.parse::<i64>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(json!(n)),
            _ if hi == i64::MAX => Err("must be a whole number, zero or more".into()),
            _ => Err(format!("must be a whole number from {lo} to {hi}")),
        }
    };
    let text = || -> Result<Value, String> { Ok(json!(raw)) };
    match kind {
        Kind::Text => text(),
        Kind::Int => whole(0, i64::MAX),
        Kind::Flag => whole(0, 1).map_err(|_| "must be 0 or 1".to_owned()),
        Kind::Hour => whole(0, 24),
        Kind::Percent => whole(0, 100),
        Kind::Amount => match v.parse::<f64>() {
            Ok(x) if x.is_finite() && x > 0.0 => Ok(json!(x)),
            _ => Err("must be a positive number".into()),
        },
        _ if v.is_empty() => text(),
        Kind::Phone => {
            let digits = v.chars().filter(char::is_ascii_digit).count();
            let chars_ok = v.chars().all(|c| c.is_ascii_digit() || " +-()".contains(c));
            if chars_ok && (10..=15).contains(&digits) && !v[1..].contains('+') {
                text()
            } else {
                Err("is not a phone number".into())
            }
        }
        Kind::Url => {
            let host = v
                .strip_prefix("https://")
                .or_else(|| v.strip_prefix("http://"))
                .unwrap_or(v);
            let host = host.split(['/', '?', '#']).next().unwrap_or("");
            if host.contains('.') && !v.contains(char::is_whitespace) {
                text()
            } else {
                Err("is not a web address".into())
            }
        }
        Kind::Email => match v.split_once('@') {
            Some((user, domain)) if !user.is_empty() && domain.contains('.') && !v.contains(char::is_whitespace) => {
                text()
            }
            _ => Err("is not an e-mail address".into()),
        },
        Kind::Ip => v
            .parse::<IpAddr>()
            .map(|_| json!(v))
            .map_err(|_| "is not an IP address".into()),
        Kind::JsName => {
            let ok = v
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == '.');
            if ok {
                text()
            } else {
                Err("is not a JavaScript function name".into())
            }
        }
        Kind::TimeZone => {
            if clock::valid_zone(v) {
                text()
            } else {
                Err("is not a time zone such as Europe/Moscow".into())
            }
        }
        // "Always and everywhere DATETIME": a bare date is refused.
        Kind::Date => {
            if v.len() == 19 && data::valid_date_or_datetime(v) {
                text()
            } else {
                Err("must be DATETIME, e.g. 2015-10-02 17:58:43".into())
            }
        }
        Kind::When => {
            if clock::parse_when(v, 0).is_some() {
                text()
            } else {
                Err("must be ISO 8601, e.g. 2015-10-02T17:58:43+03:00".into())
            }
        }
        Kind::Ids => Err("must be a list".into()),
    }
}

/// A checked site block: the settings it sends, nested as PHP nests them,
/// and the managers in the order sent.
struct SiteBlock {
    settings: Map<String, Value>,
    managers: Vec<Value>,
}

/// The kind of a site-block key (`site[..]`, `widget[..]`,
/// `blacklists[..]`), spelled exactly as the document spells them,
/// `schelude` and `algoritms` included; None for a key it does not have.
fn block_kind(segs: &[String]) -> Option<Kind> {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    Some(match s.as_slice() {
        ["site", "url"] => Kind::Url,
        ["site", "manager_rule" | "report_period" | "phone_for_client" | "phone_for_manager" | "notification_type"] => {
            Kind::Int
        }
        ["site", "manager_region_enable" | "report_analytic" | "auto_payment"] => Kind::Flag,
        ["site", "report_email" | "notification_email"] => Kind::Email,
        ["site", "notification_phone"] => Kind::Phone,
        // Its format is not documented: anything, nested or not.
        ["site", "notification_notify", ..] => Kind::Text,
        ["widget", "mobile_enable"
        | "schelude_night"
        | "api_enable"
        | "timezone_auto"
        | "tracking_google_enable"
        | "tracking_yandex_enable"
        | "button"] => Kind::Flag,
        ["widget", "period" | "schelude_call_delay" | "button_display" | "button_position" | "window_position" | "call_time"] => {
            Kind::Int
        }
        ["widget", "button_position_x" | "button_position_y"] => Kind::Percent,
        ["widget", "api_callback"] => Kind::JsName,
        ["widget", "timezone"] => Kind::TimeZone,
        ["widget", "tracking_yandex_target" | "tracking_google_target" | "phone_prefix"] => Kind::Text,
        ["widget", "schelude", day, "from" | "to"] if DAYS.contains(day) => Kind::Hour,
        ["widget", "schelude", day, "enable"] if DAYS.contains(day) => Kind::Flag,
        ["widget", "algoritms", "onenter" | "onexit" | "onwait", "time"] => Kind::Int,
        ["widget", "algoritms", "onenter" | "onexit" | "onwait" | "onreturn", "enable"] => Kind::Flag,
        ["blacklists", "ip" | "url" | "phone" | "referer"] => Kind::Text,
        _ => return None,
    })
}

/// Sets a nested key; false when it is already set or a parent is a value.
fn set_path(map: &mut Map<String, Value>, segs: &[String], value: Value) -> bool {
    let Some((last, parents)) = segs.split_last() else {
        return false;
    };
    let mut node = map;
    for s in parents {
        node = match node.entry(s.clone()).or_insert_with(|| Value::Object(Map::new())) {
            Value::Object(m) => m,
            _ => return false,
        };
    }
    if node.contains_key(last) {
        return false;
    }
    node.insert(last.clone(), value);
    true
}

/// Parses and checks the site block of a create or update, and the
/// method's other parameters (`extra`).
fn site_block(pairs: &[(String, String)], extra: &[Spec]) -> Result<(Args, SiteBlock), Fail> {
    let mut rest = Vec::new();
    let mut settings = Map::new();
    let mut managers: Vec<(String, Map<String, Value>)> = Vec::new();
    for (key, raw) in pairs {
        let segs = segments(key).ok_or_else(|| invalid(key, "is not a valid parameter name"))?;
        match segs[0].as_str() {
            "site" | "widget" | "blacklists" => {
                let kind = block_kind(&segs).ok_or_else(|| invalid(key, "is not a setting of the site block"))?;
                let value = typed(kind, raw).map_err(|m| invalid(key, m))?;
                if !set_path(&mut settings, &segs, value) {
                    return Err(invalid(key, "is sent twice or clashes with another key"));
                }
            }
            "managers" => {
                let field = match segs.as_slice() {
                    [_, n, f] if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => f.as_str(),
                    _ => {
                        return Err(invalid(
                            key,
                            "managers are sent as managers[N][phone], managers[N][name], managers[N][region]",
                        ))
                    }
                };
                let kind = match field {
                    "phone" => Kind::Phone,
                    "name" => Kind::Text,
                    "region" => Kind::Int,
                    _ => return Err(invalid(key, "a manager has phone, name and region")),
                };
                let value = typed(kind, raw).map_err(|m| invalid(key, m))?;
                let index = segs[1].clone();
                let pos = match managers.iter().position(|(n, _)| *n == index) {
                    Some(p) => p,
                    None => {
                        managers.push((index, Map::new()));
                        managers.len() - 1
                    }
                };
                if managers[pos].1.insert(field.to_owned(), value).is_some() {
                    return Err(invalid(key, "is sent twice"));
                }
            }
            _ => rest.push((key.clone(), raw.clone())),
        }
    }
    let args = check(&rest, extra)?;
    // The document stars site[url] and a manager's phone, on updates too.
    let url = settings
        .get("site")
        .and_then(|s| s.get("url"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if url.trim().is_empty() {
        return Err(invalid("site[url]", "is required"));
    }
    if managers.is_empty() {
        return Err(invalid(
            "managers[0][phone]",
            "is required: a project needs at least one manager",
        ));
    }
    for (n, m) in &managers {
        if m.get("phone").and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err(invalid(&format!("managers[{n}][phone]"), "is required"));
        }
    }
    // A schedule day or an algorithm is sent whole or not at all.
    let widget = settings.get("widget");
    if let Some(Value::Object(days)) = widget.and_then(|w| w.get("schelude")) {
        for (day, keys) in days {
            for k in ["from", "to", "enable"] {
                if keys.get(k).is_none() {
                    return Err(invalid(
                        &format!("widget[schelude][{day}][{k}]"),
                        "is required when any key of that day is sent",
                    ));
                }
            }
            let (from, to) = (
                keys.get("from").and_then(Value::as_i64),
                keys.get("to").and_then(Value::as_i64),
            );
            if let (Some(from), Some(to)) = (from, to) {
                if from >= to {
                    return Err(invalid(
                        &format!("widget[schelude][{day}][to]"),
                        "must be later than from",
                    ));
                }
            }
        }
    }
    if let Some(Value::Object(algorithms)) = widget.and_then(|w| w.get("algoritms")) {
        for (name, keys) in algorithms {
            let needed: &[&str] = if name == "onreturn" {
                &["enable"]
            } else {
                &["time", "enable"]
            };
            for k in needed {
                if keys.get(*k).is_none() {
                    return Err(invalid(
                        &format!("widget[algoritms][{name}][{k}]"),
                        "is required when any key of that algorithm is sent",
                    ));
                }
            }
        }
    }
    let managers = managers.into_iter().map(|(_, m)| Value::Object(m)).collect();
    Ok((args, SiteBlock { settings, managers }))
}

/// Profile time zones and ISO 8601 instants. The date checks and formats
/// Pozvonim shares with other simulators are in [`crate::data`].
mod clock {
    use crate::data;

    /// The UTC offset of a profile time zone, in seconds. Only fixed-offset
    /// Russian and nearby zones are known; others (and daylight saving) are
    /// taken as UTC, as the simulator has no time zone database.
    pub(super) fn offset(zone: &str) -> i64 {
        let hours = match zone {
            "Europe/Kaliningrad" => 2,
            "Europe/Moscow" | "Europe/Simferopol" | "Europe/Volgograd" | "Europe/Kirov" | "Europe/Minsk"
            | "Europe/Istanbul" => 3,
            "Europe/Samara" | "Europe/Ulyanovsk" | "Europe/Astrakhan" | "Europe/Saratov" | "Asia/Baku"
            | "Asia/Tbilisi" | "Asia/Yerevan" => 4,
            "Asia/Yekaterinburg" | "Asia/Tashkent" | "Asia/Almaty" => 5,
            "Asia/Omsk" | "Asia/Bishkek" => 6,
            "Asia/Novosibirsk" | "Asia/Barnaul" | "Asia/Tomsk" | "Asia/Novokuznetsk" | "Asia/Krasnoyarsk" => 7,
            "Asia/Irkutsk" => 8,
            "Asia/Chita" | "Asia/Yakutsk" => 9,
            "Asia/Vladivostok" => 10,
            "Asia/Magadan" | "Asia/Sakhalin" | "Asia/Srednekolymsk" => 11,
            "Asia/Kamchatka" | "Asia/Anadyr" => 12,
            _ => 0,
        };
        hours * 3600
    }

    /// `UTC` or an IANA-style `Area/City` name.
    pub(super) fn valid_zone(zone: &str) -> bool {
        const AREAS: &[&str] = &[
            "Africa",
            "America",
            "Antarctica",
            "Asia",
            "Atlantic",
            "Australia",
            "Europe",
            "Indian",
            "Pacific",
            "Etc",
        ];
        if zone == "UTC" {
            return true;
        }
        match zone.split_once('/') {
            Some((area, city)) => {
                AREAS.contains(&area)
                    && !city.is_empty()
                    && city.chars().all(|c| c.is_ascii_alphanumeric() || "_+-/".contains(c))
            }
            None => false,
        }
    }

    /// The Unix time of ISO 8601 (`2030-01-01T10:00:00+03:00`, `...Z`,
    /// `...T10:00:00` in the `local` offset, fractions allowed).
    pub(super) fn parse_when(s: &str, local: i64) -> Option<i64> {
        if !s.is_ascii() || s.len() < 19 {
            return None;
        }
        let (head, tail) = s.split_at(19);
        let date = data::ymd(&head[..10])?;
        let time = data::hms(&head[11..])?;
        // ISO 8601 only, as the document asks for `delayed`: a `T`
        // between date and time.
        let offset = match head.as_bytes()[10] {
            b'T' => {
                let tail = match tail.strip_prefix('.') {
                    Some(frac) => {
                        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
                        if n == 0 {
                            return None;
                        }
                        &frac[n..]
                    }
                    None => tail,
                };
                match tail {
                    "" => local,
                    "Z" | "z" => 0,
                    zone => {
                        let sign = match zone.as_bytes()[0] {
                            b'+' => 1,
                            b'-' => -1,
                            _ => return None,
                        };
                        let digits = zone[1..].replace(':', "");
                        if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                            return None;
                        }
                        let hours: i64 = digits[..2].parse().ok()?;
                        let minutes: i64 = digits[2..].parse().ok()?;
                        if hours > 14 || minutes > 59 {
                            return None;
                        }
                        sign * (hours * 3600 + minutes * 60)
                    }
                }
            }
            _ => return None,
        };
        Some(date.and_time(time).and_utc().timestamp() - offset)
    }
}
