//! The Roistat simulator: "Lead management without CRM"
//! (`/project/leads/...`).
//!
//! * Every call needs the account's `Api-key` header and its `?project=`.
//!   Otherwise the answer is HTTP 200 with `{"status": "error", "error":
//!   "authorization_error", "description": ...}`. Roistat reports errors in
//!   the body with HTTP 200 (DESIGN.md), and so does this simulator for
//!   every request error: `validation_error` for a bad request,
//!   `not_found` for an unknown lead.
//! * All four methods are POST. `lead/list` takes `period` (required),
//!   `filters`, `sort_field` (required), `sort_order`, `limit` and `offset`
//!   in a JSON body and answers one page with `total`, the number of
//!   matching leads.
//! * `lead/create` checks the required fields, the dates (a day that does
//!   not exist is an error) and the status; the new lead is in the next
//!   list. `lead/update` changes only the fields it is given.
//! * `status/list` takes no body and answers the statuses: the three
//!   documented ones and a custom `"3"`, the status of the document's
//!   update example.
//!
//! The routes sit at the server root: the real API's `/api/v1` prefix is
//! part of the base URL, which a connection overrides.
//!
//! Not simulated: the limit of 10 requests a second per project. Several
//! `flow` processes share one simulator in tests, so enforcing it would make
//! them flaky.
//!
//! Data: `records` leads from the seed, created in 2024.

use crate::data::{self, Rng};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// The account's credentials.
const API_KEY: &str = "roistat-sandbox-key-4d7a";
const PROJECT: &str = "12345";

/// Lead statuses: ID, name, group (`canceled` with one l, as documented).
const STATUSES: &[(&str, &str, &str)] = &[
    ("0", "В работе", "progress"),
    ("1", "Оплачен", "paid"),
    ("2", "Отменен", "canceled"),
    ("3", "Перезвонить", "progress"),
];
const SOURCES: &[&str] = &["direct", "vk", "2gis", "yandex", "google"];
const COMMENTS: &[&str] = &["Важный клиент", "Перезвонить вечером", "Просит скидку", ""];

/// The fields `filters` takes.
const FILTERABLE: &[&str] = &[
    "creation_date",
    "email",
    "id",
    "name",
    "paid_date",
    "phone",
    "price",
    "status",
    "source",
    "title",
];
/// The fields `sort_field` takes.
const SORTABLE: &[&str] = &["creation_date", "id", "paid_date", "price", "source", "status"];
/// The fields a create sets, required ones first (`text` is not among them:
/// the document lists it for update only).
const CREATE_FIELDS: &[&str] = &[
    "creation_date",
    "name",
    "status",
    "title",
    "email",
    "paid_date",
    "phone",
    "price",
    "source",
];
const REQUIRED_ON_CREATE: &[&str] = &["creation_date", "name", "status", "title"];
/// The fields an update sets.
const UPDATE_FIELDS: &[&str] = &[
    "creation_date",
    "email",
    "name",
    "paid_date",
    "phone",
    "price",
    "source",
    "status",
    "text",
    "title",
];

static NULL: Value = Value::Null;

type Shared = Arc<Mutex<Store>>;
type Params = HashMap<String, String>;
/// An answer: the JSON body of a success, or a finished error response.
type Answer = Result<Value, Response>;

/// The path of the document's base URL (`https://cloud.roistat.com/api/v1`):
/// requests elsewhere are not found, as on the real server.
pub const BASE_PATH: &str = "/api/v1";

/// Builds the simulator and the config a connection needs against it.
pub fn build(opts: &crate::Options) -> (Router, Vec<(&'static str, String)>) {
    let mut r = Rng::new(opts.seed, "roistat");
    let leads = (0..opts.records).map(|i| generate(&mut r, i)).collect();
    let store = Store {
        leads,
        next_id: opts.records as u64 + 1,
    };
    let api = Router::new()
        .route("/project/leads/lead/list", post(list_leads))
        .route("/project/leads/status/list", post(list_statuses))
        .route("/project/leads/lead/create", post(create_lead))
        .route("/project/leads/lead/update", post(update_lead))
        .fallback(no_route);
    let router = Router::new()
        .nest(BASE_PATH, api)
        .fallback(no_route)
        .with_state(Arc::new(Mutex::new(store)));
    (
        router,
        vec![("api_key", API_KEY.to_owned()), ("project", PROJECT.to_owned())],
    )
}

struct Store {
    /// Leads as the list answers them: JSON objects, `id` a string.
    leads: Vec<Value>,
    next_id: u64,
}

fn lock(st: &Shared) -> MutexGuard<'_, Store> {
    st.lock().unwrap_or_else(|p| p.into_inner())
}

