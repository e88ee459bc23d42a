//! The EyeNewton simulator: one RPC URL, `POST /json` (the descriptor's
//! envelope path under the base URL), taking
//! `{"action": "...", "params": {"token": "...", "userId": "...", ...}}`.
//!
//! Every answer is HTTP 200, as the real API's are: the payload for reads,
//! `{"result": "ok"}` for writes, `{"errors": {field: message}}` when a
//! parameter is rejected, and `{"error": "..."}` for everything else (wrong
//! credentials, an unknown action, no call found). Answers are labelled
//! `text/html; charset=UTF-8`, as the real server labels its JSON, and the
//! request body is read as JSON whatever its Content-Type says.
//!
//! Strict where the document lets it be: the token and user ID must match,
//! phones are `+7` and ten digits, dates `YYYY-MM-DD` or
//! `YYYY-MM-DD HH:MM:SS`, the fields the descriptor marks required must be
//! there, and a parameter the action does not take is refused (that catches
//! a descriptor typo such as `referrer` for `referer`). IDs and numbers are
//! accepted as JSON strings, as documented, or as whole JSON numbers.
//!
//! Writes change the data set: a callback request or an application becomes
//! a call record (`type` `callback` or `application`), a lead price shows in
//! its record's `leadPrice`, and CRM deals are kept (no read shows them).
//!
//! Messages the document quotes are used verbatim; every other message, and
//! the `requestStatus`/`callStatus` words other than `success` and
//! `CLIENT_ANSWER`, are this simulator's invention.

use crate::data::{self, md5_hex, Rng};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Map, Value};
use std::sync::{Arc, Mutex};

/// The envelope path: the descriptor's base URL ends in `/api/v1`, and
/// `Simulator::base_url` adds no suffix for EyeNewton, so the URL the engine
/// posts to is `<simulator>/json`.
const ENVELOPE_PATH: &str = "/json";

/// The path of the document's base URL (`http://eyenewton.ru/api/v1`):
/// requests elsewhere are not found, as on the real server.
pub const BASE_PATH: &str = "/api/v1";

/// Quoted from the document.
const BAD_PHONE: &str = "Номер введен неверно";
/// Quoted from the document.
const BAD_PRICE: &str = "Invalid price value";
/// Quoted from the document.
const NO_CALL_FOR_PHONE: &str = "По номеру не нашлся звонок";

// Invented messages.
const REQUIRED: &str = "Обязательное поле";
const NOT_A_STRING: &str = "Ожидается строка";
const UNKNOWN_PARAM: &str = "Неизвестный параметр";
const BAD_DATE: &str = "Неверный формат даты: ожидается YYYY-MM-DD или YYYY-MM-DD HH:MM:SS (UTC)";
const BAD_FLAG: &str = "Допустимые значения: \"0\" или \"1\"";
const NO_WIDGET: &str = "Виджет не найден";

/// The fields of a call record, in the document's order.
const RECORD_KEYS: &[&str] = &[
    "id",
    "widgetId",
    "departmentId",
    "requestDate",
    "requestStatus",
    "callStatus",
    "callDate",
    "callDurationOperator",
    "callDurationClient",
    "delayDate",
    "conversationFile",
    "callAttempt",
    "callSequenceNumber",
    "clientPhone",
    "callbackPhone",
    "referrerHost",
    "referrerPath",
    "landingReferrerType",
    "landingReferrer",
    "landingUrl",
    "landingSearchPhrase",
    "landingUtmSource",
    "landingUtmMedium",
    "landingUtmTerm",
    "landingUtmContent",
    "landingUtmCampaign",
    "landingOpenstatService",
    "landingOpenstatCampaign",
    "landingOpenstatAd",
    "landingOpenstatSource",
    "userAgent",
    "userAgentBrowser",
    "userAgentOs",
    "userAgentDevice",
    "userAgentDeviceType",
    "ip",
    "ipCountry",
    "ipCity",
    "comment",
    "leadPrice",
    "type",
];

