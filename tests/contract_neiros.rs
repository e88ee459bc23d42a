//! Contract tests: the bundled Neiros descriptor against the Neiros
//! simulator. Every action runs through the real `flow call`; each test
//! checks both ends, the records flow printed and the requests the
//! simulator received (login, bearer token, paths, query, body).

mod common;

use common::sandbox::{body, call, header, ok, serial, simulator};
use flow_sandbox::neiros::BASE_PATH;
use flow_sandbox::Received;
use serde_json::{json, Value};
use std::process::Output;

/// A config value the simulator gives.
fn config(key: &str) -> String {
    common::sandbox::config("neiros", key)
}

fn query(r: &Received, name: &str) -> Option<String> {
    flow_sandbox::data::form_pairs(&r.query)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// Checks that a call logged in once, first, with the account's e-mail and
/// password, and that every later request carried one bearer token of the
/// Sanctum form `<id>|<secret>`. Returns those later requests.
fn after_login(received: &[Received]) -> &[Received] {
    let (login, rest) = received.split_first().expect("a login request");
    assert_eq!(login.method, "POST");
    assert_eq!(login.path, format!("{BASE_PATH}/auth/login"));
    assert_eq!(
        body(login),
        json!({"email": config("email"), "password": config("password")})
    );
    assert_eq!(header(login, "accept"), Some("application/json"));
    assert!(header(login, "content-type").is_some_and(|c| c.starts_with("application/json")));
    let bearer = header(rest.first().expect("a request after the login"), "authorization").expect("authorization");
    let token = bearer.strip_prefix("Bearer ").expect("a bearer token");
    let (id, secret) = token.split_once('|').expect("a Sanctum token, `<id>|<secret>`");
    assert!(id.parse::<u64>().is_ok() && secret.len() == 40, "token {token}");
    for r in rest {
        assert_eq!(header(r, "authorization"), Some(bearer), "{} {}", r.method, r.path);
        assert_eq!(header(r, "accept"), Some("application/json"));
        assert_ne!(r.path, login.path, "logged in more than once");
    }
    rest
}

/// The ID of the account's first site.
fn first_site() -> String {
    let (out, _) = call("neiros", "list_sites", &[]);
    ok(&out)[0]["id"].as_u64().expect("site id").to_string()
}

/// Every deal of a site.
fn deals_of(site: &str) -> Vec<Value> {
    let (out, _) = call("neiros", "list_deals", &[("site_id", site)]);
    ok(&out)
}

/// `flow call neiros.<action>` with one config value replaced.
fn call_with(key: &str, value: &str, action: &str, params: &[(&str, &str)]) -> (Output, Vec<Received>) {
    let sim = simulator("neiros");
    let before = sim.journal.all().len();
    let mut cmd = common::flow();
    cmd.arg("call")
        .arg(format!("neiros.{action}"))
        .env("FLOW_NEIROS_BASE_URL", sim.base_url());
    for (k, v) in &sim.config {
        let v = if *k == key { value } else { v.as_str() };
        cmd.env(format!("FLOW_NEIROS_{}", k.to_ascii_uppercase()), v);
    }
    for (k, v) in params {
        cmd.arg("--param").arg(format!("{k}={v}"));
    }
    let out = cmd.output().expect("flow call");
    (out, sim.journal.all()[before..].to_vec())
}

/// One raw HTTP/1.1 exchange with the simulator, for what `flow` never
/// sends (a forged token, no `page`): the status and the body.
fn raw(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = simulator("neiros").addr;
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn list_sites_logs_in_once_and_sends_the_bearer_token() {
    let _serial = serial();
    let (out, received) = call("neiros", "list_sites", &[]);
    let sites = ok(&out);
    assert_eq!(sites.len(), 25);
    for site in &sites {
        assert!(site["id"].is_u64(), "{site}");
        assert!(site["name"].as_str().is_some_and(|n| n.ends_with(".ru")), "{site}");
    }
    let data = after_login(&received);
    assert_eq!(data.len(), 1);
    assert_eq!((data[0].method.as_str(), data[0].query.as_str()), ("GET", ""));
    assert_eq!(data[0].path, format!("{BASE_PATH}/sites"));
}

#[test]
fn list_deals_pages_by_page_number_up_to_last_page_and_one_empty_page() {
    let _serial = serial();
    let site = first_site();
    let (out, received) = call("neiros", "list_deals", &[("site_id", site.as_str())]);
    let deals = ok(&out);
    assert_eq!(deals.len(), 25, "every deal of the site, across pages");
    let mut ids: Vec<u64> = deals.iter().map(|d| d["id"].as_u64().expect("id")).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 25, "no deal twice");
    for deal in &deals {
        assert_eq!(deal["site_id"].to_string(), site);
        assert!(deal["date"].as_str().is_some_and(|d| d.len() == 10), "{deal}");
    }
    // Ten deals a page: page 1 names the last page (3); pages 2 and 3 may
    // be fetched at once, so their order is free. Page 4, empty, confirms
    // the end (`confirm_end`).
    let data = after_login(&received);
    let mut pages: Vec<String> = data
        .iter()
        .map(|r| {
            assert_eq!(
                (r.method.as_str(), r.path.as_str()),
                ("GET", format!("{BASE_PATH}/projects").as_str())
            );
            assert_eq!(query(r, "site_id").as_deref(), Some(site.as_str()));
            query(r, "page").expect("page")
        })
        .collect();
    assert_eq!(pages.first().map(String::as_str), Some("1"));
    pages.sort();
    assert_eq!(pages, ["1", "2", "3", "4"]);
}

#[test]
fn list_deals_filters_by_date_range() {
    let _serial = serial();
    let site = first_site();
    let all = deals_of(&site);
    let mut days: Vec<&str> = all.iter().filter_map(|d| d["date"].as_str()).collect();
    days.sort_unstable();
    days.dedup();
    let (from, to) = (days[days.len() / 4], days[days.len() * 3 / 4]);
    let (out, received) = call(
        "neiros",
        "list_deals",
        &[("site_id", site.as_str()), ("date_start", from), ("date_end", to)],
    );
    let got = ok(&out);
    let want: Vec<&Value> = all
        .iter()
        .filter(|d| d["date"].as_str().is_some_and(|x| x >= from && x <= to))
        .collect();
    assert!(
        !got.is_empty() && got.len() < all.len(),
        "{} of {} deals",
        got.len(),
        all.len()
    );
    let ids = |list: Vec<&Value>| list.into_iter().map(|d| d["id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(got.iter().collect()), ids(want));
    for r in after_login(&received) {
        assert_eq!(query(r, "date_start").as_deref(), Some(from));
        assert_eq!(query(r, "date_end").as_deref(), Some(to));
    }
}

#[test]
fn get_deal_answers_one_deal_with_every_documented_field() {
    let _serial = serial();
    let site = first_site();
    let listed = deals_of(&site)[0].clone();
    let id = listed["id"].to_string();
    let (out, received) = call("neiros", "get_deal", &[("id", id.as_str()), ("site_id", site.as_str())]);
    let got = ok(&out);
    assert_eq!(got.len(), 1);
    let deal = &got[0];
    assert_eq!(deal["id"], listed["id"]);
    for field in [
        "neiros_visit",
        "neiros_id",
        "created_at",
        "phone",
        "duration",
        "record",
        "canal",
        "traffic",
        "summ",
        "status",
    ] {
        assert!(deal.get(field).is_some(), "no `{field}` in {deal}");
    }
    let date = listed["date"].as_str().expect("date");
    assert!(
        deal["created_at"].as_str().is_some_and(|c| c.starts_with(date)),
        "{deal}"
    );
    let data = after_login(&received);
    assert_eq!(data.len(), 1);
    assert_eq!(data[0].method, "GET");
    assert_eq!(data[0].path, format!("{BASE_PATH}/project/{id}"));
    assert_eq!(query(&data[0], "site_id").as_deref(), Some(site.as_str()));
}

#[test]
fn update_deal_sets_the_amount_and_a_later_read_shows_it() {
    let _serial = serial();
    let site = first_site();
    let id = deals_of(&site)[1]["id"].to_string();
    let (out, received) = call(
        "neiros",
        "update_deal",
        &[("id", id.as_str()), ("site_id", site.as_str()), ("summ", "123457")],
    );
    assert_eq!(ok(&out), [json!({"success": true})]);
    let data = after_login(&received);
    assert_eq!(data.len(), 1, "a write is sent once");
    assert_eq!(data[0].method, "POST");
    assert_eq!(data[0].path, format!("{BASE_PATH}/project/{id}/update"));
    let site_number: u64 = site.parse().expect("site id");
    assert_eq!(body(&data[0]), json!({"site_id": site_number, "summ": 123457}));
    assert!(header(&data[0], "content-type").is_some_and(|c| c.starts_with("application/json")));

    let (out, _) = call("neiros", "get_deal", &[("id", id.as_str()), ("site_id", site.as_str())]);
    assert_eq!(ok(&out)[0]["summ"], json!(123457));
}

#[test]
fn update_deal_of_another_site_fails_with_the_answers_message() {
    let _serial = serial();
    let site = first_site();
    let id = deals_of(&site)[2]["id"].to_string();
    let other = (site.parse::<u64>().expect("site id") + 1).to_string();
    let (out, _) = call(
        "neiros",
        "update_deal",
        &[("id", id.as_str()), ("site_id", other.as_str()), ("summ", "1")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", common::stderr(&out));
    let err = common::stderr(&out);
    assert!(
        err.contains(&format!("Deal {id} does not belong to site {other}.")),
        "{err}"
    );
}

#[test]
fn an_unknown_deal_is_reported_with_the_servers_404() {
    let _serial = serial();
    let site = first_site();
    let (out, _) = call("neiros", "get_deal", &[("id", "999999"), ("site_id", site.as_str())]);
    assert_eq!(out.status.code(), Some(1), "{}", common::stderr(&out));
    let err = common::stderr(&out);
    assert!(err.contains("HTTP 404") && err.contains("No query results"), "{err}");
}

#[test]
fn a_wrong_password_fails_at_login_with_a_clear_message() {
    let _serial = serial();
    let (out, received) = call_with("password", "not-the-password", "list_sites", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", common::stderr(&out));
    let err = common::stderr(&out);
    assert!(
        err.contains("HTTP 401") && err.contains("These credentials do not match our records."),
        "{err}"
    );
    assert!(!err.contains("not-the-password"), "the password leaked: {err}");
    assert_eq!(received.len(), 1, "nothing is sent after a failed login");
    assert_eq!(received[0].path, format!("{BASE_PATH}/auth/login"));
    assert_eq!(body(&received[0])["password"], "not-the-password");
}

#[test]
fn data_routes_need_a_token_the_simulator_issued() {
    let _serial = serial();
    let sites = format!("{BASE_PATH}/sites");
    let json_accept = ("Accept", "application/json");
    let (status, text) = raw("GET", &sites, &[json_accept, ("Authorization", "Bearer 1|forged")], "");
    assert_eq!((status, json_of(&text)), (401, json!({"message": "Unauthenticated."})));
    let (status, _) = raw("GET", &sites, &[json_accept], "");
    assert_eq!(status, 401);
    // A client that does not ask for JSON gets Laravel's login redirect.
    let (status, _) = raw("GET", &sites, &[("Authorization", "Bearer 1|forged")], "");
    assert_eq!(status, 302);
}

#[test]
fn list_deals_requires_page_and_answers_laravel_paging_fields() {
    let _serial = serial();
    let credentials = json!({"email": config("email"), "password": config("password")}).to_string();
    let json_headers = [("Accept", "application/json"), ("Content-Type", "application/json")];
    let (status, text) = raw("POST", &format!("{BASE_PATH}/auth/login"), &json_headers, &credentials);
    assert_eq!(status, 200, "{text}");
    let login = json_of(&text);
    assert!(login["user"]["email"].is_string(), "{login}");
    let bearer = format!("Bearer {}", login["token"].as_str().expect("token"));
    let auth = [("Accept", "application/json"), ("Authorization", bearer.as_str())];
    let site = first_site();
    let deals = |query: &str| raw("GET", &format!("{BASE_PATH}/projects?{query}"), &auth, "");

    let (status, text) = deals(&format!("site_id={site}"));
    assert_eq!(status, 422, "{text}");
    assert!(json_of(&text)["errors"]["page"].is_array(), "{text}");

    let (status, text) = deals(&format!("site_id={site}&page=1"));
    assert_eq!(status, 200, "{text}");
    let first = json_of(&text);
    assert_eq!(
        (first["last_page"].clone(), first["total"].clone()),
        (json!(3), json!(25))
    );
    assert_eq!(first["data"]["projects"].as_array().map(Vec::len), Some(10));

    let (status, text) = deals(&format!("site_id={site}&page=4"));
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        json_of(&text)["data"]["projects"],
        json!([]),
        "past the last page the list is empty"
    );

    let (status, text) = deals(&format!("site_id={site}&page=1&date_start=2024-02-30"));
    assert_eq!(status, 422, "{text}");
}