/// Lead number `i` (from 0), in the document's shape.
fn generate(r: &mut Rng, i: usize) -> Value {
    let id = i + 1;
    let status = r.pick(&["0", "0", "1", "1", "2"]);
    let at = |moment: usize| format!("{}+0000", data::datetime(moment).replace(' ', "T"));
    let paid = if status == "1" {
        Value::String(at(i * 15 + 7))
    } else {
        Value::Null
    };
    json!({
        "id": id.to_string(),
        "title": format!("Заявка №{id}"),
        "creation_date": at(i * 15),
        "paid_date": paid,
        "status": status,
        "price": (1 + r.below(40)) * 500,
        "name": data::name(r),
        "phone": data::phone(r),
        "email": format!("client{id}@example.ru"),
        "source": r.pick(SOURCES),
        "text": r.pick(COMMENTS),
    })
}

// ---------------------------------------------------------------- handlers

async fn list_leads(State(st): State<Shared>, headers: HeaderMap, Query(q): Query<Params>, body: String) -> Response {
    reply(list_leads_with(&lock(&st), &headers, &q, &body))
}

fn list_leads_with(st: &Store, headers: &HeaderMap, q: &Params, body: &str) -> Answer {
    authorize(headers, q)?;
    let input = object_body(body)?;
    let (from, to) = period(&input)?;
    let filters = match input.get("filters") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list.iter().map(Filter::parse).collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(invalid("`filters` must be a list.")),
    };
    let sort_field = match input.get("sort_field") {
        None | Some(Value::Null) => return Err(invalid("`sort_field` is required.")),
        Some(Value::String(f)) if SORTABLE.contains(&f.as_str()) => f.as_str(),
        Some(other) => {
            return Err(invalid(format!(
                "`sort_field` is one of {}, not {other}.",
                SORTABLE.join(", ")
            )));
        }
    };
    let descending = match input.get("sort_order") {
        None | Some(Value::Null) => false,
        Some(Value::String(o)) if o == "asc" => false,
        Some(Value::String(o)) if o == "desc" => true,
        Some(other) => return Err(invalid(format!("`sort_order` is asc or desc, not {other}."))),
    };
    let limit = whole(&input, "limit")?;
    let offset = whole(&input, "offset")?.unwrap_or(0);
    let mut found: Vec<&Value> = st
        .leads
        .iter()
        .filter(|lead| {
            key(field(lead, "creation_date"), "creation_date").is_some_and(|k| k >= from && k <= to)
                && filters.iter().all(|f| f.holds(lead))
        })
        .collect();
    found.sort_by(|a, b| {
        let order = key(field(a, sort_field), sort_field).cmp(&key(field(b, sort_field), sort_field));
        let order = if descending { order.reverse() } else { order };
        order.then_with(|| key(field(a, "id"), "id").cmp(&key(field(b, "id"), "id")))
    });
    let total = found.len();
    let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    // No `limit`: everything from `offset` (the document gives no default).
    let leads: Vec<Value> = found
        .into_iter()
        .skip(size(offset))
        .take(limit.map_or(usize::MAX, size))
        .cloned()
        .collect();
    Ok(json!({"leads": leads, "total": total, "status": "success"}))
}

async fn list_statuses(headers: HeaderMap, Query(q): Query<Params>) -> Response {
    // "Без тела": whatever body comes is ignored.
    reply(authorize(&headers, &q).map(|()| {
        let data: Vec<Value> = STATUSES
            .iter()
            .map(|(id, name, kind)| json!({"id": id, "name": name, "type": kind}))
            .collect();
        json!({"data": data, "total": STATUSES.len(), "status": "success"})
    }))
}

async fn create_lead(State(st): State<Shared>, headers: HeaderMap, Query(q): Query<Params>, body: String) -> Response {
    reply(create_lead_with(&mut lock(&st), &headers, &q, &body))
}

