//! Contract tests: the bundled Roistat descriptor against the Roistat
//! simulator. Every action runs through the real `flow call`; each test
//! checks both ends, the records flow printed and the requests the
//! simulator received (`Api-key`, `?project=`, the JSON bodies), plus the
//! errors Roistat sends with HTTP 200.

mod common;

use common::sandbox::{body, call, call_custom, header, ok, serial, simulator};
use flow_sandbox::roistat::BASE_PATH;
use flow_sandbox::Received;
use serde_json::{json, Value};
use std::process::Output;

/// A config value the simulator gives.
fn config(key: &str) -> String {
    common::sandbox::config("roistat", key)
}

/// The seeded leads are all created in 2024; leads the tests create are
/// dated 2025, so that lists over this period always hold the same 25.
const YEAR_2024: &str = r#"{"from": "2024-01-01T00:00:00.000Z", "to": "2024-12-31T23:59:59.999Z"}"#;
const YEAR_2025: &str = r#"{"from": "2025-01-01T00:00:00.000Z", "to": "2025-12-31T23:59:59.999Z"}"#;

/// The stderr of a call that must fail as a run failure (exit code 1).
fn failed(out: &Output) -> String {
    let err = common::stderr(out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {}\nstderr: {err}",
        common::stdout(out)
    );
    err
}

fn query(r: &Received, name: &str) -> Option<String> {
    flow_sandbox::data::form_pairs(&r.query)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// Checks one request: a POST to the path, with the account's key in
/// `Api-key` and its project in the query string. Returns its JSON body.
fn check(r: &Received, path: &str) -> Value {
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", format!("{BASE_PATH}{path}").as_str())
    );
    assert_eq!(query(r, "project"), Some(config("project")));
    assert_eq!(header(r, "api-key"), Some(config("api_key").as_str()));
    assert_eq!(header(r, "accept"), Some("application/json"));
    body(r)
}

fn ids(leads: &[Value]) -> Vec<String> {
    leads
        .iter()
        .map(|l| l["id"].as_str().expect("id is a string").to_owned())
        .collect()
}

/// One lead by ID, read back through `list_leads`.
fn lead(id: &str, period: &str) -> Value {
    let filter = json!([{"field": "id", "operator": "=", "value": id}]).to_string();
    let (out, _) = call(
        "roistat",
        "list_leads",
        &[("period", period), ("filters", filter.as_str()), ("sort_field", "id")],
    );
    let found = ok(&out);
    assert_eq!(found.len(), 1, "lead {id}: {found:?}");
    found[0].clone()
}

/// One raw HTTP/1.1 POST to the simulator, for what `flow` never sends
/// (a missing required field, no project): the status and the body.
fn raw_post(path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    use std::io::{Read, Write};
    let addr = simulator("roistat").addr;
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    let mut request = format!("POST {BASE_PATH}{path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let text = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    (
        status,
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")),
    )
}

#[test]
fn list_leads_returns_every_lead_of_the_period_with_paging_fields_in_the_body() {
    let _serial = serial();
    let (out, received) = call("roistat", "list_leads", &[("period", YEAR_2024), ("sort_field", "id")]);
    let leads = ok(&out);
    assert_eq!(ids(&leads), (1..=25).map(|n| n.to_string()).collect::<Vec<_>>());
    for l in &leads {
        for field in [
            "title",
            "creation_date",
            "status",
            "price",
            "name",
            "phone",
            "email",
            "source",
            "text",
        ] {
            assert!(l.get(field).is_some(), "no `{field}` in {l}");
        }
        assert!(
            l["creation_date"]
                .as_str()
                .is_some_and(|d| d.starts_with("2024-") && d.ends_with("+0000")),
            "{l}"
        );
    }
    assert_eq!(received.len(), 1, "25 leads fit in one page of 100");
    let sent = check(&received[0], "/project/leads/lead/list");
    assert_eq!(
        sent["period"],
        serde_json::from_str::<Value>(YEAR_2024).expect("period")
    );
    assert_eq!((sent["limit"].clone(), sent["offset"].clone()), (json!(100), json!(0)));
    assert_eq!(sent["sort_field"], "id");
    assert!(header(&received[0], "content-type").is_some_and(|c| c.starts_with("application/json")));
}