/// The simulator and the config a connection needs against it.
pub fn build(opts: &crate::Options) -> (Router, Vec<(&'static str, String)>) {
    let mut rng = Rng::new(opts.seed, "eyenewton");
    let db = Db::seeded(&mut rng, opts.records);
    let config = vec![("token", db.token.clone()), ("user_id", db.user_id.clone())];
    let api = Router::new().route(ENVELOPE_PATH, post(rpc));
    let router = Router::new().nest(BASE_PATH, api).with_state(Arc::new(Mutex::new(db)));
    (router, config)
}

type Shared = Arc<Mutex<Db>>;

/// An answer body; `Err` holds an `error` or `errors` body.
type Answer = Result<Value, Value>;

async fn rpc(State(db): State<Shared>, body: String) -> Response {
    let reply = match serde_json::from_str::<Value>(&body) {
        Ok(envelope) => {
            let mut db = db.lock().unwrap_or_else(|p| p.into_inner());
            db.handle(&envelope).unwrap_or_else(|e| e)
        }
        Err(_) => error("Тело запроса не является JSON (the body is not JSON)"),
    };
    ([(header::CONTENT_TYPE, "text/html; charset=UTF-8")], reply.to_string()).into_response()
}

fn error(message: &str) -> Value {
    json!({ "error": message })
}

fn ok() -> Value {
    json!({ "result": "ok" })
}

/// One callback widget.
struct Widget {
    id: String,
    name: String,
    /// The widget's single department, `(id, name)`.
    department: (String, String),
    /// Call distribution is on: requests must name the department. Odd
    /// widgets (the second, the fourth, ...) have it on.
    distribution: bool,
    /// The site the widget is installed on.
    host: String,
}

impl Widget {
    fn json(&self) -> Value {
        // `departments` is one object, as in the document's sample.
        json!({
            "id": self.id,
            "name": self.name,
            "departments": { "id": self.department.0, "name": self.department.1 },
        })
    }
}

/// A call record: the documented fields, and when the call ended (not a
/// field, but the `callEndDate` filters need it).
struct CallRecord {
    fields: Map<String, Value>,
    end: Option<String>,
}

impl CallRecord {
    fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).and_then(Value::as_str)
    }
}

/// One chat conversation.
struct Chat {
    widget: String,
    start: String,
    body: Value,
}

/// A deal made from a call by `callback.CreateCrmLead`.
#[allow(dead_code)] // Kept as the real service keeps it; no read shows it.
struct CrmLead {
    record_id: String,
    price: String,
    date: String,
}

struct Db {
    token: String,
    user_id: String,
    widgets: Vec<Widget>,
    records: Vec<CallRecord>,
    chats: Vec<Chat>,
    crm_leads: Vec<CrmLead>,
    next_record: u64,
}

/// `data::datetime`'s calendar (28-day months of 2024) at a second offset,
/// so that call dates line up with request dates: `stamp(i * 97 * 60)` is
/// `data::datetime(i)`.
fn stamp(secs: u64) -> String {
    let minutes = secs / 60;
    let day = 1 + (minutes / 1440) % 28;
    let month = 1 + (minutes / (1440 * 28)) % 12;
    format!(
        "2024-{month:02}-{day:02} {:02}:{:02}:{:02}",
        (minutes / 60) % 24,
        minutes % 60,
        secs % 60
    )
}

const HOSTS: &[&str] = &["okna", "dveri", "remont", "mebel", "avto", "kuhni", "stroy", "potolki"];
const CITIES: &[&str] = &[
    "Москва",
    "Санкт-Петербург",
    "Гатчина",
    "Казань",
    "Новосибирск",
    "Екатеринбург",
];
const AGENTS: &[(&str, &str, &str, &str)] = &[
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:126.0) Gecko/20100101 Firefox/126.0",
        "Firefox 126.0",
        "Windows 10",
        "0",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0 Safari/537.36",
        "Chrome 125.0",
        "Windows 10",
        "0",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
        "Mobile Safari 17.5",
        "iOS 17.5",
        "1",
    ),
];
const OPERATOR_LINES: &[&str] = &[
    "Здравствуйте! Чем могу помочь?",
    "Уточните, пожалуйста, ваш номер телефона.",
    "Менеджер перезвонит вам в течение 10 минут.",
    "Спасибо за обращение!",
];
const CLIENT_LINES: &[&str] = &[
    "Здравствуйте, сколько стоит доставка?",
    "Есть ли товар в наличии?",
    "Можно заказать на завтра?",
    "Спасибо, жду звонка.",
];

