//! The solOS CRM simulator: the "Projects" section of a self-hosted
//! installation's `/backend/public` API.
//!
//! * Every request needs both `X-Crypto-Token` and `X-Crypto-Secret`, equal
//!   to the installation's; otherwise 401.
//! * `GET /projects`, `GET /projects/actions` (events) and
//!   `GET /projects/payments` page by `count`/`offset` in the query string,
//!   and `POST /projects/filter` by the same fields of its JSON body. No
//!   answer carries a total: a page shorter than `count` is the last.
//! * A project has built-in fields, dynamic fields (under `data`) and its
//!   own stages passed, events, checklists, goods and payments, all seeded.
//!   The API has no writes, so the data never changes.
//!
//! The document shows no answer and no error at all, so the shapes are this
//! simulator's choices (notes, section 6.3), kept in `Project::generate`
//! and `error`: lists are top-level JSON arrays, `/info` reads answer the
//! object itself, and errors are `{"error": {"code", "message"}}` with HTTP
//! 400, 401 or 404. The meaning of `filter_date` (the exact day), of
//! `buildin_data.price` (the exact price) and of `condition` (it combines
//! the `buildin_data` and `data` criteria; `deleted` and `having` always
//! apply) are choices too.
//!
//! Data: `records` active projects plus `records / 5` deleted ones; every
//! project with events has `records` of them, and likewise for payments.

use crate::data::{self, Rng};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

/// Where the API lives on the installation's host; every route is under it.
pub const BASE_PATH: &str = "/backend/public";

/// The installation's credentials.
const TOKEN: &str = "solos-sandbox-token-5c1f";
const SECRET: &str = "solos-sandbox-secret-9e2b";

/// The page size when a request gives no `count` (undocumented; the value
/// of every example).
const DEFAULT_COUNT: u64 = 100;

/// The simulated server's today, fixed so that answers do not depend on the
/// clock: a checklist not done by its deadline before this day is overdue.
const TODAY: &str = "2024-06-01";

/// The stages of both sales funnels.
const STAGES: &[&str] = &["Новый", "Квалификация", "Предложение", "Договор", "Оплата", "Завершён"];
/// Event types: ID and name.
const EVENT_TYPES: &[(u64, &str)] = &[
    (1, "Звонок"),
    (2, "Встреча"),
    (3, "Письмо"),
    (4, "Комментарий"),
    (5, "Задача выполнена"),
];
/// The goods catalogue: ID, name, price.
const GOODS: &[(u64, &str, u64)] = &[
    (10, "Монтаж", 5000),
    (11, "Консультация", 1500),
    (12, "Доставка", 700),
    (13, "Гарантия", 2500),
    (14, "Лицензия", 12000),
];
const CHECKLISTS: &[&str] = &["Подготовка договора", "Выезд замерщика", "Сдача работ"];
const CHECK_ITEMS: &[&str] = &["Согласовать сроки", "Проверить оплату", "Подписать акт"];
const COMMENTS: &[&str] = &[
    "Клиент перезвонит",
    "Отправлено КП",
    "Уточнить бюджет",
    "Без комментариев",
];

/// The values `having` takes.
const HAVING: &[&str] = &[
    "actions",
    "payments",
    "tasks",
    "goods",
    "no_actions",
    "no_payments",
    "no_tasks",
    "no_goods",
    "checklists_expired",
];
/// The dynamic fields of this installation (the keys of a project's `data`).
const DYNAMIC: &[&str] = &[
    "client_id",
    "client_name",
    "client_phone",
    "company",
    "contract_date",
    "neiros_site_id",
    "neiros_deal_id",
];

/// Read-only data: the API has no writes, so the store needs no lock.
type Shared = Arc<Store>;
type Params = HashMap<String, String>;
/// An answer: the JSON body of a 200, or a finished error response.
type Answer = Result<Value, Response>;

