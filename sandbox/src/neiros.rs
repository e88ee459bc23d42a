//! The Neiros simulator: the "User API" under `/api/userapi/v1`, served the
//! way the Laravel application behind it (Scribe document, Sanctum tokens)
//! serves it.
//!
//! * `POST /auth/login` takes the account's e-mail and password as JSON and
//!   answers `{"user": {...}, "token": "<id>|<random>"}`. Wrong credentials
//!   get 401 and a missing field 422, in Laravel's shapes.
//! * Every other route needs `Authorization: Bearer <token>` with a token
//!   this simulator issued, `|` included. Otherwise the answer is 401
//!   `{"message": "Unauthenticated."}`, or Laravel's redirect to its login
//!   page when the client does not ask for JSON.
//! * `GET /projects` (the deals of a site) pages by `page`, which is
//!   required and starts at 1. It uses Laravel's paginator semantics:
//!   `last_page` is the number of the last page and `total` the number of
//!   matching deals (the document's comments say otherwise; see the
//!   descriptor). Past the last page the list is empty.
//! * `POST /project/{id}/update` sets the deal's `summ`; later reads show it.
//!
//! The document shows no error at all. 401, 404 and 422 follow Laravel.
//! The `{"success": false}` answer (HTTP 200) to an update naming a site
//! that does not own the deal is this simulator's invention; the descriptor
//! treats such an answer as an error.
//!
//! Data: `records` sites, each with `records` deals, from the seed.

use crate::data::{self, Rng};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// Where the API lives on the server; every route is under it.
pub const BASE_PATH: &str = "/api/userapi/v1";

/// The account's credentials.
const EMAIL: &str = "sandbox@neiros.test";
const PASSWORD: &str = "neiros-sandbox-pass";

/// Deals per page of `GET /projects`. The document gives no page size and
/// no parameter to set one; a small one makes clients page even through a
/// small data set.
const PER_PAGE: usize = 10;

/// Site and deal IDs come from ranges far apart, so that a client that
/// swaps them gets a 404 instead of someone else's data.
pub(crate) const FIRST_SITE_ID: u64 = 100;
pub(crate) const FIRST_DEAL_ID: u64 = 10_001;

const DOMAINS: &[&str] = &[
    "wistis",
    "autokovrik",
    "okna-plus",
    "remont-pro",
    "mebel-lux",
    "zoomagazin",
    "stroymir",
];
/// Channels (`canal`) with their traffic source (`traffic`).
const CHANNELS: &[(&str, &str)] = &[
    ("Google", "google"),
    ("Яндекс.Директ", "yandex"),
    ("ВКонтакте", "vk"),
    ("Прямой заход", "direct"),
    ("Поиск", "organic"),
];
/// Deal stages; the first is the document's example.
const STAGES: &[&str] = &[
    "Неразобранное",
    "В работе",
    "Успешно реализовано",
    "Закрыто и не реализовано",
];