fn blank_record() -> Map<String, Value> {
    RECORD_KEYS.iter().map(|k| ((*k).to_owned(), Value::Null)).collect()
}

impl Db {
    fn seeded(rng: &mut Rng, n: usize) -> Db {
        let token = md5_hex(format!("eyenewton-token:{}", rng.next_u64()).as_bytes());
        let user_id = (1000 + rng.below(9000)).to_string();
        let widgets: Vec<Widget> = (0..n)
            .map(|i| Widget {
                id: md5_hex(format!("eyenewton-widget:{}:{i}", rng.next_u64()).as_bytes()),
                name: format!("Виджет {}", data::company(rng)),
                department: (
                    (10_000 + i).to_string(),
                    rng.pick(&["Отдел продаж", "Сервис", "Доставка"]).to_owned(),
                ),
                distribution: i % 2 == 1,
                host: format!("www.{}-{}.ru", rng.pick(HOSTS), i + 1),
            })
            .collect();
        let mut db = Db {
            token,
            user_id,
            widgets,
            records: Vec::new(),
            chats: Vec::new(),
            crm_leads: Vec::new(),
            next_record: 117_000,
        };
        if db.widgets.is_empty() {
            return db;
        }
        for i in 0..n {
            let record = db.seeded_record(rng, i);
            db.records.push(record);
        }
        for i in 0..n {
            let chat = db.seeded_chat(rng, i);
            db.chats.push(chat);
        }
        db
    }

    fn seeded_record(&mut self, rng: &mut Rng, i: usize) -> CallRecord {
        self.next_record += 1;
        let w = &self.widgets[i % self.widgets.len()];
        let requested = i as u64 * 97 * 60;
        // Nine requests in ten reach the PBX; three answered calls in five.
        let sent = rng.below(10) != 0;
        let outcome = if sent {
            Some(rng.pick(&[
                "CLIENT_ANSWER",
                "CLIENT_ANSWER",
                "CLIENT_ANSWER",
                "CLIENT_NO_ANSWER",
                "OPERATOR_NO_ANSWER",
            ]))
        } else {
            None
        };
        let answered = outcome == Some("CLIENT_ANSWER");
        let operator_secs = match (sent, answered) {
            (true, true) => 40 + rng.below(260),
            (true, false) => 20 + rng.below(20),
            _ => 0,
        };
        let call_date = sent.then(|| stamp(requested + 2));
        let end = sent.then(|| stamp(requested + 2 + operator_secs));
        let id = self.next_record.to_string();
        let (utm_source, utm_medium, utm_campaign, phrase, kind, referrer) = match rng.below(4) {
            0 => (
                None,
                None,
                None,
                "заказать онлайн",
                "yandex.search",
                Some("https://yandex.ru/search/"),
            ),
            1 => (None, None, None, "", "google.search", Some("https://www.google.com/")),
            2 => (
                Some("yandex"),
                Some("cpc"),
                Some("brand"),
                "",
                "yandex.direct",
                Some("https://yandex.ru/"),
            ),
            _ => (None, None, None, "", "direct", None),
        };
        let page = rng.pick(&["", "catalog", "price", "contacts"]);
        let (agent, browser, os, device) = AGENTS[rng.below(AGENTS.len() as u64) as usize];
        let lead_price = (answered && rng.below(4) == 0).then(|| (1000 + rng.below(9000)).to_string());
        let mut f = blank_record();
        let mut set = |k: &str, v: Value| {
            f.insert(k.to_owned(), v);
        };
        set("id", json!(id));
        set("widgetId", json!(w.id));
        set("departmentId", json!(w.department.0));
        set("requestDate", json!(stamp(requested)));
        set("requestStatus", json!(if sent { "success" } else { "error" }));
        set("callStatus", json!(outcome));
        set("callDate", json!(call_date));
        set("callDurationOperator", json!(operator_secs.to_string()));
        // The client hears the call from the moment they pick up.
        let client_secs = if answered { operator_secs - 15 } else { 0 };
        set("callDurationClient", json!(client_secs.to_string()));
        set(
            "conversationFile",
            json!(answered.then(|| format!(
                "https://newton-callback.s3-eu-west-1.amazonaws.com/2024/{}/{id}.mp3",
                call_date
                    .as_deref()
                    .map(|d| d[5..10].replace('-', "/"))
                    .unwrap_or_default()
            ))),
        );
        set("callAttempt", json!("1"));
        set("callSequenceNumber", json!("0"));
        set("clientPhone", json!(data::client_phone(i)));
        set("callbackPhone", json!(data::phone(rng)));
        set("referrerHost", json!(w.host));
        set("referrerPath", json!(format!("http://{}/{page}", w.host)));
        set("landingReferrerType", json!(kind));
        set("landingReferrer", json!(referrer));
        set("landingUrl", json!(format!("http://{}/", w.host)));
        set("landingSearchPhrase", json!(phrase));
        set("landingUtmSource", json!(utm_source));
        set("landingUtmMedium", json!(utm_medium));
        set("landingUtmCampaign", json!(utm_campaign));
        set("userAgent", json!(agent));
        set("userAgentBrowser", json!(browser));
        set("userAgentOs", json!(os));
        set("userAgentDeviceType", json!(device));
        set("ip", json!(data::ip(rng)));
        set("ipCountry", json!("RU"));
        set("ipCity", json!(rng.pick(CITIES)));
        set("leadPrice", json!(lead_price));
        set("type", json!("callback"));
        CallRecord { fields: f, end }
    }