/// Builds the simulator and the config a connection needs against it.
pub fn build(opts: &crate::Options) -> (Router, Vec<(&'static str, String)>) {
    let mut r = Rng::new(opts.seed, "solos");
    let active = opts.records;
    let projects = (0..active + active / 5)
        .map(|i| Project::generate(&mut r, i, i >= active, opts.records))
        .collect();
    let api = Router::new()
        .route("/projects", get(list_projects))
        .route("/projects/filter", post(filter_projects))
        .route("/projects/info", get(get_project))
        .route("/projects/steps", get(list_steps))
        .route("/projects/actions", get(list_events))
        .route("/projects/actions/info", get(get_event))
        .route("/projects/checklists", get(list_checklists))
        .route("/projects/goods", get(list_goods))
        .route("/projects/payments", get(list_payments));
    let router = Router::new()
        .nest(BASE_PATH, api)
        .fallback(no_route)
        .with_state(Arc::new(Store { projects }));
    // The base URL is overridden with the simulator's, so the host is only
    // there because the descriptor requires it.
    let config = vec![
        ("crm_url", "127.0.0.1".to_owned()),
        ("crm_token", TOKEN.to_owned()),
        ("crm_secret", SECRET.to_owned()),
    ];
    (router, config)
}

struct Store {
    /// Ordered by ID.
    projects: Vec<Project>,
}

/// A project (a deal or job) and everything under it.
struct Project {
    /// Built-in fields and, under `data`, the dynamic ones: what
    /// `/projects` lists and `/projects/info` answers.
    json: Value,
    /// The stages the project has passed, the current one last.
    steps: Vec<Value>,
    events: Vec<Value>,
    checklists: Vec<Value>,
    goods: Vec<Value>,
    payments: Vec<Value>,
}

impl Project {
    /// Project number `i` (from 0). Every project with events has `per` of
    /// them (every fourth project has none), likewise payments (every third
    /// has none); child IDs are unique across projects.
    fn generate(r: &mut Rng, i: usize, deleted: bool, per: usize) -> Project {
        let id = i as u64 + 1;
        let per64 = per as u64;
        let funnel = 1 + r.below(2);
        let step = 1 + r.below(STAGES.len() as u64);
        let user = 1 + r.below(8);
        let currency = 1 + r.below(3);
        let mut participants: Vec<u64> = (0..1 + r.below(3)).map(|_| 1 + r.below(8)).collect();
        participants.sort_unstable();
        participants.dedup();
        let mut groups: Vec<u64> = (0..1 + r.below(2)).map(|_| 1 + r.below(3)).collect();
        groups.sort_unstable();
        groups.dedup();
        let start = i * 7;
        // The agency keeps the project's deal in Neiros in two dynamic
        // fields; each names a deal the Neiros simulator (same records
        // count) really has: the first deal of site `k`.
        let k = (i % per.max(1)) as u64;
        let json = json!({
            "id": id,
            "name": format!("Проект №{id}: {}", data::company(r)),
            "created": data::datetime(start),
            "deleted": if deleted { "1" } else { "0" },
            "sales_funnel_id": funnel,
            "step_id": step,
            "user_id": user,
            "group_id": 1 + r.below(3),
            "price": (1 + r.below(40)) * 2500,
            "currency_id": currency,
            "participants_user_id": participants,
            "participants_group_id": groups,
            "tasks_count": r.below(3),
            "data": {
                "client_id": 1 + r.below(10),
                "client_name": data::name(r),
                // A third of the clients called through EyeNewton first.
                "client_phone": data::client_phone(3 * i),
                "company": data::company(r),
                "contract_date": data::date(start + 3),
                "neiros_site_id": crate::neiros::FIRST_SITE_ID + k,
                "neiros_deal_id": crate::neiros::FIRST_DEAL_ID + k * per64,
            },
        });
        let steps = (1..=step)
            .map(|s| {
                json!({
                    "id": (id - 1) * STAGES.len() as u64 + s,
                    "project_id": id,
                    "step_id": s,
                    "name": STAGES[(s - 1) as usize],
                    "sales_funnel_id": funnel,
                    "date": data::datetime(start + s as usize),
                    "user_id": user,
                })
            })
            .collect();
        let events = if id % 4 == 0 { 0 } else { per };
        let events = (0..events)
            .map(|k| {
                let (type_id, type_name) = EVENT_TYPES[r.below(EVENT_TYPES.len() as u64) as usize];
                json!({
                    "id": (id - 1) * per64 + k as u64 + 1,
                    "project_id": id,
                    "type_id": type_id,
                    "type": type_name,
                    "date": data::datetime(start + k),
                    "user_id": 1 + r.below(8),
                    "comment": r.pick(COMMENTS),
                })
            })
            .collect();
        let checklists = (0..r.below(3))
            .map(|k| {
                let items: Vec<Value> = CHECK_ITEMS
                    .iter()
                    .map(|name| json!({"name": name, "done": if r.below(2) == 0 { "0" } else { "1" }}))
                    .collect();
                json!({
                    "id": (id - 1) * 3 + k + 1,
                    "project_id": id,
                    "name": CHECKLISTS[k as usize % CHECKLISTS.len()],
                    // Spread over January to August, around TODAY.
                    "deadline": data::date(r.below(3000) as usize),
                    "done": if r.below(3) == 0 { "1" } else { "0" },
                    "items": items,
                })
            })
            .collect();
        let first_good = r.below(GOODS.len() as u64) as usize;
        let goods = (0..r.below(4) as usize)
            .map(|k| {
                let (good_id, name, price) = GOODS[(first_good + k) % GOODS.len()];
                let count = 1 + r.below(3);
                json!({
                    "id": (id - 1) * 4 + k as u64 + 1,
                    "project_id": id,
                    "good_id": good_id,
                    "name": name,
                    "count": count,
                    "price": price,
                    "sum": count * price,
                })
            })
            .collect();
        let payments = if id % 3 == 0 { 0 } else { per };
        let payments = (0..payments)
            .map(|k| {
                json!({
                    "id": (id - 1) * per64 + k as u64 + 1,
                    "project_id": id,
                    // "1" a receipt (credit), "0" a write-off (debit).
                    "type": if r.below(4) == 0 { "0" } else { "1" },
                    "sum": (1 + r.below(20)) * 500,
                    "currency_id": currency,
                    "date": data::date(start + k * 3),
                    "comment": r.pick(COMMENTS),
                })
            })
            .collect();
        Project {
            json,
            steps,
            events,
            checklists,
            goods,
            payments,
        }
    }

    fn id(&self) -> u64 {
        self.json["id"].as_u64().unwrap_or(0)
    }

    fn deleted(&self) -> bool {
        self.json["deleted"] == "1"
    }

    /// Whether a `having` condition holds.
    fn has(&self, having: &str) -> bool {
        let tasks = self.json["tasks_count"].as_u64().unwrap_or(0) > 0;
        match having {
            "actions" => !self.events.is_empty(),
            "no_actions" => self.events.is_empty(),
            "payments" => !self.payments.is_empty(),
            "no_payments" => self.payments.is_empty(),
            "tasks" => tasks,
            "no_tasks" => !tasks,
            "goods" => !self.goods.is_empty(),
            "no_goods" => self.goods.is_empty(),
            "checklists_expired" => self.checklists.iter().any(overdue),
            _ => false,
        }
    }
}

/// A checklist not done whose deadline has passed.
fn overdue(checklist: &Value) -> bool {
    checklist["done"] == "0" && checklist["deadline"].as_str().is_some_and(|d| d < TODAY)
}

// ---------------------------------------------------------------- handlers

async fn list_projects(State(st): State<Shared>, headers: HeaderMap, Query(q): Query<Params>) -> Response {
    reply(list_projects_with(&st, &headers, &q))
}

fn list_projects_with(st: &Store, headers: &HeaderMap, q: &Params) -> Answer {
    authorize(headers)?;
    let (count, offset) = window(q)?;
    let reverse = flag(q, "reverse")?.unwrap_or(false);
    // Without `deleted`, the active projects.
    let deleted = flag(q, "deleted")?.unwrap_or(false);
    let mut found: Vec<&Project> = st.projects.iter().filter(|p| p.deleted() == deleted).collect();
    sort(&mut found, q.get("order_by").map(String::as_str), reverse)?;
    Ok(page(found.iter().map(|p| p.json.clone()), offset, count))
}

async fn filter_projects(State(st): State<Shared>, headers: HeaderMap, body: String) -> Response {
    reply(filter_projects_with(&st, &headers, &body))
}

fn filter_projects_with(st: &Store, headers: &HeaderMap, body: &str) -> Answer {
    authorize(headers)?;
    let input = match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(m)) => m,
        _ => return Err(bad("The body must be a JSON object.".into())),
    };
    let count = body_whole(&input, "count")?.unwrap_or(DEFAULT_COUNT);
    let offset = body_whole(&input, "offset")?.unwrap_or(0);
    let order_by = body_text(&input, "order_by")?;
    let reverse = body_flag(&input, "reverse")?.unwrap_or(false);
    let deleted = body_flag(&input, "deleted")?.unwrap_or(false);
    let any = match body_text(&input, "condition")? {
        None | Some("and") => false,
        Some("or") => true,
        Some(other) => return Err(bad(format!("`condition` is \"and\" or \"or\", not `{other}`."))),
    };
    let having = match body_text(&input, "having")? {
        Some(h) if !HAVING.contains(&h) => {
            return Err(bad(format!("`having` is one of {}, not `{h}`.", HAVING.join(", "))))
        }
        h => h,
    };
    let mut criteria = Vec::new();
    for (key, value) in body_object(&input, "buildin_data")?.into_iter().flatten() {
        criteria.push(Criterion::built_in(key, value)?);
    }
    for (key, value) in body_object(&input, "data")?.into_iter().flatten() {
        criteria.push(Criterion::dynamic(key, value)?);
    }
    let matches = |p: &Project| {
        criteria.is_empty()
            || if any {
                criteria.iter().any(|c| c.holds(p))
            } else {
                criteria.iter().all(|c| c.holds(p))
            }
    };
    let mut found: Vec<&Project> = st
        .projects
        .iter()
        .filter(|p| p.deleted() == deleted && having.is_none_or(|h| p.has(h)) && matches(p))
        .collect();
    sort(&mut found, order_by, reverse)?;
    Ok(page(found.iter().map(|p| p.json.clone()), offset, count))
}