type Shared = Arc<Mutex<Store>>;
type Params = HashMap<String, String>;
/// An answer: the JSON body of a 200, or a finished error response.
type Answer = Result<Value, Response>;
/// Validation failures, field by field, as Laravel collects them.
type Errors = Vec<(&'static str, String)>;

/// Builds the simulator and the config a connection needs against it.
pub fn build(opts: &crate::Options) -> (Router, Vec<(&'static str, String)>) {
    let mut r = Rng::new(opts.seed, "neiros");
    let user = json!({"name": data::name(&mut r), "email": EMAIL, "id": 176});
    let mut sites = Vec::new();
    let mut deals = Vec::new();
    for k in 0..opts.records {
        let site_id = FIRST_SITE_ID + k as u64;
        sites.push(Site {
            id: site_id,
            name: format!("{}-{}.ru", r.pick(DOMAINS), k + 1),
        });
        for i in 0..opts.records {
            let id = FIRST_DEAL_ID + deals.len() as u64;
            // About one deal a day, so that date ranges select something.
            deals.push(Deal::generate(&mut r, id, site_id, i * 15 + k));
        }
    }
    let store = Store {
        user,
        sites,
        deals,
        tokens: HashSet::new(),
        // Tokens are unguessable and differ between runs, like real ones;
        // only the data set is seeded.
        token_rng: Rng::new(rand::random::<u64>(), "neiros/tokens"),
        next_token_id: 300,
    };
    let api = Router::new()
        .route("/auth/login", post(login))
        .route("/projects", get(list_deals))
        .route("/project/{id}", get(get_deal))
        .route("/project/{id}/update", post(update_deal))
        .route("/sites", get(list_sites));
    let router = Router::new()
        .nest(BASE_PATH, api)
        .fallback(no_route)
        .with_state(Arc::new(Mutex::new(store)));
    (
        router,
        vec![("email", EMAIL.to_owned()), ("password", PASSWORD.to_owned())],
    )
}

/// A site (the document's "project").
struct Site {
    id: u64,
    name: String,
}

/// A deal (the API's `project`).
struct Deal {
    id: u64,
    site_id: u64,
    neiros_visit: String,
    neiros_id: String,
    /// `2020-07-18T21:04:48.000000Z`, as in the document.
    created_at: String,
    /// Digits only, no `+`, as in the document.
    phone: String,
    duration: u64,
    record: String,
    canal: &'static str,
    traffic: &'static str,
    summ: i64,
    status: &'static str,
}

impl Deal {
    fn generate(r: &mut Rng, id: u64, site_id: u64, moment: usize) -> Deal {
        let (canal, traffic) = CHANNELS[r.below(CHANNELS.len() as u64) as usize];
        Deal {
            id,
            site_id,
            neiros_visit: format!("{:016x}{:08x}", r.next_u64(), r.next_u64() as u32),
            neiros_id: (4_000_000 + r.below(1_000_000)).to_string(),
            created_at: format!("{}.000000Z", data::datetime(moment).replace(' ', "T")),
            phone: data::phone(r).trim_start_matches('+').to_owned(),
            duration: r.below(600),
            record: format!("https://audio.neiros.ru/{:016x}{:016x}.mp3", r.next_u64(), r.next_u64()),
            canal,
            traffic,
            summ: (r.below(10) * 1500) as i64,
            status: r.pick(STAGES),
        }
    }

    /// The deal date, `YYYY-MM-DD`.
    fn date(&self) -> &str {
        self.created_at.get(..10).unwrap_or("")
    }

    /// The deal as `GET /projects` lists it.
    fn summary(&self) -> Value {
        json!({"id": self.id, "site_id": self.site_id, "date": self.date()})
    }

    /// The deal as `GET /project/{id}` answers it.
    fn full(&self) -> Value {
        json!({
            "id": self.id,
            "neiros_visit": self.neiros_visit,
            "neiros_id": self.neiros_id,
            "created_at": self.created_at,
            "phone": self.phone,
            "duration": self.duration,
            "record": self.record,
            "canal": self.canal,
            "traffic": self.traffic,
            "summ": self.summ,
            "status": self.status,
        })
    }
}

struct Store {
    /// The `user` of the login answer.
    user: Value,
    sites: Vec<Site>,
    /// Ordered by ID.
    deals: Vec<Deal>,
    /// Every token issued. Sanctum tokens do not expire unless configured
    /// to, and the document names no lifetime, so none is enforced.
    tokens: HashSet<String>,
    token_rng: Rng,
    next_token_id: u64,
}

impl Store {
    /// A new Sanctum-style token, `<id>|<40 letters and digits>`.
    fn issue_token(&mut self) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let secret: String = (0..40)
            .map(|_| ALPHABET[self.token_rng.below(ALPHABET.len() as u64) as usize] as char)
            .collect();
        let token = format!("{}|{secret}", self.next_token_id);
        self.next_token_id += 1;
        self.tokens.insert(token.clone());
        token
    }

    /// Checks the bearer token, as Sanctum's `auth:sanctum` middleware does.
    fn authenticate(&self, headers: &HeaderMap) -> Result<(), Response> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if token.is_some_and(|t| self.tokens.contains(t)) {
            return Ok(());
        }
        if wants_json(headers) {
            Err(message(StatusCode::UNAUTHORIZED, "Unauthenticated."))
        } else {
            // What Laravel does for a browser: send it to the login page.
            Err((StatusCode::FOUND, [(header::LOCATION, "/login")]).into_response())
        }
    }

    /// The position of a deal by the `{id}` of a path. An ID that is not a
    /// number finds nothing, as with Laravel's route model binding.
    fn deal_index(&self, id: &str) -> Option<usize> {
        let id: u64 = id.trim().parse().ok()?;
        self.deals.iter().position(|d| d.id == id)
    }
}

fn lock(st: &Shared) -> MutexGuard<'_, Store> {
    st.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------- handlers

async fn login(State(st): State<Shared>, headers: HeaderMap, body: String) -> Response {
    reply(login_with(&mut lock(&st), &headers, &body))
}