    fn seeded_chat(&self, rng: &mut Rng, i: usize) -> Chat {
        let w = &self.widgets[i % self.widgets.len()];
        let start_secs = i as u64 * 131 * 60 + 7;
        let count = 2 + rng.below(4);
        let messages: Vec<Value> = (0..count)
            .map(|m| {
                // `from` is true for the client; the operator speaks first.
                let client = m % 2 == 1;
                let text = if client {
                    rng.pick(CLIENT_LINES)
                } else {
                    rng.pick(OPERATOR_LINES)
                };
                json!({ "from": client, "text": text, "time": stamp(start_secs + m * 20) })
            })
            .collect();
        let client_id = format!(
            "2|{}|{}|{}|{}",
            1_000_000_000 + rng.below(9_000_000_000),
            md5_hex(&rng.next_u64().to_le_bytes())[..5].to_owned(),
            10_000_000 + rng.below(90_000_000),
            md5_hex(&rng.next_u64().to_le_bytes())[..6].to_owned(),
        );
        let start = stamp(start_secs);
        let body = json!({
            "startTime": start,
            "clientId": client_id,
            "operator": format!("Оператор {}", 1 + rng.below(5)),
            "ip": data::ip(rng),
            "messages": messages,
        });
        Chat {
            widget: w.id.clone(),
            start,
            body,
        }
    }

    /// Answers one envelope.
    fn handle(&mut self, envelope: &Value) -> Answer {
        let action = envelope
            .get("action")
            .and_then(Value::as_str)
            .ok_or_else(|| error("Не указано действие: нужно поле action (no action given)"))?;
        let params = envelope
            .get("params")
            .and_then(Value::as_object)
            .ok_or_else(|| error("Не переданы параметры: нужен объект params с token и userId (no params given)"))?;
        self.authenticate(params)?;
        match action {
            "callback.GetWidgets" => self.get_widgets(params),
            "callback.CreateRequest" => self.create_request(params),
            "callback.ApplicationRequest" => self.application_request(params),
            "callback.CreateCrmLead" => self.create_crm_lead(params),
            "callback.GetRecords" => self.get_records(params),
            "chat.GetHistory" => self.get_history(params),
            "callback.SetLeadPrice" => self.set_lead_price(params),
            other => Err(error(&format!("Неизвестное действие: {other} (unknown action)"))),
        }
    }

    fn authenticate(&self, params: &Map<String, Value>) -> Result<(), Value> {
        if params.get("token").and_then(Value::as_str) != Some(self.token.as_str()) {
            return Err(error("Ошибка авторизации: неверный token (wrong token)"));
        }
        if text_of(params.get("userId")).as_deref() != Some(self.user_id.as_str()) {
            return Err(error("Ошибка авторизации: неверный userId (wrong user ID)"));
        }
        Ok(())
    }

