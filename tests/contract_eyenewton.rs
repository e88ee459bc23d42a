//! The EyeNewton descriptor against its simulator: every action through the
//! real `flow` binary, the envelope that went over the wire (the RPC method
//! and the credentials inside `params`), and the errors that come back with
//! HTTP 200.
//!
//! The tests share one simulator and run in parallel, so each one finds its
//! own requests in the journal by their content, and writes use phone
//! numbers and records no other test touches.

mod common;

use common::sandbox::{call, ok, records, simulator};
use common::stderr;
use flow_sandbox::eyenewton::BASE_PATH;
use flow_sandbox::Received;
use serde_json::{json, Value};
use std::process::Output;

/// A config value the simulator gives.
fn config(key: &str) -> String {
    common::sandbox::config("eyenewton", key)
}

/// A failed call: exit code 1 and stderr, which must mention `needle`.
fn fails_with(out: &Output, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "expected a failed call: {err}");
    assert!(err.contains(needle), "`{needle}` not in: {err}");
}

/// A `--param` value that stays a JSON string (IDs and prices are strings
/// in this API, and a digit string would otherwise become a number).
fn text(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// The envelope of one call: a JSON POST to the envelope path carrying the
/// RPC method and the connection's credentials inside `params`.
fn sent(received: &[Received], rpc: &str, matches: impl Fn(&Value) -> bool) -> Value {
    for r in received
        .iter()
        .filter(|r| r.method == "POST" && r.path == format!("{BASE_PATH}/json"))
    {
        let Ok(envelope) = serde_json::from_str::<Value>(&r.body) else {
            continue;
        };
        if envelope["action"] != rpc || !matches(&envelope["params"]) {
            continue;
        }
        let header = |name: &str| r.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        assert_eq!(header("content-type"), Some("application/json"), "{r:?}");
        assert_eq!(r.query, "", "{r:?}");
        assert_eq!(envelope["params"]["token"], config("token"));
        assert_eq!(envelope["params"]["userId"], config("user_id"));
        return envelope;
    }
    panic!("no `{rpc}` envelope among {received:#?}");
}

fn widgets() -> Vec<Value> {
    let (out, _) = call("eyenewton", "list_widgets", &[]);
    ok(&out);
    records(&out)
}

fn call_records(params: &[(&str, &str)]) -> Vec<Value> {
    let (out, _) = call("eyenewton", "list_call_records", params);
    ok(&out);
    records(&out)
}

fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no string id: {v}"))
        .to_owned()
}

fn ids(rs: &[Value]) -> Vec<String> {
    rs.iter().map(id_of).collect()
}

#[test]
fn list_widgets_sends_only_the_credentials() {
    let (out, received) = call("eyenewton", "list_widgets", &[]);
    ok(&out);
    let widgets = records(&out);
    assert_eq!(widgets.len(), 25);
    for w in &widgets {
        let id = id_of(w);
        assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{w}");
        assert!(w["name"].is_string(), "{w}");
        // One department object, as in the document's sample.
        assert!(
            w["departments"]["id"].is_string() && w["departments"]["name"].is_string(),
            "{w}"
        );
    }
    let envelope = sent(&received, "callback.GetWidgets", |_| true);
    assert_eq!(envelope["params"].as_object().map(|p| p.len()), Some(2), "{envelope}");
}

#[test]
fn create_callback_becomes_a_call_record() {
    // The first widget has call distribution off: no department needed.
    let widget = id_of(&widgets()[0]);
    let phone = "+79990001122";
    let (out, received) = call(
        "eyenewton",
        "create_callback",
        &[
            ("clientPhone", phone),
            ("widgetId", text(&widget).as_str()),
            ("referer", "https://shop.example.ru/catalog"),
        ],
    );
    ok(&out);
    assert_eq!(records(&out), vec![json!({"result": "ok"})]);
    let envelope = sent(&received, "callback.CreateRequest", |p| p["clientPhone"] == phone);
    assert_eq!(envelope["params"]["widgetId"], widget.as_str());
    assert_eq!(envelope["params"]["referer"], "https://shop.example.ru/catalog");
    assert!(envelope["params"].get("departmentId").is_none(), "{envelope}");

    let record = call_records(&[])
        .into_iter()
        .find(|r| r["clientPhone"] == phone)
        .expect("the callback request is listed");
    assert_eq!(record["type"], "callback");
    assert_eq!(record["widgetId"], widget.as_str());
    assert_eq!(record["referrerPath"], "https://shop.example.ru/catalog");
    assert_eq!(record["requestStatus"], "success");
}

