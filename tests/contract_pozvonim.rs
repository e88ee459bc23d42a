//! The Pozvonim descriptor against its simulator: every action through the
//! real `flow` binary, the token request and the signature that went over
//! the wire, the verbs and paths, and writes showing up in later reads.
//!
//! The token a request was signed with is in the simulator's answer, not in
//! the journal, so a request's `sign` is checked by shape (32 hex digits,
//! sent last, after parameters already in `ksort` order) and by the
//! simulator accepting it; the token request's sign is recomputed exactly.
//!
//! The tests share one simulator and run in parallel: each finds its own
//! requests by method and path, and writes touch objects no other test
//! reads.

mod common;

use common::sandbox::{call, ok, records, simulator};
use common::stderr;
use flow_sandbox::data::{form_pairs, md5_hex, php_signed_query};
use flow_sandbox::pozvonim::BASE_PATH;
use flow_sandbox::Received;
use serde_json::Value;
use std::process::Output;

/// A config value the simulator gives.
fn config(key: &str) -> String {
    common::sandbox::config("pozvonim", key)
}

/// A failed call: exit code 1 and stderr, which must mention each needle.
fn fails_with(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "expected a failed call: {err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` not in: {err}");
    }
}

/// One action's answer, which must succeed.
fn run(action: &str, params: &[(&str, &str)]) -> Vec<Value> {
    let (out, _) = call("pozvonim", action, params);
    ok(&out);
    records(&out)
}

/// The one record of a single read or write.
fn one(action: &str, params: &[(&str, &str)]) -> Value {
    let mut r = run(action, params);
    assert_eq!(r.len(), 1, "{r:?}");
    r.remove(0)
}

fn num(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no number `{key}` in {v}"))
}

/// The parameters as sent: the query for GET and DELETE, the form body for
/// POST and PUT.
fn sent_params(r: &Received) -> Vec<(String, String)> {
    form_pairs(if r.method == "GET" || r.method == "DELETE" {
        &r.query
    } else {
        &r.body
    })
}

fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// The request this call sent to `method path`, checked as a signed
/// request: `uid`, then a 32-hex `sign` sent last, after parameters already
/// in the order PHP's `ksort` gives (so what was signed is what was sent);
/// POST and PUT put everything in a form body and nothing in the query.
fn signed<'a>(received: &'a [Received], method: &str, path: &str) -> &'a Received {
    let r = received
        .iter()
        .find(|r| r.method == method && r.path == format!("{BASE_PATH}{path}"))
        .unwrap_or_else(|| panic!("no {method} {path} among {received:#?}"));
    let pairs = sent_params(r);
    assert_eq!(param(&pairs, "uid"), Some(config("uid").as_str()), "{r:?}");
    let sign = param(&pairs, "sign").expect("sign");
    assert!(
        sign.len() == 32 && sign.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{sign}"
    );
    assert_eq!(pairs.last().map(|(k, _)| k.as_str()), Some("sign"), "{r:?}");
    let raw = if method == "GET" || method == "DELETE" {
        &r.query
    } else {
        &r.body
    };
    let before_sign = raw
        .rsplit_once("&sign=")
        .map(|(head, _)| head)
        .expect("sign after the parameters");
    assert_eq!(php_signed_query(&pairs), before_sign, "not sent in ksort order");
    if method == "POST" || method == "PUT" {
        assert_eq!(r.query, "", "{r:?}");
        let content_type = r
            .headers
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.as_str());
        assert_eq!(content_type, Some("application/x-www-form-urlencoded"), "{r:?}");
    }
    r
}

/// The token request of a `flow call`: `GET /auth/token` with `uid` and
/// `sign = md5(api_key + "uid=" + uid)`.
fn assert_token_request(received: &[Received]) {
    let r = received
        .iter()
        .find(|r| r.method == "GET" && r.path == format!("{BASE_PATH}/auth/token"))
        .expect("a token request");
    let pairs = form_pairs(&r.query);
    let uid = config("uid");
    assert_eq!(param(&pairs, "uid"), Some(uid.as_str()));
    let want = md5_hex(format!("{}uid={uid}", config("api_key")).as_bytes());
    assert_eq!(param(&pairs, "sign"), Some(want.as_str()));
}