    fn widget_index(&self, c: &mut Check<'_>, name: &str, required: bool) -> Option<usize> {
        let id = c.text(name, required)?;
        let found = self.widgets.iter().position(|w| w.id == id);
        if found.is_none() {
            c.fail(name, NO_WIDGET);
        }
        found
    }

    /// The department a request goes to: the widget's own, required when
    /// the widget distributes calls by department. Otherwise the document
    /// has no use for it ("sent if call distribution is on"), and its own
    /// example sends `"0"`: it is let be.
    fn department(&self, c: &mut Check<'_>, widget: Option<usize>) -> Option<String> {
        let given = c.text("departmentId", false);
        let w = &self.widgets[widget?];
        match given {
            Some(d) if d == w.department.0 => Some(d),
            Some(_) if !w.distribution => None,
            Some(_) => {
                c.fail("departmentId", "Отдел не найден");
                None
            }
            None if w.distribution => {
                c.fail(
                    "departmentId",
                    "Укажите отдел: в настройках виджета включено распределение звонков",
                );
                None
            }
            None => None,
        }
    }

    fn get_widgets(&self, params: &Map<String, Value>) -> Answer {
        Check::new(params, &[]).finish()?;
        Ok(json!({ "widgets": self.widgets.iter().map(Widget::json).collect::<Vec<_>>() }))
    }

    fn create_request(&mut self, params: &Map<String, Value>) -> Answer {
        let mut c = Check::new(params, &["clientPhone", "widgetId", "departmentId", "referer"]);
        let phone = c.phone("clientPhone", true);
        let widget = self.widget_index(&mut c, "widgetId", true);
        let department = self.department(&mut c, widget);
        let referer = c.url("referer");
        c.finish()?;
        let (Some(phone), Some(w)) = (phone, widget) else {
            return Err(error("Не хватает параметров (missing parameters)"));
        };
        self.add_record(w, department, Some(phone), referer, None, "callback");
        Ok(ok())
    }

    fn application_request(&mut self, params: &Map<String, Value>) -> Answer {
        let mut c = Check::new(
            params,
            &[
                "widgetId",
                "departmentId",
                "referer",
                "clientPhone",
                "name",
                "email",
                "text",
            ],
        );
        let widget = self.widget_index(&mut c, "widgetId", true);
        let department = self.department(&mut c, widget);
        let referer = c.url("referer");
        let phone = c.phone("clientPhone", false);
        let name = c.text("name", false);
        let email = c.text("email", false);
        if email.as_deref().is_some_and(|e| !is_email(e)) {
            c.fail("email", "Некорректный e-mail");
        }
        let text = c.text("text", false);
        c.finish()?;
        let Some(w) = widget else {
            return Err(error("Не хватает параметров (missing parameters)"));
        };
        // The record's `comment` carries what the form said.
        let comment = [name, email, text].into_iter().flatten().collect::<Vec<_>>().join("; ");
        self.add_record(
            w,
            department,
            phone,
            referer,
            Some(comment).filter(|c| !c.is_empty()),
            "application",
        );
        Ok(ok())
    }

    fn create_crm_lead(&mut self, params: &Map<String, Value>) -> Answer {
        let mut c = Check::new(params, &["phone", "price", "date"]);
        let phone = c.phone("phone", true);
        let price = c.whole("price", true, BAD_PRICE);
        let date = c.date("date", true, false);
        c.finish()?;
        let (Some(phone), Some(price), Some(date)) = (phone, price, date) else {
            return Err(error("Не хватает параметров (missing parameters)"));
        };
        // The lead is the latest call from that number.
        let Some(record) = self
            .records
            .iter()
            .rev()
            .find(|r| r.get("clientPhone") == Some(phone.as_str()))
        else {
            return Err(error(NO_CALL_FOR_PHONE));
        };
        let record_id = record.get("id").unwrap_or_default().to_owned();
        self.crm_leads.push(CrmLead { record_id, price, date });
        Ok(ok())
    }