#[test]
fn create_callback_on_a_distributing_widget_needs_its_department() {
    // The second widget distributes calls by department.
    let w = &widgets()[1];
    let (widget, department) = (
        id_of(w),
        w["departments"]["id"].as_str().expect("department").to_owned(),
    );
    let (out, _) = call(
        "eyenewton",
        "create_callback",
        &[("clientPhone", "+79990003344"), ("widgetId", text(&widget).as_str())],
    );
    fails_with(&out, "departmentId: ");

    let (out, received) = call(
        "eyenewton",
        "create_callback",
        &[
            ("clientPhone", "+79990003344"),
            ("widgetId", text(&widget).as_str()),
            ("departmentId", text(&department).as_str()),
        ],
    );
    ok(&out);
    let envelope = sent(&received, "callback.CreateRequest", |p| {
        p["clientPhone"] == "+79990003344"
    });
    assert_eq!(envelope["params"]["departmentId"], department.as_str());

    // Another department than the widget's is refused there.
    let (out, _) = call(
        "eyenewton",
        "create_callback",
        &[
            ("clientPhone", "+79990003344"),
            ("widgetId", text(&widget).as_str()),
            ("departmentId", "\"0\""),
        ],
    );
    fails_with(&out, "departmentId: ");
}

#[test]
fn a_department_given_to_a_widget_that_does_not_distribute_is_let_be() {
    // The document's own example sends `"departmentId": "0"`; the field
    // only matters when call distribution is on.
    let widget = id_of(&widgets()[0]);
    let (out, _) = call(
        "eyenewton",
        "create_callback",
        &[
            ("clientPhone", "+79990005566"),
            ("widgetId", text(&widget).as_str()),
            ("departmentId", "\"0\""),
        ],
    );
    ok(&out);
}

#[test]
fn create_application_becomes_a_record_with_its_text() {
    let widget = id_of(&widgets()[0]);
    let (out, received) = call(
        "eyenewton",
        "create_application",
        &[
            ("widgetId", text(&widget).as_str()),
            ("clientPhone", "+79990002233"),
            ("name", "Иван"),
            ("email", "ivan@example.com"),
            ("text", "Перезвоните мне"),
            ("referer", "https://shop.example.ru/"),
        ],
    );
    ok(&out);
    assert_eq!(records(&out), vec![json!({"result": "ok"})]);
    let envelope = sent(&received, "callback.ApplicationRequest", |p| {
        p["clientPhone"] == "+79990002233"
    });
    for (k, v) in [
        ("name", "Иван"),
        ("email", "ivan@example.com"),
        ("text", "Перезвоните мне"),
    ] {
        assert_eq!(envelope["params"][k], v, "{envelope}");
    }

    let record = call_records(&[])
        .into_iter()
        .find(|r| r["clientPhone"] == "+79990002233")
        .expect("the application is listed");
    assert_eq!(record["type"], "application");
    assert!(
        record["comment"]
            .as_str()
            .is_some_and(|c| c.contains("Перезвоните мне")),
        "{record}"
    );
}

#[test]
fn create_crm_lead_finds_the_call_by_phone() {
    let phone = call_records(&[])[0]["clientPhone"].as_str().expect("phone").to_owned();
    let (out, received) = call(
        "eyenewton",
        "create_crm_lead",
        &[
            ("phone", phone.as_str()),
            ("price", text("228").as_str()),
            ("date", "2024-05-05 19:33:00"),
        ],
    );
    ok(&out);
    assert_eq!(records(&out), vec![json!({"result": "ok"})]);
    let envelope = sent(&received, "callback.CreateCrmLead", |p| p["phone"] == phone.as_str());
    // Sent as the document's example sends it: the price as a digit string.
    assert_eq!(envelope["params"]["price"], "228");
    assert_eq!(envelope["params"]["date"], "2024-05-05 19:33:00");

    // No call from this number: the document's business error, with HTTP 200.
    let (out, _) = call(
        "eyenewton",
        "create_crm_lead",
        &[
            ("phone", "+70000000000"),
            ("price", text("228").as_str()),
            ("date", "2024-05-05"),
        ],
    );
    fails_with(&out, "По номеру не нашлся звонок");
}

#[test]
fn list_call_records_applies_the_filters() {
    let all = call_records(&[]);
    assert!(all.len() >= 25, "{}", all.len());
    for r in &all {
        for key in [
            "id",
            "widgetId",
            "requestDate",
            "requestStatus",
            "callStatus",
            "conversationFile",
            "clientPhone",
            "leadPrice",
            "type",
        ] {
            assert!(r.get(key).is_some(), "no `{key}` in {r}");
        }
    }

    // Requests of 2 January 2024 (the seeded calls are 97 minutes apart from
    // 1 January; records added by other tests are dated today).
    let (out, received) = call(
        "eyenewton",
        "list_call_records",
        &[
            ("requestDateFrom", "2024-01-02"),
            ("requestDateTo", "2024-01-02 23:59:59"),
        ],
    );
    ok(&out);
    let got = records(&out);
    let want: Vec<Value> = all
        .iter()
        .filter(|r| {
            r["requestDate"]
                .as_str()
                .is_some_and(|d| ("2024-01-02".."2024-01-03").contains(&d))
        })
        .cloned()
        .collect();
    assert!(!want.is_empty());
    assert_eq!(ids(&got), ids(&want));
    sent(&received, "callback.GetRecords", |p| {
        p["requestDateFrom"] == "2024-01-02" && p["requestDateTo"] == "2024-01-02 23:59:59"
    });

    // Successful calls of requests that reached the PBX.
    let got = call_records(&[
        ("requestStatus", text("1").as_str()),
        ("callStatus", text("1").as_str()),
    ]);
    assert!(!got.is_empty());
    assert!(got
        .iter()
        .all(|r| r["callStatus"] == "CLIENT_ANSWER" && r["requestStatus"] == "success"));
    let answered = all.iter().filter(|r| r["callStatus"] == "CLIENT_ANSWER").count();
    assert_eq!(got.len(), answered);
}

