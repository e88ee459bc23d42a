//! Contract tests: the bundled solOS descriptor against the solOS
//! simulator. Every action runs through the real `flow call`; each test
//! checks both ends, the records flow printed and the requests the
//! simulator received (crypto headers, paths, count/offset, the filter
//! body).

mod common;

use common::sandbox::{body, call, call_custom, header, ok, serial};
use flow_sandbox::solos::BASE_PATH;
use flow_sandbox::Received;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::process::Output;

/// A config value the simulator gives.
fn config(key: &str) -> String {
    common::sandbox::config("solos", key)
}

fn query(r: &Received, name: &str) -> Option<String> {
    flow_sandbox::data::form_pairs(&r.query)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// Checks one request: method, path under the base path, both crypto
/// headers with the installation's values.
fn check(r: &Received, method: &str, path: &str) {
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        (method, format!("{BASE_PATH}{path}").as_str())
    );
    assert_eq!(header(r, "x-crypto-token"), Some(config("crm_token").as_str()));
    assert_eq!(header(r, "x-crypto-secret"), Some(config("crm_secret").as_str()));
    assert_eq!(header(r, "accept"), Some("application/json"));
}

/// Checks that a call sent exactly one request, the first page.
fn one_page<'a>(received: &'a [Received], method: &str, path: &str) -> &'a Received {
    assert_eq!(
        received.len(),
        1,
        "one request: a page shorter than `count` is the last"
    );
    check(&received[0], method, path);
    &received[0]
}

fn ids(list: &[Value]) -> Vec<u64> {
    list.iter().map(|v| v["id"].as_u64().expect("id")).collect()
}

/// The call with the bundled descriptor's page size (100) cut to 10, so
/// that 25 records take three pages.
fn call_in_pages_of_10(action: &str, params: &[(&str, &str)]) -> (Output, Vec<Received>) {
    let scratch = common::Scratch::new();
    let descriptor = std::fs::read_to_string(common::repo().join("providers/solos.yaml")).expect("descriptor");
    let small = descriptor.replace("limit: 100", "limit: 10");
    assert_ne!(small, descriptor, "the descriptor no longer pages by 100");
    scratch.write("providers/solos.yaml", &small);
    call_custom("solos", action, params, &[], Some(scratch.path("providers").as_path()))
}

/// The offsets of paged requests, with the page size they asked for.
fn offsets(received: &[Received], read: impl Fn(&Received, &str) -> Option<String>) -> Vec<(String, String)> {
    received
        .iter()
        .map(|r| (read(r, "offset").expect("offset"), read(r, "count").expect("count")))
        .collect()
}

/// Every active project, in ID order.
fn all_projects() -> Vec<Value> {
    let (out, _) = call("solos", "list_projects", &[("order_by", "id")]);
    ok(&out)
}

/// The ID of the first project for which a `having` condition holds.
fn first_having(having: &str) -> String {
    let (out, _) = call("solos", "filter_projects", &[("having", having), ("order_by", "id")]);
    let found = ok(&out);
    found.first().unwrap_or_else(|| panic!("no project with `{having}`"))["id"].to_string()
}

#[test]
fn list_projects_returns_every_project_in_one_short_page() {
    let _serial = serial();
    let (out, received) = call("solos", "list_projects", &[("order_by", "id"), ("reverse", "\"0\"")]);
    let projects = ok(&out);
    assert_eq!(projects.len(), 25);
    let got = ids(&projects);
    assert!(got.windows(2).all(|w| w[0] < w[1]), "ordered by ID: {got:?}");
    for p in &projects {
        assert_eq!(p["deleted"], "0", "{p}");
        assert!(p["data"].is_object() && p["name"].is_string(), "{p}");
    }
    // The document names no list of sort fields: any field of a project
    // sorts, a dynamic one too; a name no project has is refused.
    for field in ["tasks_count", "data.client_id"] {
        let (out, _) = call("solos", "list_projects", &[("order_by", field)]);
        let sorted = ok(&out);
        let keys: Vec<u64> = sorted
            .iter()
            .map(|p| {
                p.pointer(&format!("/{}", field.replace('.', "/")))
                    .and_then(Value::as_u64)
                    .expect(field)
            })
            .collect();
        assert!(keys.windows(2).all(|w| w[0] <= w[1]), "{field}: {keys:?}");
    }
    let (out, _) = call("solos", "list_projects", &[("order_by", "no_such_field")]);
    assert_eq!(out.status.code(), Some(1), "{}", common::stderr(&out));
    assert!(
        common::stderr(&out).contains("no_such_field"),
        "{}",
        common::stderr(&out)
    );
    let r = one_page(&received, "GET", "/projects");
    for (name, value) in [("count", "100"), ("offset", "0"), ("order_by", "id"), ("reverse", "0")] {
        assert_eq!(query(r, name).as_deref(), Some(value), "{name} in {}", r.query);
    }
}