    fn get_records(&self, params: &Map<String, Value>) -> Answer {
        let mut c = Check::new(
            params,
            &[
                "requestDateFrom",
                "requestDateTo",
                "callStartDateFrom",
                "callStartDateTo",
                "callEndDateFrom",
                "callEndDateTo",
                "requestStatus",
                "callStatus",
            ],
        );
        let request = (
            c.date("requestDateFrom", false, false),
            c.date("requestDateTo", false, true),
        );
        let start = (
            c.date("callStartDateFrom", false, false),
            c.date("callStartDateTo", false, true),
        );
        let end = (
            c.date("callEndDateFrom", false, false),
            c.date("callEndDateTo", false, true),
        );
        let request_status = c.flag("requestStatus");
        let call_status = c.flag("callStatus");
        c.finish()?;
        let records: Vec<&Map<String, Value>> = self
            .records
            .iter()
            .filter(|r| within(r.get("requestDate"), &request))
            .filter(|r| within(r.get("callDate"), &start))
            .filter(|r| within(r.end.as_deref(), &end))
            .filter(|r| request_status.is_none_or(|want| (r.get("requestStatus") == Some("success")) == want))
            .filter(|r| match (call_status, r.get("callStatus")) {
                (None, _) => true,
                // A call not made yet is neither successful nor not.
                (Some(_), None) => false,
                (Some(want), Some(s)) => (s == "CLIENT_ANSWER") == want,
            })
            .map(|r| &r.fields)
            .collect();
        Ok(json!({ "records": records }))
    }

    fn get_history(&self, params: &Map<String, Value>) -> Answer {
        let mut c = Check::new(params, &["widgetId", "dateFrom", "dateTo"]);
        // Optional, as the document's only example leaves it out: without
        // it, every widget's chats.
        let widget = if params.contains_key("widgetId") {
            self.widget_index(&mut c, "widgetId", false)
        } else {
            None
        };
        let dates = (c.date("dateFrom", false, false), c.date("dateTo", false, true));
        c.finish()?;
        let widget_id = widget.map(|w| self.widgets[w].id.as_str());
        let chats: Vec<&Value> = self
            .chats
            .iter()
            .filter(|ch| widget_id.is_none_or(|w| ch.widget == w))
            .filter(|ch| within(Some(&ch.start), &dates))
            .map(|ch| &ch.body)
            .collect();
        // A bare array, as documented.
        Ok(json!(chats))
    }

    fn set_lead_price(&mut self, params: &Map<String, Value>) -> Answer {
        let mut c = Check::new(params, &["id", "price"]);
        let id = c.text("id", true);
        let price = c.whole("price", true, BAD_PRICE);
        c.finish()?;
        let (Some(id), Some(price)) = (id, price) else {
            return Err(error("Не хватает параметров (missing parameters)"));
        };
        let Some(record) = self.records.iter_mut().find(|r| r.get("id") == Some(id.as_str())) else {
            return Err(error(&format!("Звонок {id} не найден (no such call)")));
        };
        record.fields.insert("leadPrice".to_owned(), Value::String(price));
        Ok(ok())
    }

    /// A new call record for a callback request or an application, made now.
    fn add_record(
        &mut self,
        widget: usize,
        department: Option<String>,
        phone: Option<String>,
        referer: Option<String>,
        comment: Option<String>,
        kind: &str,
    ) {
        self.next_record += 1;
        let w = &self.widgets[widget];
        let host = referer.as_deref().and_then(host_of).unwrap_or_else(|| w.host.clone());
        let mut f = blank_record();
        let mut set = |k: &str, v: Value| {
            f.insert(k.to_owned(), v);
        };
        set("id", json!(self.next_record.to_string()));
        set("widgetId", json!(w.id));
        set("departmentId", json!(department));
        set("requestDate", json!(data::format_unix(data::unix_now())));
        set("requestStatus", json!("success"));
        set("callAttempt", json!("0"));
        set("callSequenceNumber", json!("0"));
        set("clientPhone", json!(phone));
        set("referrerHost", json!(host));
        set("referrerPath", json!(referer));
        set("comment", json!(comment));
        set("type", json!(kind));
        // The call itself has not happened yet: callStatus, callDate and the
        // durations stay null.
        self.records.push(CallRecord { fields: f, end: None });
    }
}