#[test]
fn list_chat_history_is_a_bare_array_of_conversations() {
    let (out, received) = call("eyenewton", "list_chat_history", &[]);
    ok(&out);
    let all = records(&out);
    assert_eq!(all.len(), 25);
    for chat in &all {
        assert!(
            chat["startTime"].is_string() && chat["clientId"].is_string() && chat["operator"].is_string(),
            "{chat}"
        );
        let messages = chat["messages"].as_array().expect("messages");
        assert!(!messages.is_empty());
        assert!(messages
            .iter()
            .all(|m| m["from"].is_boolean() && m["text"].is_string() && m["time"].is_string()));
    }
    let envelope = sent(&received, "chat.GetHistory", |_| true);
    assert!(envelope["params"].get("widgetId").is_none(), "{envelope}");

    let widget = id_of(&widgets()[0]);
    let (out, received) = call(
        "eyenewton",
        "list_chat_history",
        &[("widgetId", text(&widget).as_str())],
    );
    ok(&out);
    let some = records(&out);
    assert!(
        !some.is_empty() && some.len() < all.len(),
        "{} of {}",
        some.len(),
        all.len()
    );
    sent(&received, "chat.GetHistory", |p| p["widgetId"] == widget.as_str());

    let (out, _) = call(
        "eyenewton",
        "list_chat_history",
        &[("dateFrom", "2024-01-02"), ("dateTo", "2024-01-02")],
    );
    ok(&out);
    let day = records(&out);
    assert!(!day.is_empty() && day.len() < all.len());
    assert!(day
        .iter()
        .all(|c| c["startTime"].as_str().is_some_and(|t| t.starts_with("2024-01-02"))));
}

#[test]
fn set_lead_price_shows_in_the_call_record() {
    let all = call_records(&[]);
    let id = id_of(&all[3]);
    let (out, received) = call(
        "eyenewton",
        "set_lead_price",
        &[("id", text(&id).as_str()), ("price", text("5000").as_str())],
    );
    ok(&out);
    assert_eq!(records(&out), vec![json!({"result": "ok"})]);
    let envelope = sent(&received, "callback.SetLeadPrice", |p| p["id"] == id.as_str());
    assert_eq!(envelope["params"]["price"], "5000");

    let record = call_records(&[])
        .into_iter()
        .find(|r| id_of(r) == id)
        .expect("the record");
    assert_eq!(record["leadPrice"], "5000");

    let (out, _) = call(
        "eyenewton",
        "set_lead_price",
        &[("id", text("1").as_str()), ("price", text("5000").as_str())],
    );
    fails_with(&out, "the API answered with an error");
}

#[test]
fn field_errors_in_200_answers_fail_the_call_with_the_field_message() {
    let widget = id_of(&widgets()[0]);
    // Not +7 and ten digits.
    let (out, received) = call(
        "eyenewton",
        "create_callback",
        &[("clientPhone", "89991234567"), ("widgetId", text(&widget).as_str())],
    );
    fails_with(&out, "clientPhone: Номер введен неверно");
    sent(&received, "callback.CreateRequest", |p| {
        p["clientPhone"] == "89991234567"
    });

    let id = id_of(&call_records(&[])[5]);
    let (out, _) = call(
        "eyenewton",
        "set_lead_price",
        &[("id", text(&id).as_str()), ("price", "abc")],
    );
    fails_with(&out, "price: Invalid price value");

    let (out, _) = call("eyenewton", "list_call_records", &[("requestDateFrom", "02.01.2024")]);
    fails_with(&out, "requestDateFrom: ");

    let (out, _) = call(
        "eyenewton",
        "create_callback",
        &[("clientPhone", "+79990004455"), ("widgetId", text("nope").as_str())],
    );
    fails_with(&out, "widgetId: ");
}

/// `flow call` with the simulator's URL and the given credentials.
fn call_with(token: &str, user_id: &str, action: &str) -> Output {
    common::flow()
        .arg("call")
        .arg(format!("eyenewton.{action}"))
        .env("FLOW_EYENEWTON_BASE_URL", simulator("eyenewton").base_url())
        .env("FLOW_EYENEWTON_TOKEN", token)
        .env("FLOW_EYENEWTON_USER_ID", user_id)
        .output()
        .expect("flow call")
}

#[test]
fn wrong_credentials_fail_with_a_clear_message() {
    let wrong = "0123456789abcdef0123456789abcdef";
    let out = call_with(wrong, &config("user_id"), "list_widgets");
    fails_with(&out, "неверный token");
    assert!(!stderr(&out).contains(wrong), "the token leaked: {}", stderr(&out));
    assert!(out.stdout.is_empty());

    let out = call_with(&config("token"), "999999", "list_call_records");
    fails_with(&out, "неверный userId");
}