async fn get_project(State(st): State<Shared>, headers: HeaderMap, Query(q): Query<Params>) -> Response {
    reply(
        authorize(&headers)
            .and_then(|()| project(&st, &q))
            .map(|p| p.json.clone()),
    )
}

async fn list_steps(State(st): State<Shared>, headers: HeaderMap, Query(q): Query<Params>) -> Response {
    reply(list_steps_with(&st, &headers, &q))
}

fn list_steps_with(st: &Store, headers: &HeaderMap, q: &Params) -> Answer {
    authorize(headers)?;
    let p = project(st, q)?;
    let day = sql_date(q, "filter_date")?;
    let steps = id_list(q, "filter_steps")?;
    let found = p
        .steps
        .iter()
        .filter(|s| on_day(s, day) && in_list(&s["step_id"], steps.as_deref()));
    Ok(Value::Array(found.cloned().collect()))
}

async fn list_events(State(st): State<Shared>, headers: HeaderMap, Query(q): Query<Params>) -> Response {
    reply(list_events_with(&st, &headers, &q))
}

fn list_events_with(st: &Store, headers: &HeaderMap, q: &Params) -> Answer {
    authorize(headers)?;
    let p = project(st, q)?;
    let (count, offset) = window(q)?;
    let only = whole(q, "filter_id")?;
    let day = sql_date(q, "filter_date")?;
    let types = id_list(q, "filter_actions")?;
    let found = p.events.iter().filter(|e| {
        only.is_none_or(|id| e["id"].as_u64() == Some(id)) && on_day(e, day) && in_list(&e["type_id"], types.as_deref())
    });
    Ok(page(found.cloned(), offset, count))
}