/// Whether a date lies within optional bounds; a missing date is outside
/// any bound.
fn within(date: Option<&str>, bounds: &(Option<String>, Option<String>)) -> bool {
    match (date, bounds) {
        (_, (None, None)) => true,
        (None, _) => false,
        (Some(d), (from, to)) => from.as_deref().is_none_or(|f| d >= f) && to.as_deref().is_none_or(|t| d <= t),
    }
}

/// A string or a whole number as text (the document sends every number as
/// a string; a JSON number is accepted too).
fn text_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// `+7` and ten digits, the format of every example.
fn is_phone(s: &str) -> bool {
    s.len() == 12 && s.starts_with("+7") && s[2..].bytes().all(|b| b.is_ascii_digit())
}

fn is_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((user, domain)) => {
            !user.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !s.contains(char::is_whitespace)
        }
        None => false,
    }
}

/// The host of an `http(s)://` URL.
fn host_of(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    (!host.is_empty()).then(|| host.to_owned())
}

/// Checks an action's parameters, collecting one message per rejected field
/// into an `errors` answer.
struct Check<'a> {
    params: &'a Map<String, Value>,
    errors: Map<String, Value>,
}

impl<'a> Check<'a> {
    /// Starts a check; a parameter the action does not take is an error.
    fn new(params: &'a Map<String, Value>, known: &[&str]) -> Self {
        let mut c = Check {
            params,
            errors: Map::new(),
        };
        for key in params.keys() {
            if key != "token" && key != "userId" && !known.contains(&key.as_str()) {
                c.fail(key, UNKNOWN_PARAM);
            }
        }
        c
    }

    fn fail(&mut self, field: &str, message: &str) {
        self.errors
            .entry(field.to_owned())
            .or_insert_with(|| Value::String(message.to_owned()));
    }

    fn finish(self) -> Result<(), Value> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(json!({ "errors": self.errors }))
        }
    }

    /// A text value; empty counts as missing.
    fn text(&mut self, name: &str, required: bool) -> Option<String> {
        match self.params.get(name) {
            None | Some(Value::Null) => {
                if required {
                    self.fail(name, REQUIRED);
                }
                None
            }
            Some(v) => match text_of(Some(v)) {
                Some(s) if s.trim().is_empty() => {
                    if required {
                        self.fail(name, REQUIRED);
                    }
                    None
                }
                Some(s) => Some(s),
                None => {
                    self.fail(name, NOT_A_STRING);
                    None
                }
            },
        }
    }

    fn phone(&mut self, name: &str, required: bool) -> Option<String> {
        let v = self.text(name, required)?;
        if is_phone(&v) {
            Some(v)
        } else {
            self.fail(name, BAD_PHONE);
            None
        }
    }

    /// A whole, non-negative number, as a digit string.
    fn whole(&mut self, name: &str, required: bool, message: &str) -> Option<String> {
        let v = self.text(name, required)?;
        if v.bytes().all(|b| b.is_ascii_digit()) && v.len() <= 12 {
            Some(v)
        } else {
            self.fail(name, message);
            None
        }
    }

    /// A date or date-time; as a bound, a bare date covers its whole day
    /// (`end` says which end).
    fn date(&mut self, name: &str, required: bool, end: bool) -> Option<String> {
        let v = self.text(name, required)?;
        if data::valid_date_or_datetime(&v) {
            Some(data::range_bound(&v, end))
        } else {
            self.fail(name, BAD_DATE);
            None
        }
    }

    /// `"1"` or `"0"` (or the numbers).
    fn flag(&mut self, name: &str) -> Option<bool> {
        match self.text(name, false)?.as_str() {
            "1" => Some(true),
            "0" => Some(false),
            _ => {
                self.fail(name, BAD_FLAG);
                None
            }
        }
    }

    fn url(&mut self, name: &str) -> Option<String> {
        let v = self.text(name, false)?;
        if host_of(&v).is_some() && !v.contains(char::is_whitespace) {
            Some(v)
        } else {
            self.fail(name, "Некорректный адрес страницы: нужен http:// или https:// URL");
            None
        }
    }
}