fn is_datetime(s: &str) -> bool {
    s.len() == 19 && s.as_bytes()[10] == b' ' && s.bytes().filter(u8::is_ascii_digit).count() == 14
}

#[test]
fn get_server_time_gets_a_token_and_signs_the_request() {
    let (out, received) = call("pozvonim", "get_server_time", &[]);
    ok(&out);
    let time = &records(&out)[0];
    assert!(time["time"].as_str().is_some_and(is_datetime), "{time}");
    assert_token_request(&received);
    let r = signed(&received, "GET", "/server/time/now");
    // Nothing but uid and sign.
    assert_eq!(sent_params(r).len(), 2, "{r:?}");
}

#[test]
fn list_sites_and_its_ids_filter() {
    let all = run("list_sites", &[]);
    assert!(all.len() >= 25, "{}", all.len());
    for s in &all {
        assert!(s["url"].as_str().is_some_and(|u| u.starts_with("https://")), "{s}");
        assert!(s["managers"].as_array().is_some_and(|m| !m.is_empty()), "{s}");
        assert!(s["widget"]["schelude"]["monday"]["from"].is_number(), "{s}");
        assert!(s["contributor_id"].is_null(), "{s}");
    }
    let (a, b) = (num(&all[0], "id"), num(&all[2], "id"));
    let (out, received) = call("pozvonim", "list_sites", &[("ids", format!("[{a},{b}]").as_str())]);
    ok(&out);
    let got: Vec<u64> = records(&out).iter().map(|s| num(s, "id")).collect();
    assert_eq!(got, vec![a, b]);
    let r = signed(&received, "GET", "/sites");
    assert!(
        r.query.contains(&format!("ids%5B0%5D={a}&ids%5B1%5D={b}")),
        "{}",
        r.query
    );
}