async fn get_event(State(st): State<Shared>, headers: HeaderMap, Query(q): Query<Params>) -> Response {
    reply(get_event_with(&st, &headers, &q))
}

fn get_event_with(st: &Store, headers: &HeaderMap, q: &Params) -> Answer {
    authorize(headers)?;
    // The ID of the event, not of its project.
    let id = whole(q, "id")?.ok_or_else(|| bad("`id` is required.".into()))?;
    st.projects
        .iter()
        .flat_map(|p| p.events.iter())
        .find(|e| e["id"].as_u64() == Some(id))
        .cloned()
        .ok_or_else(|| error(StatusCode::NOT_FOUND, &format!("Event {id} not found.")))
}

async fn list_checklists(State(st): State<Shared>, headers: HeaderMap, Query(q): Query<Params>) -> Response {
    reply(
        authorize(&headers)
            .and_then(|()| project(&st, &q))
            .map(|p| Value::Array(p.checklists.clone())),
    )
}

async fn list_goods(State(st): State<Shared>, headers: HeaderMap, Query(q): Query<Params>) -> Response {
    reply(
        authorize(&headers)
            .and_then(|()| project(&st, &q))
            .map(|p| Value::Array(p.goods.clone())),
    )
}

async fn list_payments(State(st): State<Shared>, headers: HeaderMap, Query(q): Query<Params>) -> Response {
    reply(list_payments_with(&st, &headers, &q))
}