fn create_lead_with(st: &mut Store, headers: &HeaderMap, q: &Params, body: &str) -> Answer {
    authorize(headers, q)?;
    let input = object_body(body)?;
    let missing: Vec<&str> = REQUIRED_ON_CREATE
        .iter()
        .copied()
        .filter(|f| absent(&input, f))
        .collect();
    if !missing.is_empty() {
        return Err(invalid(format!("Required fields are missing: {}.", missing.join(", "))));
    }
    let changes = lead_fields(&input, CREATE_FIELDS)?;
    let id = st.next_id.to_string();
    st.next_id += 1;
    let mut lead = Map::new();
    for name in [
        "id",
        "title",
        "creation_date",
        "paid_date",
        "status",
        "price",
        "name",
        "phone",
        "email",
        "source",
        "text",
    ] {
        lead.insert(name.to_owned(), Value::Null);
    }
    lead.insert("id".to_owned(), Value::String(id.clone()));
    for (name, value) in changes {
        lead.insert(name.to_owned(), value);
    }
    st.leads.push(Value::Object(lead));
    Ok(json!({"lead_id": id, "status": "success"}))
}

async fn update_lead(State(st): State<Shared>, headers: HeaderMap, Query(q): Query<Params>, body: String) -> Response {
    reply(update_lead_with(&mut lock(&st), &headers, &q, &body))
}

fn update_lead_with(st: &mut Store, headers: &HeaderMap, q: &Params, body: &str) -> Answer {
    authorize(headers, q)?;
    let input = object_body(body)?;
    let id = input.get("id").and_then(text).filter(|id| !id.is_empty());
    let Some(id) = id else {
        return Err(invalid("`id` is required."));
    };
    let changes = lead_fields(&input, UPDATE_FIELDS)?;
    let lead = st
        .leads
        .iter_mut()
        .find(|lead| lead["id"].as_str() == Some(id.as_str()))
        .and_then(Value::as_object_mut)
        .ok_or_else(|| fail("not_found", format!("There is no lead {id}.")))?;
    for (name, value) in changes {
        lead.insert(name.to_owned(), value);
    }
    Ok(json!({"status": "success"}))
}

async fn no_route(uri: Uri) -> Response {
    let body = json!({"status": "error", "error": "not_found", "description": format!("No method {}.", uri.path())});
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

// ---------------------------------------------------------------- filters

/// One entry of `filters`.
struct Filter {
    field: &'static str,
    test: Test,
}

enum Test {
    /// `=`, `!=`, `<`, `>`, `<=`, `>=` against one value.
    Compare(Op, Key),
    /// `like`: contains the text, ignoring case (`%` is a wildcard).
    Like(String),
    /// `in`: one of the values.
    In(Vec<Key>),
}

impl Filter {
    /// `{"field", "operator", "value"}` (the document's example) or
    /// `["field", "operator", "value"]` (its table).
    fn parse(v: &Value) -> Result<Filter, Response> {
        let (field_name, operator, value) = match v {
            Value::Object(m) => (m.get("field"), m.get("operator"), m.get("value")),
            Value::Array(a) if a.len() == 3 => (a.first(), a.get(1), a.get(2)),
            _ => {
                return Err(invalid(
                    "Each filter is {\"field\", \"operator\", \"value\"} or [field, operator, value].",
                ))
            }
        };
        let name = field_name.and_then(Value::as_str).unwrap_or("");
        let Some(field) = FILTERABLE.iter().copied().find(|f| *f == name) else {
            return Err(invalid(format!(
                "A filter's field is one of {}, not `{name}`.",
                FILTERABLE.join(", ")
            )));
        };
        let operator = operator.and_then(Value::as_str).unwrap_or("");
        // The document types a filter's value as a string ("с типом
        // string"); every example writes numbers and dates as text.
        let string = |v: &Value| v.is_string().then(|| key(v, field)).flatten();
        let one = || -> Result<Key, Response> {
            value
                .and_then(string)
                .ok_or_else(|| invalid(format!("The filter on `{field}` needs a valid value, as a string.")))
        };
        // The operators of the document's table (=, !=, <=, >=) and of its
        // example (>, like, in); `<` appears in neither.
        let test = match operator {
            "=" => Test::Compare(Op::Eq, one()?),
            "!=" => Test::Compare(Op::Ne, one()?),
            ">" => Test::Compare(Op::Gt, one()?),
            "<=" => Test::Compare(Op::Le, one()?),
            ">=" => Test::Compare(Op::Ge, one()?),
            "like" => match value.and_then(Value::as_str) {
                Some(t) => Test::Like(t.trim().replace('%', "").to_lowercase()),
                None => return Err(invalid(format!("The `like` filter on `{field}` needs a string value."))),
            },
            "in" => match value {
                Some(Value::Array(list)) => Test::In(
                    list.iter()
                        .map(string)
                        .collect::<Option<Vec<Key>>>()
                        .ok_or_else(|| invalid(format!("The `in` filter on `{field}` needs strings.")))?,
                ),
                _ => return Err(invalid(format!("The `in` filter on `{field}` needs a list of values."))),
            },
            other => {
                return Err(invalid(format!(
                    "A filter's operator is one of =, !=, >, <=, >=, like, in, not `{other}`."
                )))
            }
        };
        Ok(Filter { field, test })
    }

    /// Whether a lead passes. A lead without the field (an unpaid lead's
    /// `paid_date`) passes no comparison, as with SQL's NULL.
    fn holds(&self, lead: &Value) -> bool {
        let value = field(lead, self.field);
        match &self.test {
            Test::Like(part) => text(value).is_some_and(|t| t.to_lowercase().contains(part.as_str())),
            Test::In(keys) => key(value, self.field).is_some_and(|k| keys.contains(&k)),
            Test::Compare(op, want) => key(value, self.field).is_some_and(|have| match op {
                Op::Eq => have == *want,
                Op::Ne => have != *want,
                Op::Gt => have > *want,
                Op::Le => have <= *want,
                Op::Ge => have >= *want,
            }),
        }
    }
}

/// A comparison operator of a filter.
enum Op {
    Eq,
    Ne,
    Gt,
    Le,
    Ge,
}

/// A field's value in a form that compares right: IDs and amounts as
/// numbers, dates as seconds, the rest as text without case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Number(i64),
    Text(String),
}