fn login_with(st: &mut Store, headers: &HeaderMap, body: &str) -> Answer {
    let input = json_input(headers, body);
    let mut errors = Errors::new();
    let email = json_text(&input, "email", &mut errors);
    let password = json_text(&input, "password", &mut errors);
    let (Some(email), Some(password)) = (email, password) else {
        return Err(validation(errors));
    };
    if email != EMAIL || password != PASSWORD {
        return Err(message(
            StatusCode::UNAUTHORIZED,
            "These credentials do not match our records.",
        ));
    }
    Ok(json!({"user": st.user.clone(), "token": st.issue_token()}))
}

async fn list_sites(State(st): State<Shared>, headers: HeaderMap) -> Response {
    reply(list_sites_with(&lock(&st), &headers))
}

fn list_sites_with(st: &Store, headers: &HeaderMap) -> Answer {
    st.authenticate(headers)?;
    let sites: Vec<Value> = st.sites.iter().map(|s| json!({"name": s.name, "id": s.id})).collect();
    Ok(json!({ "data": sites }))
}

async fn list_deals(State(st): State<Shared>, headers: HeaderMap, Query(q): Query<Params>) -> Response {
    reply(list_deals_with(&lock(&st), &headers, &q))
}

fn list_deals_with(st: &Store, headers: &HeaderMap, q: &Params) -> Answer {
    st.authenticate(headers)?;
    let mut errors = Errors::new();
    let site_id = query_int(q, "site_id", &mut errors);
    let page = query_int(q, "page", &mut errors);
    let from = query_date(q, "date_start", &mut errors);
    let to = query_date(q, "date_end", &mut errors);
    if let Some(p) = page.filter(|p| *p < 1) {
        errors.push(("page", format!("The page field must be at least 1, not {p}.")));
    }
    let (Some(site_id), Some(page), true) = (site_id, page, errors.is_empty()) else {
        return Err(validation(errors));
    };
    let site = u64::try_from(site_id)
        .ok()
        .filter(|id| st.sites.iter().any(|s| s.id == *id));
    let Some(site) = site else {
        return Err(model_not_found("Site", &site_id.to_string()));
    };
    // Dates compare by day: the document shows both `YYYY-MM-DD` and
    // `YYYY-MM-DDTHH:MM:SS`, and a deal has only a date.
    let deals: Vec<&Deal> = st
        .deals
        .iter()
        .filter(|d| d.site_id == site && from.is_none_or(|f| d.date() >= f) && to.is_none_or(|t| d.date() <= t))
        .collect();
    let total = deals.len();
    let last_page = total.div_ceil(PER_PAGE).max(1);
    let skip = usize::try_from(page - 1).unwrap_or(usize::MAX).saturating_mul(PER_PAGE);
    let projects: Vec<Value> = deals.iter().skip(skip).take(PER_PAGE).map(|d| d.summary()).collect();
    Ok(json!({"data": {"projects": projects}, "last_page": last_page, "total": total}))
}

async fn get_deal(
    State(st): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<Params>,
) -> Response {
    reply(get_deal_with(&lock(&st), &id, &headers, &q))
}

fn get_deal_with(st: &Store, id: &str, headers: &HeaderMap, q: &Params) -> Answer {
    st.authenticate(headers)?;
    // Route model binding comes before validation, as in Laravel.
    let deal = st
        .deal_index(id)
        .map(|i| &st.deals[i])
        .ok_or_else(|| model_not_found("Project", id))?;
    let mut errors = Errors::new();
    let Some(site_id) = query_int(q, "site_id", &mut errors) else {
        return Err(validation(errors));
    };
    if i64::try_from(deal.site_id).ok() != Some(site_id) {
        return Err(model_not_found("Project", id));
    }
    Ok(json!({ "data": deal.full() }))
}

async fn update_deal(State(st): State<Shared>, Path(id): Path<String>, headers: HeaderMap, body: String) -> Response {
    reply(update_deal_with(&mut lock(&st), &id, &headers, &body))
}

fn update_deal_with(st: &mut Store, id: &str, headers: &HeaderMap, body: &str) -> Answer {
    st.authenticate(headers)?;
    let index = st.deal_index(id).ok_or_else(|| model_not_found("Project", id))?;
    let input = json_input(headers, body);
    let mut errors = Errors::new();
    let site_id = json_int(&input, "site_id", &mut errors);
    let summ = json_int(&input, "summ", &mut errors);
    let (Some(site_id), Some(summ)) = (site_id, summ) else {
        return Err(validation(errors));
    };
    let deal = &mut st.deals[index];
    if i64::try_from(deal.site_id).ok() != Some(site_id) {
        return Ok(json!({
            "success": false,
            "message": format!("Deal {} does not belong to site {site_id}.", deal.id),
        }));
    }
    // The document says "add an amount" but sends the deal's own field:
    // the amount is set, not added (see the descriptor).
    deal.summ = summ;
    Ok(json!({ "success": true }))
}