fn list_payments_with(st: &Store, headers: &HeaderMap, q: &Params) -> Answer {
    authorize(headers)?;
    let p = project(st, q)?;
    let (count, offset) = window(q)?;
    let only = whole(q, "filter_id")?;
    let day = sql_date(q, "filter_date")?;
    let kind = match q.get("filter_type").map(|t| t.trim()) {
        None | Some("") => None,
        Some(t @ ("0" | "1")) => Some(t),
        Some(t) => {
            return Err(bad(format!(
                "`filter_type` is \"0\" (debit) or \"1\" (credit), not `{t}`."
            )))
        }
    };
    let found = p.payments.iter().filter(|e| {
        only.is_none_or(|id| e["id"].as_u64() == Some(id))
            && on_day(e, day)
            && kind.is_none_or(|k| e["type"].as_str() == Some(k))
    });
    Ok(page(found.cloned(), offset, count))
}

async fn no_route(uri: Uri) -> Response {
    error(StatusCode::NOT_FOUND, &format!("No route {}.", uri.path()))
}

// ---------------------------------------------------------------- filters

/// One criterion of `POST /projects/filter`.
enum Criterion {
    /// `created`: the creation day within `from;to` (either side may be empty).
    Created(Option<String>, Option<String>),
    /// A built-in ID field, or list of IDs, that must hold one of these.
    Ids(String, Vec<u64>),
    /// `price`: the exact price.
    Price(u64),
    /// `actions_type_id`: an event of one of these types.
    EventTypes(Vec<u64>),
    /// `good_id`: one of these goods.
    Goods(Vec<u64>),
    /// A dynamic field equal to one of these values.
    Dynamic(String, Vec<Value>),
}

impl Criterion {
    fn built_in(key: &str, value: &Value) -> Result<Criterion, Response> {
        Ok(match key {
            "created" => {
                let range = value.as_str().and_then(|v| v.split_once(';'));
                let Some((from, to)) = range else {
                    return Err(bad(
                        "`buildin_data.created` is a range, \"YYYY-MM-DD;YYYY-MM-DD\".".into()
                    ));
                };
                let day = |d: &str| -> Result<Option<String>, Response> {
                    match d.trim() {
                        "" => Ok(None),
                        d if data::ymd(d).is_some() => Ok(Some(d.to_owned())),
                        d => Err(bad(format!(
                            "`buildin_data.created` has `{d}`, which is not a date (YYYY-MM-DD)."
                        ))),
                    }
                };
                Criterion::Created(day(from)?, day(to)?)
            }
            "sales_funnel_id"
            | "step_id"
            | "user_id"
            | "group_id"
            | "currency_id"
            | "participants_user_id"
            | "participants_group_id" => Criterion::Ids(key.to_owned(), ids(key, value)?),
            "price" => Criterion::Price(
                number(value).ok_or_else(|| bad("`buildin_data.price` must be a whole number.".into()))?,
            ),
            "actions_type_id" => Criterion::EventTypes(ids(key, value)?),
            "good_id" => Criterion::Goods(ids(key, value)?),
            _ => return Err(bad(format!("`buildin_data` has no field `{key}`."))),
        })
    }

    fn dynamic(key: &str, value: &Value) -> Result<Criterion, Response> {
        if !DYNAMIC.contains(&key) {
            return Err(bad(format!(
                "`data` has no field `{key}`; this CRM's fields are {}.",
                DYNAMIC.join(", ")
            )));
        }
        let values = match value {
            Value::Array(list) => list.clone(),
            one => vec![one.clone()],
        };
        Ok(Criterion::Dynamic(key.to_owned(), values))
    }