fn key(v: &Value, field: &str) -> Option<Key> {
    let t = text(v)?;
    match field {
        "id" | "price" => t.trim().parse().ok().map(Key::Number),
        "creation_date" | "paid_date" => timestamp(&t).map(Key::Number),
        _ => Some(Key::Text(t.to_lowercase())),
    }
}

fn field<'a>(lead: &'a Value, name: &str) -> &'a Value {
    lead.get(name).unwrap_or(&NULL)
}

/// A string, or a number as text (PHP reads both alike).
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

// ---------------------------------------------------------------- answers

fn reply(answer: Answer) -> Response {
    match answer {
        Ok(body) => Json(body).into_response(),
        Err(response) => response,
    }
}

/// An error as Roistat answers it: HTTP 200, `status: error`.
fn fail(code: &str, description: impl Into<String>) -> Response {
    Json(json!({"status": "error", "error": code, "description": description.into()})).into_response()
}

fn invalid(description: impl Into<String>) -> Response {
    fail("validation_error", description)
}

/// The account's key in `Api-key` and its project in `?project=`.
fn authorize(headers: &HeaderMap, q: &Params) -> Result<(), Response> {
    let key = headers.get("api-key").and_then(|v| v.to_str().ok()).map(str::trim);
    let problem = match (key, q.get("project").map(|p| p.trim())) {
        (None | Some(""), _) => "The Api-key header is missing.",
        (Some(k), _) if k != API_KEY => "The API key is not valid.",
        (_, None | Some("")) => "The project parameter is required.",
        (_, Some(p)) if p != PROJECT => "The API key has no access to this project.",
        _ => return Ok(()),
    };
    Err(fail("authorization_error", problem))
}

// ---------------------------------------------------------------- input

fn object_body(body: &str) -> Result<Map<String, Value>, Response> {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(invalid("The request body must be a JSON object.")),
    }
}

fn absent(input: &Map<String, Value>, name: &str) -> bool {
    match input.get(name) {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        Some(_) => false,
    }
}

/// An optional whole number ≥ 0 of the body.
fn whole(input: &Map<String, Value>, name: &str) -> Result<Option<u64>, Response> {
    match input.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| invalid(format!("`{name}` must be a whole number, not {v}."))),
    }
}