#[test]
fn a_site_is_created_listed_read_updated_and_deleted() {
    let url = "https://lifecycle.example.ru";
    let (out, received) = call(
        "pozvonim",
        "create_site",
        &[
            ("site[url]", url),
            ("managers", r#"[{"phone": "+79990001122", "name": "Иван Петров"}]"#),
            ("widget[schelude][saturday][enable]", "0"),
            ("blacklists[phone]", "+79990000000"),
        ],
    );
    ok(&out);
    let site = &records(&out)[0];
    let id = num(site, "id");
    assert_eq!(site["url"], url);
    assert_eq!(site["managers"][0]["name"], "Иван Петров");
    assert_eq!(site["widget"]["schelude"]["saturday"]["enable"], 0);
    // The document's defaults, which the descriptor sends on creates.
    assert_eq!(site["widget"]["schelude"]["monday"]["from"], 9);
    assert_eq!(site["widget"]["algoritms"]["onenter"]["time"], 30);
    assert_eq!(site["blacklists"]["phone"], "+79990000000");
    assert_token_request(&received);
    let r = signed(&received, "POST", "/sites");
    for part in [
        "site%5Burl%5D=https%3A%2F%2Flifecycle.example.ru",
        "managers%5B0%5D%5Bphone%5D=%2B79990001122",
        "managers%5B0%5D%5Bname%5D=%D0%98%D0%B2%D0%B0%D0%BD+%D0%9F%D0%B5%D1%82%D1%80%D0%BE%D0%B2",
        "widget%5Bschelude%5D%5Bmonday%5D%5Bfrom%5D=9",
        "widget%5Balgoritms%5D%5Bonreturn%5D%5Benable%5D=0",
    ] {
        assert!(r.body.contains(part), "`{part}` not in {}", r.body);
    }
    // The schedule key given came first, the defaults after it: sent (and
    // signed) the way PHP rebuilds them, every schedule key together.
    let keys: Vec<&str> = r.body.split('&').filter_map(|kv| kv.split('=').next()).collect();
    let schedule: Vec<usize> = (keys.iter().enumerate())
        .filter(|(_, k)| k.starts_with("widget%5Bschelude%5D"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(schedule.len(), 21, "{keys:?}");
    assert_eq!(schedule[20] - schedule[0], 20, "schedule keys split up: {keys:?}");
    assert_eq!(keys[schedule[0]], "widget%5Bschelude%5D%5Bsaturday%5D%5Benable%5D");

    // The write shows up in the list and in a single read.
    assert!(run("list_sites", &[])
        .iter()
        .any(|s| num(s, "id") == id && s["url"] == url));
    let (out, received) = call("pozvonim", "get_site", &[("site_id", id.to_string().as_str())]);
    ok(&out);
    assert_eq!(records(&out)[0]["url"], url);
    let r = signed(&received, "GET", &format!("/sites/{id}"));
    // The path ID is not a parameter.
    assert!(param(&sent_params(r), "site_id").is_none(), "{r:?}");

    // An update changes what it sends and keeps the rest.
    let (out, received) = call(
        "pozvonim",
        "update_site",
        &[
            ("site_id", id.to_string().as_str()),
            ("site[url]", url),
            (
                "managers",
                r#"[{"phone": "+79990001122"}, {"phone": "+79990001133", "name": "Ольга"}]"#,
            ),
            ("widget[call_time]", "20"),
        ],
    );
    ok(&out);
    let site = &records(&out)[0];
    assert_eq!(site["widget"]["call_time"], 20);
    assert_eq!(site["managers"].as_array().map(Vec::len), Some(2));
    assert_eq!(site["widget"]["schelude"]["saturday"]["enable"], 0);
    signed(&received, "PUT", &format!("/sites/{id}"));
    assert_eq!(
        one("get_site", &[("site_id", id.to_string().as_str())])["widget"]["call_time"],
        20
    );

    let (out, received) = call("pozvonim", "delete_site", &[("site_id", id.to_string().as_str())]);
    ok(&out);
    signed(&received, "DELETE", &format!("/sites/{id}"));
    assert!(!run("list_sites", &[]).iter().any(|s| num(s, "id") == id));
    let (out, _) = call("pozvonim", "get_site", &[("site_id", id.to_string().as_str())]);
    fails_with(&out, &["HTTP 404", "not found"]);
}

#[test]
fn make_call_is_listed_and_readable() {
    let site = num(&run("list_sites", &[])[0], "id");
    let phone = "+79995556677";
    let (out, received) = call(
        "pozvonim",
        "make_call",
        &[
            ("site_id", site.to_string().as_str()),
            ("phone", phone),
            ("source_call", "https://shop.example.ru/catalog"),
            ("return_count", "3"),
        ],
    );
    ok(&out);
    let made = &records(&out)[0];
    let id = num(made, "id");
    assert_eq!(made["client"], phone);
    assert_eq!(made["site_id"], site);
    assert_eq!(made["status"], "new");
    let r = signed(&received, "POST", &format!("/sites/{site}/call"));
    let pairs = sent_params(r);
    assert_eq!(param(&pairs, "phone"), Some(phone));
    assert_eq!(param(&pairs, "return_count"), Some("3"));
    assert!(param(&pairs, "site_id").is_none());

    let listed = run("list_calls", &[("client", phone)]);
    assert!(listed.iter().any(|c| num(c, "id") == id), "{listed:?}");
    let detail = one("get_call", &[("call_id", id.to_string().as_str())]);
    assert_eq!(detail["source_call"], "https://shop.example.ru/catalog");
    assert_eq!(detail["return_count"], 3);
}

#[test]
fn create_delayed_call_takes_an_iso_8601_time() {
    let site = num(&run("list_sites", &[])[1], "id");
    let (out, received) = call(
        "pozvonim",
        "create_delayed_call",
        &[
            ("site_id", site.to_string().as_str()),
            ("phone", "+79995558899"),
            ("delayed", "2030-01-01T10:00:00+03:00"),
        ],
    );
    ok(&out);
    let made = &records(&out)[0];
    assert_eq!(made["delayed"], "2030-01-01T10:00:00+03:00");
    assert_eq!(made["status"], "delayed");
    let r = signed(&received, "POST", &format!("/sites/{site}/call/delayed"));
    assert!(
        r.body.contains("delayed=2030-01-01T10%3A00%3A00%2B03%3A00"),
        "{}",
        r.body
    );

    // A time in the past is refused.
    let (out, _) = call(
        "pozvonim",
        "create_delayed_call",
        &[
            ("site_id", site.to_string().as_str()),
            ("phone", "+79995558899"),
            ("delayed", "2020-01-01T10:00:00Z"),
        ],
    );
    fails_with(&out, &["HTTP 422", "delayed: is in the past"]);

    // DATETIME is not ISO 8601 (no `T`): refused, as the document asks.
    let (out, _) = call(
        "pozvonim",
        "create_delayed_call",
        &[
            ("site_id", site.to_string().as_str()),
            ("phone", "+79995558899"),
            ("delayed", "2030-01-01 10:00:00"),
        ],
    );
    fails_with(&out, &["HTTP 422", "delayed"]);
}

#[test]
fn list_calls_applies_the_filters() {
    let all = run("list_calls", &[]);
    assert!(all.len() >= 25);
    // The seeded calls are 97 minutes apart from 1 January 2024; calls made
    // by other tests are dated today and have other statuses.
    let (out, received) = call(
        "pozvonim",
        "list_calls",
        &[("start_at", "2024-01-02 00:00:00"), ("end_at", "2024-01-02 23:59:59")],
    );
    ok(&out);
    let got: Vec<u64> = records(&out).iter().map(|c| num(c, "id")).collect();
    let want: Vec<u64> = all
        .iter()
        .filter(|c| c["created_at"].as_str().is_some_and(|d| d.starts_with("2024-01-02")))
        .map(|c| num(c, "id"))
        .collect();
    assert!(!want.is_empty());
    assert_eq!(got, want);
    let r = signed(&received, "GET", "/calls");
    assert!(r.query.contains("start_at=2024-01-02+00%3A00%3A00"), "{}", r.query);

    let got = run("list_calls", &[("status_ids", "[2]")]);
    assert!(!got.is_empty() && got.iter().all(|c| c["status_id"] == 2 && c["status"] == "success"));
    assert_eq!(got.len(), all.iter().filter(|c| c["status_id"] == 2).count());

    // By ID: those calls with their details, other filters ignored.
    let id = num(&all[4], "id");
    let got = run(
        "list_calls",
        &[("ids", format!("[{id}]").as_str()), ("status_ids", "[99]")],
    );
    assert_eq!(got.len(), 1);
    assert!(got[0]["source_enter"].is_string(), "{}", got[0]);

    let detail = one("get_call", &[("call_id", id.to_string().as_str())]);
    assert_eq!(num(&detail, "id"), id);
    assert!(detail["useragent"].is_string());

    // "Always and everywhere DATETIME": a bare date is refused.
    let (out, _) = call("pozvonim", "list_calls", &[("start_at", "2024-01-02")]);
    fails_with(&out, &["HTTP 422", "start_at"]);
}

#[test]
fn widgets_are_listed_by_project_and_read_one_by_one() {
    let all = run("list_widgets", &[]);
    assert!(all.len() >= 25);
    assert!(all
        .iter()
        .all(|w| w["schelude"]["sunday"]["enable"].is_number() && w["call_time"].is_number()));
    let site = num(&all[3], "site_id");
    let (out, received) = call(
        "pozvonim",
        "list_widgets",
        &[("sites_ids", format!("[{site}]").as_str())],
    );
    ok(&out);
    let some = records(&out);
    assert_eq!(some.len(), 1);
    assert_eq!(some[0]["site_id"], site);
    let r = signed(&received, "GET", "/widget");
    assert!(r.query.contains(&format!("sites_ids%5B0%5D={site}")), "{}", r.query);

    let widget = num(&some[0], "id");
    let (out, received) = call("pozvonim", "get_widget", &[("widget_id", widget.to_string().as_str())]);
    ok(&out);
    assert_eq!(records(&out)[0]["site_id"], site);
    signed(&received, "GET", &format!("/widget/{widget}"));
}

#[test]
fn the_profile_is_read_and_updated() {
    let (out, received) = call("pozvonim", "get_profile", &[]);
    ok(&out);
    let profile = &records(&out)[0];
    assert_eq!(profile["timezone"], "Europe/Moscow");
    assert_eq!(profile["api_enable"], 1);
    assert!(profile.get("api_key").is_none(), "the key is shown: {profile}");
    signed(&received, "GET", "/profile");

    // The same key and switch, so the other tests' credentials stay valid.
    let key = config("api_key");
    let (out, received) = call(
        "pozvonim",
        "update_profile",
        &[
            ("timezone", "Europe/Moscow"),
            ("api_enable", "1"),
            ("api_key", Value::String(key.clone()).to_string().as_str()),
        ],
    );
    ok(&out);
    assert_eq!(records(&out)[0]["timezone"], "Europe/Moscow");
    let r = signed(&received, "PUT", "/profile");
    assert_eq!(param(&sent_params(r), "api_key"), Some(key.as_str()));
}

#[test]
fn contributors_are_listed_created_and_read() {
    let all = run("list_contributors", &[]);
    assert!(all.len() >= 25);
    assert!(all.iter().all(|c| c["email"].is_string() && c["balance"].is_number()));

    let (out, received) = call(
        "pozvonim",
        "create_contributor",
        &[("email", "new-client@example.ru"), ("password", "s3cret-pass")],
    );
    ok(&out);
    let made = &records(&out)[0];
    let id = num(made, "id");
    assert_eq!(made["email"], "new-client@example.ru");
    assert!(
        made.get("password").is_none() && !made.to_string().contains("s3cret-pass"),
        "{made}"
    );
    signed(&received, "POST", "/contributors");

    assert!(run("list_contributors", &[]).iter().any(|c| num(c, "id") == id));
    let (out, received) = call(
        "pozvonim",
        "get_contributor",
        &[("contributor_id", id.to_string().as_str())],
    );
    ok(&out);
    let got = &records(&out)[0];
    assert_eq!(got["email"], "new-client@example.ru");
    assert!(got["sites"].as_array().is_some_and(Vec::is_empty));
    signed(&received, "GET", &format!("/contributors/{id}"));

    let (out, _) = call(
        "pozvonim",
        "create_contributor",
        &[("email", "new-client@example.ru"), ("password", "s3cret-pass")],
    );
    fails_with(
        &out,
        &["HTTP 422", "email: new-client@example.ru is already registered"],
    );
}

#[test]
fn a_studio_client_with_projects() {
    let (out, received) = call(
        "pozvonim",
        "create_contributor_with_site",
        &[
            ("email", "agency-client@example.ru"),
            ("password", "s3cret-pass"),
            ("site[url]", "https://agency-client.example.ru"),
            ("managers", r#"[{"phone": "+79990007788", "name": "Мария"}]"#),
        ],
    );
    ok(&out);
    let made = &records(&out)[0];
    let client = num(&made["contributor"], "id");
    let first = num(&made["site"], "id");
    assert_eq!(made["site"]["contributor_id"], client);
    signed(&received, "POST", "/contributors/sites");
    let c = client.to_string();

    let (out, received) = call(
        "pozvonim",
        "create_contributor_site",
        &[
            ("contributor_id", c.as_str()),
            ("site[url]", "https://agency-client-2.example.ru"),
            ("managers", r#"[{"phone": "+79990007799"}]"#),
        ],
    );
    ok(&out);
    let second = num(&records(&out)[0], "id");
    signed(&received, "POST", &format!("/contributors/{client}/sites"));

    let (out, received) = call("pozvonim", "list_contributor_sites", &[("contributor_id", c.as_str())]);
    ok(&out);
    let ids: Vec<u64> = records(&out).iter().map(|s| num(s, "id")).collect();
    assert_eq!(ids, vec![first, second]);
    signed(&received, "GET", &format!("/contributors/{client}/sites"));
    // The account's own list does not show a client's projects.
    assert!(!run("list_sites", &[]).iter().any(|s| num(s, "id") == first));

    let s = second.to_string();
    let (out, received) = call(
        "pozvonim",
        "get_contributor_site",
        &[("contributor_id", c.as_str()), ("site_id", s.as_str())],
    );
    ok(&out);
    assert_eq!(records(&out)[0]["url"], "https://agency-client-2.example.ru");
    signed(&received, "GET", &format!("/contributors/{client}/sites/{second}"));

    let (out, received) = call(
        "pozvonim",
        "update_contributor_site",
        &[
            ("contributor_id", c.as_str()),
            ("site_id", s.as_str()),
            ("site[url]", "https://agency-client-2.example.ru"),
            ("managers", r#"[{"phone": "+79990007799"}]"#),
            ("widget[call_time]", "15"),
        ],
    );
    ok(&out);
    assert_eq!(records(&out)[0]["widget"]["call_time"], 15);
    signed(&received, "PUT", &format!("/contributors/{client}/sites/{second}"));

    let (out, received) = call(
        "pozvonim",
        "delete_contributor_site",
        &[("contributor_id", c.as_str()), ("site_id", s.as_str())],
    );
    ok(&out);
    signed(&received, "DELETE", &format!("/contributors/{client}/sites/{second}"));
    let left: Vec<u64> = run("list_contributor_sites", &[("contributor_id", c.as_str())])
        .iter()
        .map(|s| num(s, "id"))
        .collect();
    assert_eq!(left, vec![first]);
    let got = one("get_contributor", &[("contributor_id", c.as_str())]);
    assert_eq!(got["sites"].as_array().map(Vec::len), Some(1));
}

#[test]
fn a_studio_clients_calls() {
    // The first client has calls in the seeded data.
    let client = num(&run("list_contributors", &[])[0], "id");
    let (out, received) = call(
        "pozvonim",
        "list_contributor_calls",
        &[("contributor_id", client.to_string().as_str())],
    );
    ok(&out);
    let calls = records(&out);
    assert!(!calls.is_empty());
    assert!(calls.iter().all(|c| c["contributor_id"] == client));
    signed(&received, "GET", &format!("/contributors/{client}/calls"));

    let id = num(&calls[0], "id");
    let (out, received) = call(
        "pozvonim",
        "get_contributor_call",
        &[
            ("contributor_id", client.to_string().as_str()),
            ("call_id", id.to_string().as_str()),
        ],
    );
    ok(&out);
    assert_eq!(num(&records(&out)[0], "id"), id);
    signed(&received, "GET", &format!("/contributors/{client}/calls/{id}"));

    // Not the account's own call.
    let (out, _) = call("pozvonim", "get_call", &[("call_id", id.to_string().as_str())]);
    fails_with(&out, &["HTTP 404"]);
}

#[test]
fn payments_move_money_to_a_client() {
    let clients = run("list_contributors", &[]);
    for (client, action, amount) in [
        (num(&clients[1], "id"), "create_contributor_payment", 100.0),
        (num(&clients[2], "id"), "create_contributor_payment_alias", 50.5),
    ] {
        let c = client.to_string();
        let before = one("get_contributor", &[("contributor_id", c.as_str())])["balance"]
            .as_f64()
            .expect("balance");
        let (out, received) = call(
            "pozvonim",
            action,
            &[
                ("contributor_id", c.as_str()),
                ("type", "1"),
                ("amount", amount.to_string().as_str()),
            ],
        );
        ok(&out);
        let paid = &records(&out)[0];
        assert_eq!(paid["amount"].as_f64(), Some(amount));
        assert_eq!(paid["contributor_id"], client);
        let path = match action {
            "create_contributor_payment" => format!("/payments/contributors/{client}"),
            _ => format!("/contributors/{client}/payments"),
        };
        let pairs = sent_params(signed(&received, "POST", &path));
        assert_eq!(param(&pairs, "type"), Some("1"));
        let after = one("get_contributor", &[("contributor_id", c.as_str())]);
        let balance = after["balance"].as_f64().expect("balance");
        assert!(
            (balance - before - amount).abs() < 1e-6,
            "{before} + {amount} != {balance}"
        );
        assert!(after["payments"].as_array().is_some_and(|p| !p.is_empty()));
    }
}

#[test]
fn site_block_errors_come_back_as_422_with_the_key() {
    let (out, _) = call(
        "pozvonim",
        "create_site",
        &[
            ("site[url]", "https://no-phone.example.ru"),
            ("managers", r#"[{"name": "Без телефона"}]"#),
        ],
    );
    fails_with(&out, &["HTTP 422", "managers[0][phone]: is required"]);

    // An update that sends one key of a day must send the whole day.
    let site = num(&run("list_sites", &[])[5], "id");
    let (out, _) = call(
        "pozvonim",
        "update_site",
        &[
            ("site_id", site.to_string().as_str()),
            ("site[url]", "https://partial.example.ru"),
            ("managers", r#"[{"phone": "+79990001122"}]"#),
            ("widget[schelude][monday][from]", "10"),
        ],
    );
    fails_with(&out, &["HTTP 422", "widget[schelude][monday][to]"]);
    assert_ne!(
        one("get_site", &[("site_id", site.to_string().as_str())])["url"],
        "https://partial.example.ru"
    );
}

#[test]
fn a_wrong_api_key_fails_the_token_request() {
    let sim = simulator("pozvonim");
    let out = common::flow()
        .args(["call", "pozvonim.list_sites"])
        .env("FLOW_POZVONIM_BASE_URL", sim.base_url())
        .env("FLOW_POZVONIM_UID", config("uid"))
        .env("FLOW_POZVONIM_API_KEY", "not-the-key")
        .output()
        .expect("flow call");
    fails_with(&out, &["HTTP 403", "sign", "/auth/token"]);
    assert!(
        !stderr(&out).contains("not-the-key"),
        "the key leaked: {}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());
}

// ------------------------------------------------- the signature rules

/// One raw HTTP/1.1 GET: the status and the JSON body.
fn http_get(addr: std::net::SocketAddr, target: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    let mut request = format!("GET {BASE_PATH}{target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("write");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read");
    let status = raw.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A Pozvonim simulator of its own with a one-second token lifetime.
fn short_lived() -> (std::net::SocketAddr, String, String) {
    let opts = flow_sandbox::Options {
        records: 3,
        token_lifetime: std::time::Duration::from_secs(1),
        ..flow_sandbox::Options::default()
    };
    let (router, config) = flow_sandbox::pozvonim::build(&opts);
    let value = |key: &str| {
        config
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
            .expect("config")
    };
    let (uid, api_key) = (value("uid"), value("api_key"));
    let addr = common::server::serve(router);
    (addr, uid, api_key)
}

#[test]
fn tokens_are_bound_to_an_address_and_expire_and_signs_are_checked() {
    let (addr, uid, api_key) = short_lived();
    let token_sign = md5_hex(format!("{api_key}uid={uid}").as_bytes());
    let (status, answer) = http_get(addr, &format!("/auth/token?uid={uid}&sign={token_sign}"), &[]);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["expire"], 1);
    let token = answer["token"].as_str().expect("token").to_owned();

    // A method a path does not take: 405 in the documented error shape.
    let (status, answer) = http_get(addr, "/contributors/1/payments", &[]);
    assert_eq!(
        (status, answer["error"]["http_code"].as_u64()),
        (405, Some(405)),
        "{answer}"
    );

    let sign = md5_hex(format!("{token}uid={uid}").as_bytes());
    let profile = format!("/profile?uid={uid}&sign={sign}");
    let (status, answer) = http_get(addr, &profile, &[]);
    assert_eq!(status, 200, "{answer}");

    // From another machine (the simulator's test-only header): rejected
    // with a status the descriptor renews on.
    let (status, answer) = http_get(addr, &profile, &[("X-Sim-Client-IP", "10.1.2.3")]);
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (401, Some("AUTH-TOKEN-IP")),
        "{answer}"
    );
    assert_eq!(answer["error"]["http_code"], 401);

    // Signed over other parameters than those sent.
    let wrong = md5_hex(format!("{token}uid={uid}&x=1").as_bytes());
    let (status, answer) = http_get(addr, &format!("/profile?uid={uid}&sign={wrong}"), &[]);
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (403, Some("AUTH-SIGN-INVALID")),
        "{answer}"
    );

    // The token request signed with something else than the API key.
    let (status, answer) = http_get(addr, &format!("/auth/token?uid={uid}&sign={sign}"), &[]);
    assert_eq!(status, 403, "{answer}");

    std::thread::sleep(std::time::Duration::from_millis(1200));
    let (status, answer) = http_get(addr, &profile, &[]);
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (401, Some("AUTH-TOKEN-EXPIRED")),
        "{answer}"
    );
}