#[test]
fn list_leads_pages_by_limit_and_offset_up_to_the_total() {
    let _serial = serial();
    let (out, _) = call("roistat", "list_leads", &[("period", YEAR_2024), ("sort_field", "id")]);
    let all = ok(&out);
    // The bundled descriptor with pages of 10 instead of 100.
    let scratch = common::Scratch::new();
    let descriptor = std::fs::read_to_string(common::repo().join("providers/roistat.yaml")).expect("descriptor");
    let small = descriptor.replace("limit: 100", "limit: 10");
    assert_ne!(small, descriptor, "the descriptor no longer pages by 100");
    scratch.write("providers/roistat.yaml", &small);
    let params = [("period", YEAR_2024), ("sort_field", "id")];
    let (out, received) = call_custom(
        "roistat",
        "list_leads",
        &params,
        &[],
        Some(scratch.path("providers").as_path()),
    );
    assert_eq!(ok(&out), all, "the same leads, page by page");
    let pages: Vec<(Value, Value)> = received
        .iter()
        .map(|r| {
            let sent = check(r, "/project/leads/lead/list");
            (sent["offset"].clone(), sent["limit"].clone())
        })
        .collect();
    assert_eq!(
        pages,
        [(json!(0), json!(10)), (json!(10), json!(10)), (json!(20), json!(10))]
    );
}

#[test]
fn list_leads_filters_in_both_documented_forms_and_sorts() {
    let _serial = serial();
    let (out, _) = call("roistat", "list_leads", &[("period", YEAR_2024), ("sort_field", "id")]);
    let all = ok(&out);
    // The example's object form and the table's triple form, together.
    let filters = r#"[{"field": "status", "operator": "in", "value": ["1", "2"]}, ["price", ">=", "5000"]]"#;
    let params = [
        ("period", YEAR_2024),
        ("filters", filters),
        ("sort_field", "price"),
        ("sort_order", "desc"),
    ];
    let (out, received) = call("roistat", "list_leads", &params);
    let found = ok(&out);
    let price = |l: &Value| l["price"].as_i64().expect("price");
    let mut want: Vec<&Value> = all
        .iter()
        .filter(|&l| (l["status"] == "1" || l["status"] == "2") && price(l) >= 5000)
        .collect();
    want.sort_by_key(|&l| std::cmp::Reverse(price(l)));
    assert!(
        !found.is_empty() && found.len() < all.len(),
        "{} of {}",
        found.len(),
        all.len()
    );
    let prices: Vec<i64> = found.iter().map(price).collect();
    assert_eq!(
        prices,
        want.iter().map(|&l| price(l)).collect::<Vec<_>>(),
        "by price, highest first"
    );
    let mut found_ids = ids(&found);
    let mut want_ids: Vec<String> = want.iter().map(|l| l["id"].as_str().expect("id").to_owned()).collect();
    found_ids.sort();
    want_ids.sort();
    assert_eq!(found_ids, want_ids);
    let sent = check(&received[0], "/project/leads/lead/list");
    assert_eq!(
        sent["filters"],
        serde_json::from_str::<Value>(filters).expect("filters")
    );
    assert_eq!(
        (sent["sort_field"].clone(), sent["sort_order"].clone()),
        (json!("price"), json!("desc"))
    );
}