    fn holds(&self, p: &Project) -> bool {
        match self {
            Criterion::Created(from, to) => {
                let day = p.json["created"].as_str().and_then(|c| c.get(..10)).unwrap_or("");
                from.as_deref().is_none_or(|f| day >= f) && to.as_deref().is_none_or(|t| day <= t)
            }
            Criterion::Ids(field, wanted) => match &p.json[field.as_str()] {
                Value::Array(have) => have.iter().any(|v| in_list(v, Some(wanted.as_slice()))),
                one => in_list(one, Some(wanted.as_slice())),
            },
            Criterion::Price(price) => p.json["price"].as_u64() == Some(*price),
            Criterion::EventTypes(types) => p.events.iter().any(|e| in_list(&e["type_id"], Some(types.as_slice()))),
            Criterion::Goods(goods) => p.goods.iter().any(|g| in_list(&g["good_id"], Some(goods.as_slice()))),
            Criterion::Dynamic(field, values) => values.iter().any(|v| same(&p.json["data"][field.as_str()], v)),
        }
    }
}

/// A list of IDs, or a single ID.
fn ids(key: &str, value: &Value) -> Result<Vec<u64>, Response> {
    let list = match value {
        Value::Array(items) => items.iter().map(number).collect::<Option<Vec<u64>>>(),
        one => number(one).map(|n| vec![n]),
    };
    list.ok_or_else(|| bad(format!("`buildin_data.{key}` must be a list of IDs.")))
}

/// Equal as JSON, or as text when one side is text (`"3"` matches `3`).
fn same(a: &Value, b: &Value) -> bool {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    a == b || text(a).is_some_and(|x| text(b).is_some_and(|y| x == y))
}

fn in_list(v: &Value, list: Option<&[u64]>) -> bool {
    list.is_none_or(|l| v.as_u64().is_some_and(|n| l.contains(&n)))
}

/// Whether a record's `date` falls on a day (any time of it).
fn on_day(v: &Value, day: Option<&str>) -> bool {
    day.is_none_or(|d| v["date"].as_str().is_some_and(|x| x.get(..10) == Some(d)))
}

/// Sorts projects by a field; ties, and no field, by ID. The document
/// names no list of fields: any field of a project sorts, a dynamic one as
/// `data.<name>`; a name no project has is refused, as a database refuses
/// an unknown column.
fn sort(found: &mut [&Project], order_by: Option<&str>, reverse: bool) -> Result<(), Response> {
    let field = order_by.map(str::trim).filter(|f| !f.is_empty()).unwrap_or("id");
    let pointer = format!("/{}", field.replace('.', "/"));
    if !found.is_empty() && !found.iter().any(|p| p.json.pointer(&pointer).is_some()) {
        return Err(bad(format!("`order_by` names no field of a project: `{field}`.")));
    }
    static NULL: Value = Value::Null;
    fn at<'a>(p: &'a Project, pointer: &str) -> &'a Value {
        p.json.pointer(pointer).unwrap_or(&NULL)
    }
    found.sort_by(|a, b| {
        let order = compare(at(a, &pointer), at(b, &pointer)).then_with(|| a.id().cmp(&b.id()));
        if reverse {
            order.reverse()
        } else {
            order
        }
    });
    Ok(())
}

/// Numbers as numbers, anything else as text.
fn compare(a: &Value, b: &Value) -> Ordering {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        _ => a.as_str().unwrap_or("").cmp(b.as_str().unwrap_or("")),
    }
}

/// One page of a list: `count` items from `offset`.
fn page(items: impl Iterator<Item = Value>, offset: u64, count: u64) -> Value {
    let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    Value::Array(items.skip(size(offset)).take(size(count)).collect())
}

// ---------------------------------------------------------------- answers

fn reply(answer: Answer) -> Response {
    match answer {
        Ok(body) => Json(body).into_response(),
        Err(response) => response,
    }
}

/// The error body (the simulator's choice; the document shows none).
fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": status.as_u16(), "message": message}})),
    )
        .into_response()
}

fn bad(message: String) -> Response {
    error(StatusCode::BAD_REQUEST, &message)
}