#[test]
fn list_projects_pages_by_count_and_offset_until_a_short_page() {
    let _serial = serial();
    let all = all_projects();
    let (out, received) = call_in_pages_of_10("list_projects", &[("order_by", "id")]);
    assert_eq!(ids(&ok(&out)), ids(&all), "the same projects, page by page");
    for r in &received {
        check(r, "GET", "/projects");
    }
    let pages = offsets(&received, query);
    assert_eq!(
        pages,
        [("0", "10"), ("10", "10"), ("20", "10")].map(|(o, c)| (o.to_owned(), c.to_owned()))
    );
}

#[test]
fn list_projects_lists_deleted_ones_on_request() {
    let _serial = serial();
    let (out, received) = call("solos", "list_projects", &[("deleted", "\"1\""), ("order_by", "id")]);
    let deleted = ok(&out);
    assert_eq!(deleted.len(), 5);
    assert!(deleted.iter().all(|p| p["deleted"] == "1"), "{deleted:?}");
    let active: BTreeSet<u64> = ids(&all_projects()).into_iter().collect();
    assert!(ids(&deleted).iter().all(|id| !active.contains(id)));
    assert_eq!(
        query(one_page(&received, "GET", "/projects"), "deleted").as_deref(),
        Some("1")
    );
}

#[test]
fn filter_projects_sends_a_json_body_and_applies_the_conditions() {
    let _serial = serial();
    let all = all_projects();
    let built_in = r#"{"step_id": [1, 2]}"#;
    let (out, received) = call(
        "solos",
        "filter_projects",
        &[("buildin_data", built_in), ("condition", "and"), ("order_by", "id")],
    );
    let found = ok(&out);
    let want: Vec<&Value> = all.iter().filter(|p| p["step_id"] == 1 || p["step_id"] == 2).collect();
    assert!(
        !found.is_empty() && found.len() < all.len(),
        "{} of {}",
        found.len(),
        all.len()
    );
    assert_eq!(
        ids(&found),
        want.iter().map(|p| p["id"].as_u64().expect("id")).collect::<Vec<_>>()
    );
    let r = one_page(&received, "POST", "/projects/filter");
    assert!(header(r, "content-type").is_some_and(|c| c.starts_with("application/json")));
    assert_eq!(r.query, "", "the filter travels in the body");
    let sent = body(r);
    assert_eq!(
        (sent["count"].clone(), sent["offset"].clone()),
        (json!(100), json!(0)),
        "JSON numbers: {sent}"
    );
    assert_eq!(sent["buildin_data"], json!({"step_id": [1, 2]}));
    assert_eq!(
        (sent["condition"].clone(), sent["order_by"].clone()),
        (json!("and"), json!("id"))
    );
}