#[test]
fn list_lead_statuses_takes_no_body() {
    let _serial = serial();
    let (out, received) = call("roistat", "list_lead_statuses", &[]);
    let statuses = ok(&out);
    let listed: Vec<(&str, &str)> = statuses
        .iter()
        .map(|s| (s["id"].as_str().unwrap_or(""), s["type"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        listed,
        [("0", "progress"), ("1", "paid"), ("2", "canceled"), ("3", "progress")]
    );
    assert!(statuses.iter().all(|s| s["name"].is_string()));
    assert_eq!(received.len(), 1);
    assert_eq!(
        (received[0].method.as_str(), received[0].path.as_str()),
        ("POST", format!("{BASE_PATH}/project/leads/status/list").as_str())
    );
    assert_eq!(query(&received[0], "project"), Some(config("project")));
    assert_eq!(header(&received[0], "api-key"), Some(config("api_key").as_str()));
    assert_eq!(received[0].body, "", "no body");
}

#[test]
fn create_lead_makes_a_lead_the_next_list_shows() {
    let _serial = serial();
    let params = [
        ("title", "Заявка из контрактного теста"),
        ("name", "Иванов Иван"),
        ("creation_date", "2025-03-01T10:00:00.000Z"),
        ("paid_date", "2025-03-02T21:00:00+0000"),
        ("status", "\"1\""),
        ("price", "12500"),
        ("phone", "+79991234567"),
        ("email", "contract@example.ru"),
        ("source", "direct"),
    ];
    let (out, received) = call("roistat", "create_lead", &params);
    let answer = ok(&out);
    assert_eq!(answer.len(), 1);
    assert_eq!(answer[0]["status"], "success");
    let id = answer[0]["lead_id"].as_str().expect("lead_id is a string").to_owned();
    assert_eq!(received.len(), 1, "a write is sent once");
    let sent = check(&received[0], "/project/leads/lead/create");
    assert_eq!(
        sent,
        json!({
            "title": "Заявка из контрактного теста", "name": "Иванов Иван",
            "creation_date": "2025-03-01T10:00:00.000Z", "paid_date": "2025-03-02T21:00:00+0000",
            "status": "1", "price": 12500, "phone": "+79991234567", "email": "contract@example.ru",
            "source": "direct",
        })
    );

    let created = lead(&id, YEAR_2025);
    assert_eq!(created["title"], "Заявка из контрактного теста");
    assert_eq!(
        created["creation_date"], "2025-03-01T10:00:00+0000",
        "stored in the lead-field form"
    );
    assert_eq!(created["paid_date"], "2025-03-02T21:00:00+0000");
    assert_eq!(
        (created["status"].clone(), created["price"].clone()),
        (json!("1"), json!(12500))
    );
}

#[test]
fn create_lead_with_an_unknown_status_or_an_impossible_date_fails() {
    let _serial = serial();
    let unknown_status = [
        ("title", "Плохая заявка"),
        ("name", "Тест"),
        ("creation_date", "2025-04-01T10:00:00.000Z"),
        ("status", "\"9\""),
    ];
    let (out, received) = call("roistat", "create_lead", &unknown_status);
    let err = failed(&out);
    assert!(err.contains("validation_error"), "{err}");
    assert_eq!(received.len(), 1, "a failed write is not sent again");

    // November has 30 days (the document's own example uses the 31st):
    // flow refuses the date before sending it.
    let mut impossible_date = unknown_status;
    impossible_date[2] = ("creation_date", "2023-11-31T20:59:59.999Z");
    impossible_date[3] = ("status", "\"0\"");
    let (out, received) = call("roistat", "create_lead", &impossible_date);
    let err = common::stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("`creation_date` of `roistat.create_lead` must be a date"),
        "{err}"
    );
    assert!(received.is_empty(), "nothing is sent");
}

#[test]
fn update_lead_changes_only_the_given_fields() {
    let _serial = serial();
    let before = lead("7", YEAR_2024);
    let params = [
        ("id", "\"7\""),
        ("price", "777777"),
        ("status", "\"3\""),
        ("text", "Перезвонить после обеда"),
    ];
    let (out, received) = call("roistat", "update_lead", &params);
    assert_eq!(ok(&out), [json!({"status": "success"})]);
    assert_eq!(received.len(), 1);
    let sent = check(&received[0], "/project/leads/lead/update");
    assert_eq!(
        sent,
        json!({"id": "7", "price": 777777, "status": "3", "text": "Перезвонить после обеда"})
    );

    let after = lead("7", YEAR_2024);
    assert_eq!(
        (after["price"].clone(), after["status"].clone()),
        (json!(777777), json!("3"))
    );
    assert_eq!(after["text"], "Перезвонить после обеда");
    for unchanged in ["title", "creation_date", "name", "phone", "email", "source"] {
        assert_eq!(after[unchanged], before[unchanged], "{unchanged}");
    }
}

#[test]
fn update_of_an_unknown_lead_fails() {
    let _serial = serial();
    let (out, _) = call("roistat", "update_lead", &[("id", "\"999999\""), ("price", "1")]);
    assert!(failed(&out).contains("not_found"));
}

#[test]
fn a_wrong_key_or_project_is_an_authorization_error_in_a_200_answer() {
    let _serial = serial();
    let (out, received) = call_custom(
        "roistat",
        "list_lead_statuses",
        &[],
        &[("api_key", "not-the-key")],
        None,
    );
    let err = failed(&out);
    assert!(err.contains("authorization_error"), "{err}");
    assert!(!err.contains("not-the-key"), "the key leaked: {err}");
    assert_eq!(received.len(), 1, "an error answer is not retried");
    assert_eq!(header(&received[0], "api-key"), Some("not-the-key"));

    let (out, received) = call_custom("roistat", "list_lead_statuses", &[], &[("project", "99999")], None);
    assert!(failed(&out).contains("authorization_error"));
    assert_eq!(query(&received[0], "project").as_deref(), Some("99999"));
}

#[test]
fn the_simulator_requires_what_the_document_requires() {
    let _serial = serial();
    let key = config("api_key");
    let list = format!("/project/leads/lead/list?project={}", config("project"));
    let auth = [("Api-key", key.as_str())];
    let period = json!({"from": "2024-01-01T00:00:00.000Z", "to": "2024-12-31T23:59:59.999Z"});

    let (status, answer) = raw_post(&list, &auth, &json!({"period": period, "sort_field": "id"}).to_string());
    assert_eq!(
        (status, answer["status"].clone(), answer["total"].clone()),
        (200, json!("success"), json!(25))
    );

    for incomplete in [json!({"period": period}), json!({"sort_field": "id"})] {
        let (status, answer) = raw_post(&list, &auth, &incomplete.to_string());
        assert_eq!(
            (status, answer["status"].clone()),
            (200, json!("error")),
            "{incomplete}"
        );
        assert_eq!(answer["error"], "validation_error");
    }

    let (status, answer) = raw_post("/project/leads/status/list", &auth, "");
    assert_eq!(
        (status, answer["error"].clone()),
        (200, json!("authorization_error")),
        "no project"
    );

    let create = format!("/project/leads/lead/create?project={}", config("project"));
    let (_, answer) = raw_post(
        &create,
        &auth,
        &json!({"name": "x", "creation_date": "2025-01-01T00:00:00Z"}).to_string(),
    );
    assert_eq!(answer["error"], "validation_error");
    assert!(
        answer["description"]
            .as_str()
            .is_some_and(|d| d.contains("status") && d.contains("title")),
        "{answer}"
    );

    // Filters take the documented operators and string values; a create
    // takes the price as an integer and the status as a string.
    for filter in [
        json!({"field": "id", "operator": "<", "value": "5"}),
        json!({"field": "price", "operator": ">=", "value": 5000}),
        json!({"field": "status", "operator": "in", "value": [1, 2]}),
    ] {
        let body = json!({"period": period, "filters": [filter]});
        let (_, answer) = raw_post(&list, &auth, &body.to_string());
        assert_eq!(answer["error"], "validation_error", "{filter}: {answer}");
    }
    for (field, value) in [("price", json!("12500")), ("status", json!(1))] {
        let mut body = json!({"title": "t", "name": "n", "status": "0", "creation_date": "2025-01-01T00:00:00Z"});
        body[field] = value;
        let (_, answer) = raw_post(&create, &auth, &body.to_string());
        assert_eq!(answer["error"], "validation_error", "{body}: {answer}");
    }
}