/// `period`: both ends required and valid; as seconds.
fn period(input: &Map<String, Value>) -> Result<(Key, Key), Response> {
    let Some(Value::Object(p)) = input.get("period") else {
        return Err(invalid("`period` is required: {\"from\": ..., \"to\": ...}."));
    };
    let end = |name: &str| -> Result<Key, Response> {
        match p.get(name) {
            Some(Value::String(s)) => timestamp(s)
                .map(Key::Number)
                .ok_or_else(|| invalid(format!("`period.{name}` is not a valid date: `{s}`."))),
            _ => Err(invalid(format!("`period.{name}` is required."))),
        }
    };
    Ok((end("from")?, end("to")?))
}

/// The lead fields a create or update sets, checked and in the stored form:
/// dates as `2022-01-01T21:00:00+0000`, the price as a number, the rest as
/// text. Fields not in `allowed` are ignored.
fn lead_fields(input: &Map<String, Value>, allowed: &[&'static str]) -> Result<Vec<(&'static str, Value)>, Response> {
    let mut out = Vec::new();
    for &name in allowed {
        let Some(v) = input.get(name).filter(|v| !v.is_null()) else {
            continue;
        };
        let value = match name {
            "creation_date" | "paid_date" => {
                let stamp = v.as_str().and_then(timestamp);
                let Some(stamp) = stamp else {
                    return Err(invalid(format!(
                        "`{name}` is not a valid date (2022-01-01T21:00:00+0000): {v}."
                    )));
                };
                Value::String(format_timestamp(stamp))
            }
            // Typed as the document's tables type them: `price integer`,
            // everything else `string`.
            "price" => match v.as_i64() {
                Some(price) => Value::from(price),
                None => return Err(invalid(format!("`price` must be a whole number, not {v}."))),
            },
            "status" => match v.as_str().map(str::trim) {
                Some(s) if STATUSES.iter().any(|(id, _, _)| *id == s) => Value::String(s.to_owned()),
                _ => {
                    let known: Vec<&str> = STATUSES.iter().map(|(id, _, _)| *id).collect();
                    return Err(invalid(format!("`status` is one of {}, not {v}.", known.join(", "))));
                }
            },
            _ => match v.as_str() {
                Some(t) => Value::String(t.trim().to_owned()),
                None => return Err(invalid(format!("`{name}` must be a string, not {v}."))),
            },
        };
        out.push((name, value));
    }
    Ok(out)
}

// ---------------------------------------------------------------- dates

/// Seconds since 1970 of `YYYY-MM-DDTHH:MM:SS`, optional fraction, then
/// `Z`, `+HHMM` or `+HH:MM`: both forms the document uses. None when
/// malformed or when the day does not exist (`2023-11-31`).
fn timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.len() < 20 || s.get(10..11) != Some("T") {
        return None;
    }
    let date = data::ymd(s.get(..10)?)?;
    let time = data::hms(s.get(11..19)?)?;
    let mut rest = s.get(19..)?;
    if let Some(fraction) = rest.strip_prefix('.') {
        let n = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = fraction.get(n..)?;
    }
    let offset = match rest {
        "Z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let zone = rest.get(1..)?.replace(':', "");
            if zone.len() != 4 || !zone.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let hours: i64 = zone.get(..2)?.parse().ok()?;
            let minutes: i64 = zone.get(2..)?.parse().ok()?;
            sign * (hours * 3600 + minutes * 60)
        }
    };
    Some(date.and_time(time).and_utc().timestamp() - offset)
}

/// `2022-01-01T21:00:00+0000`, the form of the lead fields.
fn format_timestamp(t: i64) -> String {
    format!("{}+0000", data::format_unix(t).replace(' ', "T"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_and_impossible_days_are_rejected() {
        let t = timestamp("2023-02-22T08:05:35.569Z").expect("valid");
        assert_eq!(format_timestamp(t), "2023-02-22T08:05:35+0000");
        assert_eq!(
            timestamp("2022-01-01T21:00:00+0000"),
            timestamp("2022-01-02T00:00:00+03:00")
        );
        assert_eq!(timestamp("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            timestamp("2024-02-29T00:00:00Z").map(format_timestamp).as_deref(),
            Some("2024-02-29T00:00:00+0000")
        );
        assert_eq!(timestamp("2023-11-31T20:59:59.999Z"), None);
        assert_eq!(timestamp("2023-02-29T00:00:00Z"), None);
        assert_eq!(timestamp("2023-01-01"), None);
        assert_eq!(timestamp("2023-01-01T00:00:00"), None);
    }
}