/// Both crypto headers, equal to the installation's.
fn authorize(headers: &HeaderMap) -> Result<(), Response> {
    let given = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match (given("x-crypto-token"), given("x-crypto-secret")) {
        (Some(token), Some(secret)) if token == TOKEN && secret == SECRET => Ok(()),
        (Some(_), Some(_)) => Err(error(
            StatusCode::UNAUTHORIZED,
            "Invalid X-Crypto-Token or X-Crypto-Secret.",
        )),
        _ => Err(error(
            StatusCode::UNAUTHORIZED,
            "The X-Crypto-Token and X-Crypto-Secret headers are required.",
        )),
    }
}

// ---------------------------------------------------------------- input

/// The project named by `id` (deleted ones included).
fn project<'a>(st: &'a Store, q: &Params) -> Result<&'a Project, Response> {
    let id = whole(q, "id")?.ok_or_else(|| bad("`id` is required.".into()))?;
    st.projects
        .iter()
        .find(|p| p.id() == id)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, &format!("Project {id} not found.")))
}

/// `count` and `offset` of the query string.
fn window(q: &Params) -> Result<(u64, u64), Response> {
    Ok((
        whole(q, "count")?.unwrap_or(DEFAULT_COUNT),
        whole(q, "offset")?.unwrap_or(0),
    ))
}

/// An optional whole number of the query string (`uint` in the document).
fn whole(q: &Params, name: &str) -> Result<Option<u64>, Response> {
    match q.get(name).map(|v| v.trim()) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse::<u64>()
            .map(Some)
            .map_err(|_| bad(format!("`{name}` must be a whole number, not `{v}`."))),
    }
}

/// An optional `"0"`/`"1"` of the query string.
fn flag(q: &Params, name: &str) -> Result<Option<bool>, Response> {
    match q.get(name).map(|v| v.trim()) {
        None | Some("") => Ok(None),
        Some("0") => Ok(Some(false)),
        Some("1") => Ok(Some(true)),
        Some(v) => Err(bad(format!("`{name}` is \"0\" or \"1\", not `{v}`."))),
    }
}

/// An optional SQL DATE (`YYYY-MM-DD`) of the query string.
fn sql_date<'a>(q: &'a Params, name: &str) -> Result<Option<&'a str>, Response> {
    match q.get(name).map(|v| v.trim()) {
        None | Some("") => Ok(None),
        Some(v) if data::ymd(v).is_some() => Ok(Some(v)),
        Some(v) => Err(bad(format!("`{name}` must be a date, YYYY-MM-DD, not `{v}`."))),
    }
}

/// Optional IDs separated by underscores (`1_2_3`) of the query string.
fn id_list(q: &Params, name: &str) -> Result<Option<Vec<u64>>, Response> {
    match q.get(name).map(|v| v.trim()) {
        None | Some("") => Ok(None),
        Some(v) => v
            .split('_')
            .map(|id| id.parse::<u64>().ok())
            .collect::<Option<Vec<u64>>>()
            .map(Some)
            .ok_or_else(|| {
                bad(format!(
                    "`{name}` must be IDs separated by underscores (1_2_3), not `{v}`."
                ))
            }),
    }
}

/// A whole number written as a JSON number or as text: the document's
/// filter example writes `count` as a number and `reverse` as text, and
/// accepting both costs nothing.
fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// An optional whole number of the filter body.
fn body_whole(input: &Map<String, Value>, name: &str) -> Result<Option<u64>, Response> {
    match input.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => number(v)
            .map(Some)
            .ok_or_else(|| bad(format!("`{name}` must be a whole number."))),
    }
}

/// An optional `"0"`/`"1"` (or 0/1) of the filter body.
fn body_flag(input: &Map<String, Value>, name: &str) -> Result<Option<bool>, Response> {
    match input.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match number(v) {
            Some(0) => Ok(Some(false)),
            Some(1) => Ok(Some(true)),
            _ => Err(bad(format!("`{name}` is \"0\" or \"1\"."))),
        },
    }
}

/// An optional text of the filter body.
fn body_text<'a>(input: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, Response> {
    match input.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(bad(format!("`{name}` must be text."))),
    }
}

/// An optional object of the filter body.
fn body_object<'a>(input: &'a Map<String, Value>, name: &str) -> Result<Option<&'a Map<String, Value>>, Response> {
    match input.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(bad(format!("`{name}` must be an object."))),
    }
}