#[test]
fn filter_projects_with_or_matches_any_condition() {
    let _serial = serial();
    let all = all_projects();
    let (out, received) = call(
        "solos",
        "filter_projects",
        &[
            ("buildin_data", r#"{"step_id": [1]}"#),
            ("data", r#"{"client_id": [1, 2]}"#),
            ("condition", "or"),
            ("order_by", "id"),
        ],
    );
    let found = ok(&out);
    let hit = |p: &Value| p["step_id"] == 1 || p["data"]["client_id"] == 1 || p["data"]["client_id"] == 2;
    let want: Vec<u64> = all
        .iter()
        .filter(|&p| hit(p))
        .map(|p| p["id"].as_u64().expect("id"))
        .collect();
    assert!(!want.is_empty());
    assert_eq!(ids(&found), want);
    assert_eq!(body(&received[0])["data"], json!({"client_id": [1, 2]}));
}

#[test]
fn filter_projects_pages_inside_the_body() {
    let _serial = serial();
    let all = all_projects();
    let (out, received) = call_in_pages_of_10("filter_projects", &[("order_by", "id")]);
    assert_eq!(ids(&ok(&out)), ids(&all));
    let pages = offsets(&received, |r, name| Some(body(r)[name].to_string()));
    assert_eq!(
        pages,
        [("0", "10"), ("10", "10"), ("20", "10")].map(|(o, c)| (o.to_owned(), c.to_owned()))
    );
    assert!(received.iter().all(|r| r.query.is_empty()));
}

#[test]
fn get_project_answers_the_project_itself() {
    let _serial = serial();
    let first = all_projects()[0].clone();
    let id = first["id"].to_string();
    let (out, received) = call("solos", "get_project", &[("id", id.as_str())]);
    assert_eq!(ok(&out), [first]);
    let r = one_page(&received, "GET", "/projects/info");
    assert_eq!(query(r, "id"), Some(id));
}

#[test]
fn list_project_steps_lists_the_stages_passed_and_filters_them() {
    let _serial = serial();
    let project = all_projects()
        .into_iter()
        .find(|p| p["step_id"].as_u64() >= Some(3))
        .expect("a project at stage 3+");
    let id = project["id"].to_string();
    let (out, received) = call("solos", "list_project_steps", &[("id", id.as_str())]);
    let steps = ok(&out);
    let stages: Vec<u64> = steps.iter().map(|s| s["step_id"].as_u64().expect("step_id")).collect();
    let current = project["step_id"].as_u64().expect("step_id");
    assert_eq!(stages, (1..=current).collect::<Vec<_>>());
    assert!(steps.iter().all(|s| s["project_id"] == project["id"]));
    let r = one_page(&received, "GET", "/projects/steps");
    assert_eq!(query(r, "id"), Some(id.clone()));
    assert_eq!(query(r, "count"), None, "steps do not page");

    let day = steps[1]["date"]
        .as_str()
        .and_then(|d| d.get(..10))
        .expect("date")
        .to_owned();
    let (out, received) = call(
        "solos",
        "list_project_steps",
        &[
            ("id", id.as_str()),
            ("filter_steps", "1_2"),
            ("filter_date", day.as_str()),
        ],
    );
    let filtered = ok(&out);
    assert!(!filtered.is_empty());
    let on_day = |v: &Value| v["date"].as_str().and_then(|d| d.get(..10)) == Some(day.as_str());
    assert!(filtered
        .iter()
        .all(|s| (s["step_id"] == 1 || s["step_id"] == 2) && on_day(s)));
    assert_eq!(query(&received[0], "filter_steps").as_deref(), Some("1_2"));
    assert_eq!(query(&received[0], "filter_date"), Some(day));
}

#[test]
fn list_project_events_and_get_project_event() {
    let _serial = serial();
    let id = first_having("actions");
    let (out, received) = call("solos", "list_project_events", &[("id", id.as_str())]);
    let events = ok(&out);
    assert_eq!(events.len(), 25, "every event of the project");
    assert!(events.iter().all(|e| e["project_id"].to_string().as_str() == id));
    let r = one_page(&received, "GET", "/projects/actions");
    for (name, value) in [("id", id.as_str()), ("count", "100"), ("offset", "0")] {
        assert_eq!(query(r, name).as_deref(), Some(value), "{name} in {}", r.query);
    }

    // Filters.
    let kind = events[0]["type_id"].to_string();
    let day = events[0]["date"]
        .as_str()
        .and_then(|d| d.get(..10))
        .expect("date")
        .to_owned();
    let params = [
        ("id", id.as_str()),
        ("filter_actions", kind.as_str()),
        ("filter_date", day.as_str()),
    ];
    let (out, received) = call("solos", "list_project_events", &params);
    let filtered = ok(&out);
    assert!(!filtered.is_empty() && filtered.len() < events.len());
    let on_day = |v: &Value| v["date"].as_str().and_then(|d| d.get(..10)) == Some(day.as_str());
    assert!(filtered
        .iter()
        .all(|e| e["type_id"].to_string().as_str() == kind && on_day(e)));
    assert_eq!(query(&received[0], "filter_actions"), Some(kind));

    // One event by its own ID.
    let event_id = events[3]["id"].to_string();
    let (out, received) = call("solos", "get_project_event", &[("id", event_id.as_str())]);
    assert_eq!(ok(&out), [events[3].clone()]);
    assert_eq!(
        query(one_page(&received, "GET", "/projects/actions/info"), "id"),
        Some(event_id)
    );

    // Pages of 10.
    let (out, received) = call_in_pages_of_10("list_project_events", &[("id", id.as_str())]);
    assert_eq!(ok(&out), events);
    assert_eq!(received.len(), 3);
}

#[test]
fn list_project_checklists_lists_a_projects_checklists() {
    let _serial = serial();
    let id = first_having("checklists_expired");
    let (out, received) = call("solos", "list_project_checklists", &[("id", id.as_str())]);
    let checklists = ok(&out);
    assert!(!checklists.is_empty());
    assert!(checklists
        .iter()
        .all(|c| c["project_id"].to_string().as_str() == id && c["deadline"].is_string()));
    assert!(
        checklists.iter().any(|c| c["done"] == "0"),
        "one is overdue: {checklists:?}"
    );
    assert_eq!(
        query(one_page(&received, "GET", "/projects/checklists"), "id"),
        Some(id)
    );
}

#[test]
fn list_project_goods_lists_a_projects_goods() {
    let _serial = serial();
    let id = first_having("goods");
    let (out, received) = call("solos", "list_project_goods", &[("id", id.as_str())]);
    let goods = ok(&out);
    assert!(!goods.is_empty());
    for g in &goods {
        assert_eq!(g["project_id"].to_string(), id);
        assert_eq!(
            g["sum"].as_u64(),
            g["count"].as_u64().zip(g["price"].as_u64()).map(|(c, p)| c * p),
            "{g}"
        );
    }
    assert_eq!(
        query(one_page(&received, "GET", "/projects/goods"), "id"),
        Some(id.clone())
    );

    let none = first_having("no_goods");
    let (out, _) = call("solos", "list_project_goods", &[("id", none.as_str())]);
    assert!(ok(&out).is_empty());
}

#[test]
fn list_project_payments_lists_and_filters_payments() {
    let _serial = serial();
    let id = first_having("payments");
    let (out, received) = call("solos", "list_project_payments", &[("id", id.as_str())]);
    let payments = ok(&out);
    assert_eq!(payments.len(), 25, "every payment of the project");
    let r = one_page(&received, "GET", "/projects/payments");
    for (name, value) in [("id", id.as_str()), ("count", "100"), ("offset", "0")] {
        assert_eq!(query(r, name).as_deref(), Some(value), "{name} in {}", r.query);
    }

    let (out, received) = call(
        "solos",
        "list_project_payments",
        &[("id", id.as_str()), ("filter_type", "\"1\"")],
    );
    let credits = ok(&out);
    assert!(!credits.is_empty() && credits.len() < payments.len());
    assert!(credits.iter().all(|p| p["type"] == "1"));
    assert_eq!(query(&received[0], "filter_type").as_deref(), Some("1"));

    let (out, _) = call_in_pages_of_10("list_project_payments", &[("id", id.as_str())]);
    assert_eq!(ok(&out), payments);
}

#[test]
fn a_wrong_secret_is_rejected_with_401() {
    let _serial = serial();
    let (out, received) = call_custom("solos", "list_projects", &[], &[("crm_secret", "not-the-secret")], None);
    assert_eq!(out.status.code(), Some(1), "{}", common::stderr(&out));
    let err = common::stderr(&out);
    assert!(
        err.contains("HTTP 401") && err.contains("Invalid X-Crypto-Token or X-Crypto-Secret."),
        "{err}"
    );
    assert!(!err.contains("not-the-secret"), "the secret leaked: {err}");
    assert_eq!(received.len(), 1, "a 401 is not retried");
    assert_eq!(header(&received[0], "x-crypto-secret"), Some("not-the-secret"));
}

#[test]
fn an_unknown_project_is_a_404() {
    let _serial = serial();
    let (out, _) = call("solos", "get_project", &[("id", "999999")]);
    assert_eq!(out.status.code(), Some(1), "{}", common::stderr(&out));
    let err = common::stderr(&out);
    assert!(
        err.contains("HTTP 404") && err.contains("Project 999999 not found."),
        "{err}"
    );
}