async fn no_route(uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    message(StatusCode::NOT_FOUND, &format!("The route {path} could not be found."))
}

// ---------------------------------------------------------------- answers

fn reply(answer: Answer) -> Response {
    match answer {
        Ok(body) => Json(body).into_response(),
        Err(response) => response,
    }
}

/// Laravel's error body, `{"message": ...}`.
fn message(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "message": text }))).into_response()
}

/// Laravel's 404 for a route model that does not exist.
fn model_not_found(model: &str, id: &str) -> Response {
    message(
        StatusCode::NOT_FOUND,
        &format!("No query results for model [App\\Models\\{model}] {id}"),
    )
}

/// Laravel's 422: the first message (with a count of the others) and every
/// message by field.
fn validation(errors: Errors) -> Response {
    let first = errors
        .first()
        .map(|(_, m)| m.clone())
        .unwrap_or_else(|| "The given data was invalid.".into());
    let text = match errors.len() {
        0 | 1 => first,
        2 => format!("{first} (and 1 more error)"),
        n => format!("{first} (and {} more errors)", n - 1),
    };
    let mut fields = Map::new();
    for (field, m) in errors {
        fields.insert(field.to_owned(), json!([m]));
    }
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({"message": text, "errors": fields})),
    )
        .into_response()
}

// ---------------------------------------------------------------- input

/// How Laravel names a field in its messages: `site_id` is "site id".
fn attribute(field: &str) -> String {
    field.replace('_', " ")
}

fn required(field: &str) -> String {
    format!("The {} field is required.", attribute(field))
}

/// Whether the client asked for JSON (Laravel's `expectsJson`).
fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("/json") || a.contains("+json"))
}

/// The JSON body's fields. Laravel reads a body as JSON only when it says
/// it is JSON; anything else, or JSON that is not an object, gives no
/// input, so the validation that follows reports the missing fields.
fn json_input(headers: &HeaderMap, body: &str) -> Map<String, Value> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains("json"));
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(m)) if is_json => m,
        _ => Map::new(),
    }
}

/// A required text field of a JSON body (`required|string`).
fn json_text<'a>(input: &'a Map<String, Value>, field: &'static str, errors: &mut Errors) -> Option<&'a str> {
    match input.get(field) {
        None | Some(Value::Null) => errors.push((field, required(field))),
        Some(Value::String(s)) if s.trim().is_empty() => errors.push((field, required(field))),
        Some(Value::String(s)) => return Some(s.as_str()),
        Some(_) => errors.push((field, format!("The {} field must be a string.", attribute(field)))),
    }
    None
}

/// A required whole number of a JSON body (`required|integer`, which also
/// takes a number written as text).
fn json_int(input: &Map<String, Value>, field: &'static str, errors: &mut Errors) -> Option<i64> {
    let value = match input.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::Number(n)) => Some(n.as_i64()),
        Some(Value::String(s)) => Some(s.trim().parse().ok()),
        Some(_) => Some(None),
    };
    match value {
        None => errors.push((field, required(field))),
        Some(None) => errors.push((field, format!("The {} field must be an integer.", attribute(field)))),
        Some(Some(n)) => return Some(n),
    }
    None
}

/// A required whole number of the query string.
fn query_int(q: &Params, field: &'static str, errors: &mut Errors) -> Option<i64> {
    match q.get(field).map(|v| v.trim()) {
        None | Some("") => errors.push((field, required(field))),
        Some(v) => match v.parse::<i64>() {
            Ok(n) => return Some(n),
            Err(_) => errors.push((field, format!("The {} field must be an integer.", attribute(field)))),
        },
    }
    None
}

/// An optional date of the query string, `YYYY-MM-DD` or
/// `YYYY-MM-DDTHH:MM:SS` (the document shows both); its day.
fn query_date<'a>(q: &'a Params, field: &'static str, errors: &mut Errors) -> Option<&'a str> {
    let v = q.get(field).map(|v| v.trim()).filter(|v| !v.is_empty())?;
    let day = day_of(v);
    if day.is_none() {
        errors.push((field, format!("The {} field must be a valid date.", attribute(field))));
    }
    day
}

/// The day of `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SS` or `YYYY-MM-DD HH:MM:SS`,
/// zero-padded, if that day and time exist.
fn day_of(v: &str) -> Option<&str> {
    let day = v.get(..10).filter(|d| data::ymd(d).is_some())?;
    match v.get(10..)? {
        "" => Some(day),
        rest => {
            let time = rest.strip_prefix('T').or_else(|| rest.strip_prefix(' '))?;
            data::hms(time).map(|_| day)
        }
    }
}
