//! Provider descriptors against real HTTP servers on loopback: every auth
//! strategy, every paginator, errors in 200 bodies, retries, the rule that a
//! write is never sent twice, and the rate limit under concurrency. Each test
//! drives the real `flow` binary with a descriptor from a user folder.

mod common;

use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::server::{broken, serve};
use common::{stderr, stdout, Scratch};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Params = Query<HashMap<String, String>>;

/// Runs a workflow with a providers folder; returns the output.
fn run(s: &Scratch, workflow: &str) -> std::process::Output {
    let wf = s.write("wf.yaml", workflow);
    s.flow()
        .arg("--providers")
        .arg(s.path("providers"))
        .arg("run")
        .arg(&wf)
        .args(["-o", "json"])
        .output()
        .unwrap()
}

/// Writes the descriptor `provider` (named `name`), then runs a workflow
/// whose one `call` of `action` at `addr` goes into `out.jsonl`.
fn call_into_file(
    s: &Scratch,
    name: &str,
    provider: &str,
    action: &str,
    addr: std::net::SocketAddr,
) -> std::process::Output {
    s.write(&format!("providers/{name}.yaml"), provider);
    run(
        s,
        &format!(
            "name: into-file\nconnections:\n  api: {{ provider: {name}, base_url: \"http://{addr}\" }}\nsteps:\n  - id: read\n    call: api.{action}\n  - id: out\n    from: read\n    write: out.jsonl\n"
        ),
    )
}

fn report(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("no JSON report: {}{}", stdout(out), stderr(out)))
}

// ---------------------------------------------------------------- session

#[derive(Default)]
struct Session {
    logins: AtomicUsize,
    /// The token currently valid.
    valid: Mutex<String>,
    pages: Mutex<Vec<String>>,
}

async fn login(State(st): State<Arc<Session>>, Json(body): Json<Value>) -> Response {
    if body != json!({"email": "me@x.ru", "password": "pw-secret-1"}) {
        return (StatusCode::UNAUTHORIZED, Json(json!({"message": "bad credentials"}))).into_response();
    }
    let n = st.logins.fetch_add(1, Ordering::SeqCst) + 1;
    let token = format!("{n}|tok-{n}");
    *st.valid.lock().unwrap() = token.clone();
    Json(json!({"user": {"id": 1}, "token": token})).into_response()
}

async fn deals(State(st): State<Arc<Session>>, headers: HeaderMap, Query(q): Params) -> Response {
    let want = format!("Bearer {}", st.valid.lock().unwrap());
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(want.as_str()) {
        return (StatusCode::UNAUTHORIZED, Json(json!({"message": "Unauthenticated."}))).into_response();
    }
    let page: u64 = match q.get("page").and_then(|p| p.parse().ok()) {
        Some(p) => p,
        None => return (StatusCode::BAD_REQUEST, Json(json!({"message": "page is required"}))).into_response(),
    };
    st.pages
        .lock()
        .unwrap()
        .push(format!("{page}:{}", q.get("site_id").cloned().unwrap_or_default()));
    // Expire the token after page 2 so the client must log in again.
    if page == 2 {
        *st.valid.lock().unwrap() = "expired".into();
    }
    let per = 3;
    let total = 7u64;
    let records: Vec<Value> = ((page - 1) * per + 1..=(page * per).min(total))
        .map(|id| json!({"id": id, "site_id": 5}))
        .collect();
    Json(json!({"data": {"projects": records}, "last_page": 3, "total": total})).into_response()
}

/// Like `deals`, but the token expires once, after the fourth page served,
/// whatever requests are under way then.
async fn deals_expiring_once(State(st): State<Arc<Session>>, headers: HeaderMap, Query(q): Params) -> Response {
    let want = format!("Bearer {}", st.valid.lock().unwrap());
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(want.as_str()) {
        return (StatusCode::UNAUTHORIZED, Json(json!({"message": "Unauthenticated."}))).into_response();
    }
    let page: u64 = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let served = {
        let mut pages = st.pages.lock().unwrap();
        pages.push(format!("{page}:{}", q.get("site_id").cloned().unwrap_or_default()));
        pages.len()
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    if served == 4 {
        *st.valid.lock().unwrap() = "expired".into();
    }
    let records: Vec<Value> = (0..2).map(|i| json!({"id": page * 10 + i})).collect();
    Json(json!({"data": {"projects": records}, "last_page": 3, "total": 6})).into_response()
}

const SESSION: &str = r#"
name: sess
base_url: "http://127.0.0.1:0"
config:
  email: { required: true }
  password: { required: true, secret: true }
auth:
  type: session
  login: { method: POST, path: /auth/login, body: { email: "{{ config.email }}", password: "{{ config.password }}" } }
  token: $.token
  headers: { Authorization: "Bearer {{ token }}" }
# One page at a time, so the token expires between two known requests.
pagination: { type: page_number, param: page, start: 1, last_page: $.last_page, total: $.total, parallel: 1 }
actions:
  list_deals:
    path: /projects
    params:
      site_id: { type: integer, required: true }
    records: $.data.projects[*]
"#;

/// The session API with `projects` as its deals list, and a folder with its
/// descriptor and the password in `.env`.
fn session_api(projects: axum::routing::MethodRouter<Arc<Session>>) -> (Arc<Session>, std::net::SocketAddr, Scratch) {
    let st = Arc::new(Session::default());
    let addr = serve(
        Router::new()
            .route("/auth/login", post(login))
            .route("/projects", projects)
            .with_state(st.clone()),
    );
    let s = Scratch::new();
    s.write("providers/sess.yaml", SESSION);
    s.write(".env", "NEIROS_PASSWORD=pw-secret-1\n");
    (st, addr, s)
}

#[test]
fn session_login_pages_and_renews_an_expired_token() {
    let (st, addr, s) = session_api(get(deals));
    let out = run(
        &s,
        &format!(
            r#"name: deals
connections:
  crm:
    provider: sess
    base_url: "http://{addr}"
    config: {{ email: me@x.ru, password: "{{{{ secrets.NEIROS_PASSWORD }}}}" }}
steps:
  - id: deals
    call: crm.list_deals
    with: {{ site_id: 5 }}
  - id: out
    from: deals
    write: out.jsonl
"#
        ),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report(&out)["steps"]["deals"]["count"], 7);
    assert_eq!(s.lines("out.jsonl").len(), 7);
    // Page 3 was first rejected, then sent again after a second login.
    assert_eq!(st.logins.load(Ordering::SeqCst), 2);
    assert_eq!(*st.pages.lock().unwrap(), vec!["1:5", "2:5", "3:5"]);
    assert!(!format!("{}{}", stdout(&out), stderr(&out)).contains("pw-secret-1"));
}

#[test]
fn requests_refused_together_share_one_new_login() {
    let (st, addr, s) = session_api(get(deals_expiring_once));
    s.write(
        "sites.jsonl",
        &(1..=8).map(|i| format!("{{\"site\":{i}}}\n")).collect::<String>(),
    );
    let out = run(
        &s,
        &format!(
            r#"name: sites
connections:
  crm:
    provider: sess
    base_url: "http://{addr}"
    config: {{ email: me@x.ru, password: "{{{{ secrets.NEIROS_PASSWORD }}}}" }}
steps:
  - id: sites
    read: sites.jsonl
  - id: each
    for_each: sites
    concurrency: 8
    steps:
      - id: deals
        call: crm.list_deals
        with: {{ site_id: "{{{{ item.site }}}}" }}
"#
        ),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(st.pages.lock().unwrap().len(), 24, "every page of every site");
    // The first login, and one more for every request the expiry refused.
    assert_eq!(st.logins.load(Ordering::SeqCst), 2);
}

#[test]
fn bad_credentials_fail_with_the_servers_message() {
    let st = Arc::new(Session::default());
    let addr = serve(Router::new().route("/auth/login", post(login)).with_state(st));
    let s = Scratch::new();
    s.write("providers/sess.yaml", SESSION);
    let out = run(
        &s,
        &format!(
            "name: x\nconnections:\n  crm: {{ provider: sess, base_url: \"http://{addr}\", config: {{ email: me@x.ru, password: wrong-password }} }}\nsteps:\n  - id: d\n    call: crm.list_deals\n    with: {{ site_id: 1 }}\n"
        ),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("sess.login: POST http://127.0.0.1"), "{err}");
    assert!(err.contains("HTTP 401: bad credentials"), "{err}");
    assert!(!err.contains("wrong-password"), "{err}");
}

// ---------------------------------------------------------------- signed

#[derive(Default)]
struct Signed {
    tokens: AtomicUsize,
    valid: Mutex<String>,
    seen: Mutex<Vec<String>>,
}

/// What a PHP server signs: the parameters as they came on the wire, sorted
/// by top-level name only (`ksort`), nested keys left in wire order.
fn php_query(pairs: &[(String, String)], skip: &str) -> String {
    let mut kept: Vec<&(String, String)> = pairs.iter().filter(|(k, _)| k != skip).collect();
    kept.sort_by(|a, b| a.0.split('[').next().cmp(&b.0.split('[').next()));
    kept.iter()
        .map(|(k, v)| format!("{}={}", flow_core::php::urlencode(k), flow_core::php::urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn wire_pairs(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (urldecode(k), urldecode(v)))
        .collect()
}

fn param(pairs: &[(String, String)], key: &str) -> Option<String> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

async fn signed_token(State(st): State<Arc<Signed>>, RawQuery(raw): RawQuery) -> Response {
    let q = wire_pairs(&raw.unwrap_or_default());
    let want = flow_core::lua::md5_hex(format!("apikey-123{}", php_query(&q, "sign")).as_bytes());
    if param(&q, "sign") != Some(want) || param(&q, "uid").as_deref() != Some("15") {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"error": {"code": 3, "http_code": 403, "message": "wrong sign"}})),
        )
            .into_response();
    }
    let n = st.tokens.fetch_add(1, Ordering::SeqCst) + 1;
    let token = format!("token{n}");
    *st.valid.lock().unwrap() = token.clone();
    Json(json!({"token": token, "expire": 14400})).into_response()
}

fn check_sign(st: &Signed, params: &[(String, String)]) -> Option<Response> {
    let token = st.valid.lock().unwrap().clone();
    let want = flow_core::lua::md5_hex(format!("{token}{}", php_query(params, "sign")).as_bytes());
    if param(params, "sign") != Some(want) {
        return Some(
            (
                StatusCode::FORBIDDEN,
                Json(json!({"error": {"code": 4, "http_code": 403, "message": "wrong sign"}})),
            )
                .into_response(),
        );
    }
    None
}

async fn signed_list(State(st): State<Arc<Signed>>, RawQuery(raw): RawQuery) -> Response {
    let q = wire_pairs(&raw.unwrap_or_default());
    if let Some(r) = check_sign(&st, &q) {
        return r;
    }
    st.seen.lock().unwrap().push(format!("GET {}", php_query(&q, "sign")));
    // Every token is good for one call, so each call needs a fresh one.
    *st.valid.lock().unwrap() = "used".into();
    Json(json!([{"id": 1, "phone": "+79123456789"}])).into_response()
}

async fn signed_create(State(st): State<Arc<Signed>>, headers: HeaderMap, body: String) -> Response {
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/x-www-form-urlencoded")
    );
    let form = wire_pairs(&body);
    if let Some(r) = check_sign(&st, &form) {
        return r;
    }
    st.seen.lock().unwrap().push(format!("POST {body}"));
    Json(json!({"id": 77})).into_response()
}

fn urldecode(s: &str) -> String {
    let bytes = s.replace('+', " ").into_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() + 1 {
            if let Ok(b) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

const SIGNED: &str = r#"
name: signy
base_url: "http://127.0.0.1:0"
config:
  uid: { required: true }
  api_key: { required: true, secret: true }
auth:
  type: signed
  login: { method: GET, path: /auth/token, query: { uid: "{{ config.uid }}" } }
  login_secret: "{{ config.api_key }}"
  token: $.token
  params: { uid: "{{ config.uid }}" }
  renew_on: [401, 403]
actions:
  list_calls:
    path: /calls
    params:
      start_at: { type: string }
    records: $[*]
  create_site:
    method: POST
    path: /sites
    body: form
    params:
      site: { type: object, required: true }
      active: { type: boolean }
"#;

#[test]
fn signed_requests_sign_php_style_and_renew_rejected_tokens() {
    let st = Arc::new(Signed::default());
    let addr = serve(
        Router::new()
            .route("/auth/token", get(signed_token))
            .route("/calls", get(signed_list))
            .route("/sites", post(signed_create))
            .with_state(st.clone()),
    );
    let s = Scratch::new();
    s.write("providers/signy.yaml", SIGNED);
    let out = run(
        &s,
        &format!(
            r#"name: signed
connections:
  pz: {{ provider: signy, base_url: "http://{addr}", config: {{ uid: "15", api_key: apikey-123 }} }}
steps:
  - id: calls
    call: pz.list_calls
    with: {{ start_at: "2024-05-01 10:00:00" }}
  - id: again
    if: "{{{{ steps.calls.count > 0 }}}}"
    call: pz.list_calls
  - id: site
    if: "{{{{ steps.again.count > 0 }}}}"
    call: pz.create_site
    with: {{ site: {{ url: "https://шоп.рф/?a=1 b", name: "Тест ~ok" }}, active: true }}
"#
        ),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let seen = st.seen.lock().unwrap().clone();
    assert_eq!(seen[0], "GET start_at=2024-05-01+10%3A00%3A00&uid=15");
    assert_eq!(seen[1], "GET uid=15");
    assert!(
        seen[2].starts_with("POST active=1&site%5Burl%5D=https%3A%2F%2F%D1%88"),
        "{}",
        seen[2]
    );
    assert!(
        seen[2].contains("site%5Bname%5D=%D0%A2%D0%B5%D1%81%D1%82+%7Eok"),
        "{}",
        seen[2]
    );
    // Nested keys go out in the order they were written (url before name).
    assert!(
        seen[2].find("site%5Burl%5D").unwrap() < seen[2].find("site%5Bname%5D").unwrap(),
        "{}",
        seen[2]
    );
    assert!(
        seen[2].ends_with("&uid=15&sign=") || seen[2].contains("&uid=15&sign="),
        "{}",
        seen[2]
    );
    // One token for the first call, a new one after each rejection.
    assert_eq!(st.tokens.load(Ordering::SeqCst), 3);
    assert!(!stderr(&out).contains("apikey-123"));
}

#[test]
fn a_wrong_signature_is_reported() {
    let st = Arc::new(Signed::default());
    let addr = serve(Router::new().route("/auth/token", get(signed_token)).with_state(st));
    let s = Scratch::new();
    s.write("providers/signy.yaml", SIGNED);
    let out = run(
        &s,
        &format!(
            "name: x\nconnections:\n  pz: {{ provider: signy, base_url: \"http://{addr}\", config: {{ uid: \"15\", api_key: wrong-key }} }}\nsteps:\n  - id: c\n    call: pz.list_calls\n"
        ),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("HTTP 403: wrong sign"), "{}", stderr(&out));
}

// ---------------------------------------------------------------- envelope and errors in 200

#[derive(Default)]
struct Rpc {
    bodies: Mutex<Vec<Value>>,
}

async fn rpc(State(st): State<Arc<Rpc>>, Json(body): Json<Value>) -> Response {
    st.bodies.lock().unwrap().push(body.clone());
    let params = &body["params"];
    if params["token"] != "tk-9999" || params["userId"] != 42 {
        return Json(json!({"error": "Authorization failed"})).into_response();
    }
    match body["action"].as_str() {
        Some("callback.GetWidgets") => Json(json!({"widgets": [{"id": 1}, {"id": 2}]})).into_response(),
        Some("callback.CreateRequest") => {
            if params["phone"].as_str().is_some_and(|p| p.starts_with("+7")) {
                Json(json!({"requestId": 5})).into_response()
            } else {
                Json(json!({"errors": {"phone": "Неверный формат телефона"}})).into_response()
            }
        }
        _ => Json(json!({"error": "Unknown action"})).into_response(),
    }
}

const RPC: &str = r#"
name: rpc
base_url: "http://127.0.0.1:0"
config:
  token: { required: true, secret: true }
  user_id: { type: integer, required: true }
auth:
  type: static
  params: { token: "{{ config.token }}", userId: "{{ config.user_id }}" }
envelope:
  path: /api
  body: { action: "{{ action.rpc }}", params: "{{ params }}" }
errors:
  in_body:
    - { path: $.errors }
    - { path: $.error }
actions:
  list_widgets: { rpc: callback.GetWidgets, records: "$.widgets[*]" }
  create_callback:
    rpc: callback.CreateRequest
    params:
      phone: { required: true }
      widgetId: { type: integer }
"#;

#[test]
fn envelopes_carry_credentials_and_errors_in_200_bodies_are_errors() {
    let st = Arc::new(Rpc::default());
    let addr = serve(Router::new().route("/api", post(rpc)).with_state(st.clone()));
    let s = Scratch::new();
    s.write("providers/rpc.yaml", RPC);
    s.write("leads.csv", "phone\n+79123456789\n89123\n");
    let conn = format!("connections:\n  en: {{ provider: rpc, base_url: \"http://{addr}\", config: {{ token: tk-9999, user_id: \"{{{{ 42 }}}}\" }} }}\n");
    let out = run(
        &s,
        &format!(
            r#"name: rpc
{conn}steps:
  - id: widgets
    call: en.list_widgets
  - id: leads
    read: leads.csv
  - id: each
    for_each: leads
    on_error: continue
    steps:
      - id: create
        call: en.create_callback
        with: {{ phone: "{{{{ item.phone }}}}", widgetId: 1 }}
"#
        ),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let r = report(&out);
    assert_eq!(r["steps"]["widgets"]["count"], 2);
    assert_eq!(
        (
            r["steps"]["each"]["count"].as_u64(),
            r["steps"]["each"]["failed"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert!(
        stderr(&out).contains("phone: Неверный формат телефона"),
        "{}",
        stderr(&out)
    );
    // The steps run at the same time: find the widgets request among them.
    let bodies = st.bodies.lock().unwrap().clone();
    let widgets = bodies
        .iter()
        .find(|b| b["action"] == "callback.GetWidgets")
        .expect("a GetWidgets request");
    assert_eq!(
        widgets,
        &json!({"action": "callback.GetWidgets", "params": {"token": "tk-9999", "userId": 42}})
    );
    assert!(!stderr(&out).contains("tk-9999"));
}

// ---------------------------------------------------------------- paginators

#[derive(Default)]
struct Pages {
    requests: Mutex<Vec<String>>,
}

async fn offset_body(State(st): State<Arc<Pages>>, Json(b): Json<Value>) -> Json<Value> {
    let (off, lim) = (b["offset"].as_u64().unwrap_or(999), b["limit"].as_u64().unwrap_or(0));
    st.requests.lock().unwrap().push(format!("{off}/{lim}"));
    let total = 5;
    let data: Vec<Value> = (off..(off + lim).min(total)).map(|i| json!({"i": i})).collect();
    Json(json!({"data": data, "total": total}))
}

async fn offset_query(State(st): State<Arc<Pages>>, Query(q): Params) -> Json<Value> {
    let off: u64 = q["offset"].parse().unwrap();
    let count: u64 = q["count"].parse().unwrap();
    st.requests.lock().unwrap().push(format!("{off}/{count}"));
    let data: Vec<Value> = (off..(off + count).min(4)).map(|i| json!({"i": i})).collect();
    Json(json!(data))
}

async fn empty(State(st): State<Arc<Pages>>, Query(q): Params) -> Json<Value> {
    st.requests
        .lock()
        .unwrap()
        .push(format!("page={}", q.get("page").cloned().unwrap_or_default()));
    Json(json!({"data": {"projects": []}, "last_page": 0, "total": 0}))
}

async fn cursor(State(st): State<Arc<Pages>>, Query(q): Params) -> Json<Value> {
    let c = q.get("after").cloned().unwrap_or_default();
    st.requests.lock().unwrap().push(format!("after={c}"));
    match c.as_str() {
        "" => Json(json!({"items": [{"i": 1}, {"i": 2}], "next": "c2"})),
        "c2" => Json(json!({"items": [{"i": 3}], "next": null})),
        _ => Json(json!({"items": []})),
    }
}

const PAGERS: &str = r#"
name: pagers
base_url: "http://127.0.0.1:0"
actions:
  body_offset:
    method: POST
    path: /offset
    records: $.data[*]
    pagination: { type: offset, offset_param: offset, limit_param: limit, limit: 2, in: body, total: $.total }
  query_offset:
    path: /short
    records: $[*]
    pagination: { type: offset, offset_param: offset, limit_param: count, limit: 2 }
  empty_first:
    path: /empty
    records: $.data.projects[*]
    pagination: { type: page_number, param: page, start: 1, last_page: $.last_page }
  cursor:
    path: /cursor
    records: $.items[*]
    pagination: { type: cursor, param: after, next: $.next }
"#;

#[test]
fn every_paginator_finds_the_end() {
    let st = Arc::new(Pages::default());
    let addr = serve(
        Router::new()
            .route("/offset", post(offset_body))
            .route("/short", get(offset_query))
            .route("/empty", get(empty))
            .route("/cursor", get(cursor))
            .with_state(st.clone()),
    );
    let s = Scratch::new();
    s.write("providers/pagers.yaml", PAGERS);
    let mut steps = String::new();
    for a in ["body_offset", "query_offset", "empty_first", "cursor"] {
        steps.push_str(&format!("  - id: {a}\n    call: p.{a}\n"));
    }
    let out = run(
        &s,
        &format!(
            "name: pages\nconnections:\n  p: {{ provider: pagers, base_url: \"http://{addr}\" }}\nsteps:\n{steps}"
        ),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let r = report(&out);
    assert_eq!(r["steps"]["body_offset"]["count"], 5);
    assert_eq!(r["steps"]["query_offset"]["count"], 4);
    assert_eq!(r["steps"]["empty_first"]["count"], 0);
    assert_eq!(r["steps"]["cursor"]["count"], 3);
    let mut reqs = st.requests.lock().unwrap().clone();
    reqs.sort();
    // The offset without a total learns of the end from an empty page.
    assert_eq!(
        reqs,
        vec!["0/2", "0/2", "2/2", "2/2", "4/2", "4/2", "after=", "after=c2", "page=1"]
    );
}

// ---------------------------------------------------------------- retries

#[derive(Default)]
struct Flaky {
    hits: AtomicUsize,
    writes: AtomicUsize,
}

async fn flaky_read(State(st): State<Arc<Flaky>>) -> Response {
    match st.hits.fetch_add(1, Ordering::SeqCst) {
        0 => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "slow down").into_response(),
        1 | 2 => (StatusCode::BAD_GATEWAY, "upstream").into_response(),
        _ => Json(json!({"data": [{"ok": true}]})).into_response(),
    }
}

async fn flaky_write(State(st): State<Arc<Flaky>>) -> Response {
    st.writes.fetch_add(1, Ordering::SeqCst);
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"message": "try later"}))).into_response()
}

async fn not_json() -> Response {
    ([("content-type", "application/json")], "<html>oops</html>").into_response()
}

const FLAKY: &str = r#"
name: flaky
base_url: "http://127.0.0.1:0"
retry: { attempts: 4, backoff: 50ms, max_backoff: 200ms }
actions:
  list: { path: /read, records: "$.data[*]" }
  create: { method: POST, path: /write, params: { name: { in: body } } }
  broken: { path: /x, records: "$.data[*]" }
  html: { path: /html, records: "$.data[*]" }
"#;

#[test]
fn reads_are_retried_through_429_and_5xx_honouring_retry_after() {
    let st = Arc::new(Flaky::default());
    let addr = serve(Router::new().route("/read", get(flaky_read)).with_state(st.clone()));
    let s = Scratch::new();
    s.write("providers/flaky.yaml", FLAKY);
    let started = Instant::now();
    let out = run(&s, &format!("name: r\nconnections:\n  f: {{ provider: flaky, base_url: \"http://{addr}\" }}\nsteps:\n  - id: l\n    call: f.list\n"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report(&out)["steps"]["l"]["count"], 1);
    assert_eq!(st.hits.load(Ordering::SeqCst), 4);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured"
    );
}

#[test]
fn a_write_that_may_have_reached_the_server_is_not_sent_again() {
    let st = Arc::new(Flaky::default());
    let addr = serve(
        Router::new()
            .route("/write", post(flaky_write))
            .route("/html", get(not_json))
            .with_state(st.clone()),
    );
    let s = Scratch::new();
    s.write("providers/flaky.yaml", FLAKY);
    let out = run(
        &s,
        &format!("name: w\nconnections:\n  f: {{ provider: flaky, base_url: \"http://{addr}\" }}\nsteps:\n  - id: c\n    call: f.create\n    with: {{ name: x }}\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(st.writes.load(Ordering::SeqCst), 1);
    assert!(
        stderr(&out).contains("flaky.create: POST http://127.0.0.1"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("HTTP 503: try later"), "{}", stderr(&out));
    // Malformed JSON names the action and the URL.
    let out = run(&s, &format!("name: h\nconnections:\n  f: {{ provider: flaky, base_url: \"http://{addr}\" }}\nsteps:\n  - id: h\n    call: f.html\n"));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("flaky.html: GET http://") && err.contains("/html: the response is not valid JSON"),
        "{err}"
    );
    assert!(err.contains("<html>oops</html>"), "{err}");
}

#[test]
fn a_connection_reset_mid_response_is_retried_then_reported() {
    let count = Arc::new(AtomicUsize::new(0));
    let addr = broken(count.clone());
    let s = Scratch::new();
    s.write("providers/flaky.yaml", FLAKY);
    let out = run(&s, &format!("name: b\nconnections:\n  f: {{ provider: flaky, base_url: \"http://{addr}\" }}\nsteps:\n  - id: b\n    call: f.broken\n"));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(count.load(Ordering::SeqCst), 4, "a read is retried up to `attempts`");
    assert!(stderr(&out).contains("the answer broke off"), "{}", stderr(&out));
}

// ---------------------------------------------------------------- rate limit

#[derive(Default)]
struct Stamps {
    at: Mutex<Vec<Instant>>,
}

async fn stamp(State(st): State<Arc<Stamps>>) -> Json<Value> {
    st.at.lock().unwrap().push(Instant::now());
    Json(json!({"id": 1}))
}

/// No 1-second window of the sorted times holds more than `n` requests (a
/// little slack for the clock).
fn at_most_per_second(at: &[Instant], n: usize) {
    for (i, t) in at.iter().enumerate() {
        let within = at[i..]
            .iter()
            .take_while(|u| u.duration_since(*t) < Duration::from_millis(950))
            .count();
        assert!(within <= n, "{within} requests within one second");
    }
}

#[test]
fn the_rate_limit_holds_under_concurrency() {
    let st = Arc::new(Stamps::default());
    let addr = serve(Router::new().route("/leads", post(stamp)).with_state(st.clone()));
    let s = Scratch::new();
    s.write(
        "providers/limited.yaml",
        "name: limited\nbase_url: \"http://127.0.0.1:0\"\nrate_limit: { requests: 20, per: 1s }\nactions:\n  create: { method: POST, path: /leads, params: { n: { type: integer } } }\n",
    );
    let out = run(
        &s,
        &format!(
            r#"name: rl
connections:
  l: {{ provider: limited, base_url: "http://{addr}" }}
steps:
  - id: each
    for_each: "{{{{ range(30) | list }}}}"
    concurrency: 8
    steps:
      - id: c
        call: l.create
        with: {{ n: "{{{{ item }}}}" }}
"#
        ),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut at = st.at.lock().unwrap().clone();
    assert_eq!(at.len(), 30);
    at.sort();
    at_most_per_second(&at, 20);
    let span = at[29].duration_since(at[0]);
    assert!(
        span >= Duration::from_millis(1400),
        "30 requests at 20/s take at least 1.45 s; took {span:?}"
    );
}

/// A connection sets its own account's budget on a provider that has none,
/// and a budget of zero requests is refused before the run.
#[test]
fn a_connection_can_set_its_own_rate_limit() {
    let st = Arc::new(Stamps::default());
    let addr = serve(Router::new().route("/leads", post(stamp)).with_state(st.clone()));
    let s = Scratch::new();
    s.write(
        "providers/open.yaml",
        "name: open\nbase_url: \"http://127.0.0.1:0\"\nactions:\n  create: { method: POST, path: /leads, params: { n: { type: integer } } }\n",
    );
    let workflow = |limit: &str| {
        format!(
            r#"name: rl
connections:
  o: {{ provider: open, base_url: "http://{addr}", rate_limit: {limit}, parallel: 2 }}
steps:
  - id: each
    for_each: "{{{{ range(12) | list }}}}"
    concurrency: 6
    steps:
      - id: c
        call: o.create
        with: {{ n: "{{{{ item }}}}" }}
"#
        )
    };
    let out = run(&s, &workflow("{ requests: 10, per: 1s }"));
    assert!(out.status.success(), "{}", stderr(&out));
    let mut at = st.at.lock().unwrap().clone();
    assert_eq!(at.len(), 12);
    at.sort();
    at_most_per_second(&at, 10);
    let out = run(&s, &workflow("{ requests: 0, per: 1s }"));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("connections.o.rate_limit"), "{}", stderr(&out));
}

#[test]
fn flow_call_and_providers_commands() {
    let st = Arc::new(Pages::default());
    let addr = serve(Router::new().route("/cursor", get(cursor)).with_state(st));
    let s = Scratch::new();
    s.write("providers/pagers.yaml", PAGERS);
    let out = s
        .flow()
        .arg("--providers")
        .arg(s.path("providers"))
        .args(["call", "pagers.cursor"])
        .env("FLOW_PAGERS_BASE_URL", format!("http://{addr}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "{\"i\":1}\n{\"i\":2}\n{\"i\":3}\n");
    // `--base-url` comes before the environment (nothing listens on 9).
    let out = s
        .flow()
        .arg("--providers")
        .arg(s.path("providers"))
        .args(["call", "pagers.cursor", "--base-url", &format!("http://{addr}")])
        .env("FLOW_PAGERS_BASE_URL", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "{\"i\":1}\n{\"i\":2}\n{\"i\":3}\n");
    let out = s
        .flow()
        .arg("--providers")
        .arg(s.path("providers"))
        .args(["call", "pagers.cursr"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("did you mean `cursor`?"), "{}", stderr(&out));
    let out = s
        .flow()
        .arg("--providers")
        .arg(s.path("providers"))
        .args(["providers"])
        .output()
        .unwrap();
    assert!(
        stdout(&out).contains("pagers") && stdout(&out).contains("neiros"),
        "{}",
        stdout(&out)
    );
    let out = s
        .flow()
        .arg("--providers")
        .arg(s.path("providers"))
        .args(["providers", "show", "pagers", "-o", "json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["actions"]["body_offset"]["method"], "POST");
}

#[test]
fn descriptors_are_validated_with_paths() {
    let s = Scratch::new();
    let p = s.write(
        "bad.yaml",
        "name: Bad Name\nbase_url: \"{{ conf.x }}\"\nactions:\n  a:\n    path: \"/x/{{ params.id }}\"\n    records: \"$[\"\n    pagination: { type: page_numbr, param: page }\n",
    );
    let out = s.flow().arg("validate").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("actions.a.pagination.type: `page_numbr` is not one of"),
        "{err}"
    );
    assert!(err.contains("did you mean `page_number`?"), "{err}");
    let p = s.write(
        "bad2.yaml",
        "name: Bad Name\nbase_url: \"{{ conf.x }}\"\nactions:\n  a:\n    path: \"/x/{{ params.id }}\"\n    records: \"$[\"\n",
    );
    let out = s.flow().arg("validate").arg(&p).output().unwrap();
    let err = stderr(&out);
    assert!(err.contains("`Bad Name` is not a valid provider name"), "{err}");
    assert!(err.contains("base_url: `conf.x` is not defined here"), "{err}");
    assert!(err.contains("actions.a.path: the path uses `params.id`"), "{err}");
    assert!(
        err.contains("actions.a.records: `$[` is not a valid JSONPath ("),
        "{err}"
    );
    // One line each: no parser drawing.
    assert!(!err.contains("-->") && !err.contains("^---"), "{err}");
    assert!(err.contains("bad2.yaml:"), "{err}");
    let p = s.write(
        "bad3.yaml",
        "name: bad3\nbase_url: \"http://x\"\nretry: { attempts: -1 }\nactions:\n  a: { path: /a }\n",
    );
    let out = s.flow().arg("validate").arg(&p).output().unwrap();
    let err = stderr(&out);
    assert!(
        err.contains("retry.attempts: invalid type: integer `-1`, expected a whole number, 0 or more"),
        "{err}"
    );
    // Pages at once: at least one, and not a connection per page of a
    // whole listing.
    let p = s.write(
        "bad4.yaml",
        "name: bad4\nbase_url: \"http://x\"\npagination: { type: page_number, param: page, last_page: $.last, parallel: 0 }\nactions:\n  a: { path: /a, records: \"$[*]\" }\n  b:\n    path: /b\n    records: \"$[*]\"\n    pagination: { type: offset, offset_param: o, limit_param: l, limit: 10, total: $.t, parallel: 5000 }\n",
    );
    let out = s.flow().arg("validate").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("bad4.yaml:3:") && err.contains("pagination.parallel: `parallel` must be at least 1"),
        "{err}"
    );
    assert!(
        err.contains("actions.b.pagination.parallel: `parallel` is 5000: at most 64 pages go at once"),
        "{err}"
    );
}

// ---------------------------------------------------------------- parallel pages and next links

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static MOST_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

async fn slow_page(Query(q): Params) -> Json<Value> {
    let page: u64 = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(0);
    let now = IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
    MOST_IN_FLIGHT.fetch_max(now, Ordering::SeqCst);
    // Later pages answer sooner, so an unordered client would mix them up.
    tokio::time::sleep(Duration::from_millis(400 - page * 50)).await;
    IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    let records: Vec<Value> = (0..3).map(|i| json!({"page": page, "i": i})).collect();
    Json(json!({"data": records, "last_page": 6}))
}

async fn linked(headers: HeaderMap, Query(q): Params) -> Response {
    let p: u64 = q.get("p").and_then(|p| p.parse().ok()).unwrap_or(1);
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = Json(json!([{ "p": p }]));
    if p < 3 {
        let link = format!("<http://{host}/linked?p={}&x=1>; rel=\"next\"", p + 1);
        ([("link", link)], body).into_response()
    } else {
        body.into_response()
    }
}

static ONE_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static ONE_MOST_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

async fn one_page(Query(q): Params) -> Json<Value> {
    let page: u64 = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(0);
    let now = ONE_IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
    ONE_MOST_IN_FLIGHT.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    ONE_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    Json(json!({"data": [{"page": page}], "last_page": 6}))
}

#[test]
fn known_last_pages_are_fetched_at_once_and_come_out_in_order() {
    let addr = serve(
        Router::new()
            .route("/pages", get(slow_page))
            .route("/one", get(one_page))
            .route("/linked", get(linked)),
    );
    let s = Scratch::new();
    s.write(
        "providers/par.yaml",
        r#"name: par
base_url: "http://127.0.0.1:0"
actions:
  pages:
    path: /pages
    records: $.data[*]
    pagination: { type: page_number, param: page, last_page: $.last_page, parallel: 5 }
  one:
    path: /one
    records: $.data[*]
    pagination: { type: page_number, param: page, last_page: $.last_page, parallel: 1 }
  linked:
    path: /linked
    records: $[*]
    pagination: { type: next_link }
"#,
    );
    let out = run(
        &s,
        &format!(
            "name: p\nconnections:\n  p: {{ provider: par, base_url: \"http://{addr}\" }}\nsteps:\n  - id: pages\n    call: p.pages\n  - id: out\n    from: pages\n    write: out.jsonl\n  - id: linked\n    call: p.linked\n  - id: links\n    from: linked\n    write: links.jsonl\n  - id: one\n    call: p.one\n  - id: ones\n    from: one\n    write: one.jsonl\n"
        ),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let pages: Vec<u64> = s
        .lines("out.jsonl")
        .iter()
        .map(|r| r["page"].as_u64().unwrap())
        .collect();
    assert_eq!(pages, vec![1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6]);
    // Pages 2 to 6 were asked for together (the first one alone tells the last page).
    assert_eq!(MOST_IN_FLIGHT.load(Ordering::SeqCst), 5);
    let links: Vec<u64> = s
        .lines("links.jsonl")
        .iter()
        .map(|r| r["p"].as_u64().unwrap())
        .collect();
    assert_eq!(links, vec![1, 2, 3]);
    // With `parallel: 1` each page is parsed while the next one travels, but
    // only one request is ever on the wire.
    let ones: Vec<u64> = s
        .lines("one.jsonl")
        .iter()
        .map(|r| r["page"].as_u64().unwrap())
        .collect();
    assert_eq!(ones, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(ONE_MOST_IN_FLIGHT.load(Ordering::SeqCst), 1);
}

/// A listing of 100 pages, each answered 50 ms late, that counts the
/// requests in flight; it may answer one page with a 429 once.
struct Latent {
    in_flight: AtomicUsize,
    most: AtomicUsize,
    /// The page to answer with a 429 once, and when it did (or the first
    /// 429 of `cap`).
    throttle_at: Option<u64>,
    /// How many requests at once it takes: those past it get a 429.
    cap: Option<usize>,
    throttled: Mutex<Option<Instant>>,
    /// The most in flight when a request came well after the 429 (those
    /// already on their way when it came have been answered by then).
    most_after: AtomicUsize,
}

async fn latent_page(State(st): State<Arc<Latent>>, Query(q): Params) -> Response {
    let page: u64 = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(0);
    {
        let mut throttled = st.throttled.lock().unwrap();
        let over_cap = st.cap.is_some_and(|cap| st.in_flight.load(Ordering::SeqCst) >= cap);
        if over_cap {
            // Retried after the backoff, by when the others have finished.
            throttled.get_or_insert_with(Instant::now);
            return (StatusCode::TOO_MANY_REQUESTS, "slow down").into_response();
        }
        if st.throttle_at == Some(page) && throttled.is_none() {
            *throttled = Some(Instant::now());
            return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "0")], "slow down").into_response();
        }
    }
    let now = st.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    st.most.fetch_max(now, Ordering::SeqCst);
    if st
        .throttled
        .lock()
        .unwrap()
        .is_some_and(|at| at.elapsed() > Duration::from_millis(300))
    {
        st.most_after.fetch_max(now, Ordering::SeqCst);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    st.in_flight.fetch_sub(1, Ordering::SeqCst);
    Json(json!({"data": [{"page": page}], "last_page": 100})).into_response()
}

/// Reads every page of a [`Latent`] listing with the pagination's
/// `parallel` (none: the default); checks that every page came, in order.
fn latent_read(parallel: Option<usize>, throttle_at: Option<u64>, cap: Option<usize>) -> Arc<Latent> {
    let st = Arc::new(Latent {
        in_flight: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
        throttle_at,
        cap,
        throttled: Mutex::new(None),
        most_after: AtomicUsize::new(0),
    });
    let addr = serve(Router::new().route("/pages", get(latent_page)).with_state(st.clone()));
    let s = Scratch::new();
    let parallel = parallel.map(|n| format!(", parallel: {n}")).unwrap_or_default();
    let provider = format!(
        "name: latent\nbase_url: \"http://127.0.0.1:0\"\nretry: {{ attempts: 6, backoff: 20ms }}\nactions:\n  pages:\n    path: /pages\n    records: $.data[*]\n    pagination: {{ type: page_number, param: page, last_page: $.last_page{parallel} }}\n"
    );
    let out = call_into_file(&s, "latent", &provider, "pages", addr);
    assert!(out.status.success(), "{}", stderr(&out));
    let pages: Vec<u64> = s
        .lines("out.jsonl")
        .iter()
        .map(|r| r["page"].as_u64().unwrap())
        .collect();
    assert_eq!(pages, (1..=100).collect::<Vec<u64>>());
    st
}

#[test]
fn pages_of_a_slow_api_go_more_at_once_until_it_says_too_many() {
    // Answers that stay as fast with more in flight: 4 at first, then up to 8.
    let st = latent_read(None, None, None);
    let most = st.most.load(Ordering::SeqCst);
    assert!((5..=8).contains(&most), "{most} pages in flight at most");
    // A 429 halves them for the rest of the read.
    let st = latent_read(None, Some(40), None);
    assert!(st.throttled.lock().unwrap().is_some());
    let after = st.most_after.load(Ordering::SeqCst);
    assert!((1..=4).contains(&after), "{after} pages in flight after the 429");
    // A `parallel` the descriptor gives is kept as it is.
    let st = latent_read(Some(3), None, None);
    assert_eq!(st.most.load(Ordering::SeqCst), 3);
    // An API that takes 5 at once answers the pages past them with 429s,
    // all at the same moment: the 8 in flight are halved once, to 4, not
    // once per 429 (down to 1).
    let st = latent_read(Some(8), None, Some(5));
    assert!(st.throttled.lock().unwrap().is_some());
    let after = st.most_after.load(Ordering::SeqCst);
    assert_eq!(after, 4, "{after} pages in flight after the 429s");
}

#[test]
fn dry_run_prints_first_requests_and_sends_nothing() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let addr = serve(Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Json(json!({})) }
    }));
    let s = Scratch::new();
    s.write("providers/sess.yaml", SESSION);
    s.write("providers/signy.yaml", SIGNED);
    let wf = s.write(
        "wf.yaml",
        &format!(
            r#"name: dry
connections:
  crm: {{ provider: sess, base_url: "http://{addr}", config: {{ email: me@x.ru, password: pw-dry-secret }} }}
  pz: {{ provider: signy, base_url: "http://{addr}", config: {{ uid: "15", api_key: key-dry-secret }} }}
steps:
  - id: deals
    call: crm.list_deals
    with: {{ site_id: 5 }}
  - id: out
    from: deals
    write: out.jsonl
  - id: calls
    call: pz.list_calls
    with: {{ start_at: "2024-05-01" }}
"#
        ),
    );
    let out = s
        .flow()
        .arg("--providers")
        .arg(s.path("providers"))
        .arg("run")
        .arg(&wf)
        .arg("--dry-run")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "step `deals` would send:\n  GET http://{addr}/projects?site_id=5&page=1\n  Authorization: Bearer <token>"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "step `calls` would send:\n  GET http://{addr}/calls?start_at=2024-05-01&uid=15&sign="
        )),
        "{text}"
    );
    assert!(text.contains("step `out` would write 0 records to"), "{text}");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "a dry run sends nothing");
    assert!(!s.path("out.jsonl").exists());
    assert!(!text.contains("dry-secret") && !stderr(&out).contains("dry-secret"));
}

/// A page that says it is an error, after the first: the call fails with
/// the server's message, and stops fetching the pages after it.
#[test]
fn an_error_on_a_later_page_fails_the_call_and_stops_fetching() {
    async fn pages(State(seen): State<Arc<AtomicUsize>>, Query(q): Params) -> Response {
        seen.fetch_add(1, Ordering::SeqCst);
        let page: u64 = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(0);
        if page == 3 {
            return Json(json!({"status": "error", "message": "page 3 is broken"})).into_response();
        }
        if page > 3 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Json(json!({"status": "ok", "data": [{"page": page}], "last_page": 40})).into_response()
    }
    let seen = Arc::new(AtomicUsize::new(0));
    let addr = serve(Router::new().route("/items", get(pages)).with_state(seen.clone()));
    let s = Scratch::new();
    s.write(
        "providers/paged.yaml",
        "name: paged\nbase_url: \"http://127.0.0.1:0\"\nerrors:\n  in_body:\n    - { path: $.status, equals: error, message: $.message }\npagination: { type: page_number, param: page, last_page: $.last_page, parallel: 2 }\nactions:\n  list_items: { path: /items, records: \"$.data[*]\" }\n",
    );
    let wf = s.write(
        "wf.yaml",
        &format!(
            "name: p\nconnections:\n  c: {{ provider: paged, base_url: \"http://{addr}\" }}\nsteps:\n  - id: items\n    call: c.list_items\n  - id: out\n    from: items\n    write: out.jsonl\n"
        ),
    );
    let out = s
        .flow()
        .arg("--providers")
        .arg(s.path("providers"))
        .args(["run", "--no-state"])
        .arg(&wf)
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("page 3 is broken"), "{}", stderr(&out));
    // Pages in flight when page 3 was read may finish; the rest are never asked for.
    let asked = seen.load(Ordering::SeqCst);
    assert!(asked < 12, "{asked} pages were fetched");
}

/// A read that ended (an empty page before the last one the counts named,
/// or an error) returns at once: the pages still in flight are dropped, not
/// waited for.
#[test]
fn a_read_that_ended_does_not_wait_for_the_pages_still_in_flight() {
    async fn pages(Query(q): Params) -> Response {
        let page: u64 = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(0);
        match page {
            3 => return Json(json!({"data": [], "last_page": 10})).into_response(),
            4 => tokio::time::sleep(Duration::from_secs(20)).await,
            6 => return (StatusCode::BAD_REQUEST, "page 6 is refused").into_response(),
            _ => {}
        }
        Json(json!({"data": [{"page": page}], "last_page": 10})).into_response()
    }
    let addr = serve(Router::new().route("/items", get(pages)));
    let s = Scratch::new();
    let started = Instant::now();
    let out = call_into_file(
        &s,
        "paged",
        "name: paged\nbase_url: \"http://127.0.0.1:0\"\npagination: { type: page_number, param: page, last_page: $.last_page }\nactions:\n  list_items: { path: /items, records: \"$.data[*]\" }\n",
        "list_items",
        addr,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let pages: Vec<u64> = s
        .lines("out.jsonl")
        .iter()
        .map(|r| r["page"].as_u64().unwrap())
        .collect();
    assert_eq!(pages, vec![1, 2]);
    assert!(
        stderr(&out).contains("Page 3 came back empty, before page 10, the last one the answers named"),
        "{}",
        stderr(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the read waited {:?} for page 4",
        started.elapsed()
    );
}

/// While a slow step downstream holds the pages back, the requests in
/// flight are still read: an API that answers at once never times out for
/// it.
#[test]
fn a_slow_step_downstream_does_not_make_page_requests_time_out() {
    #[derive(Default)]
    struct Api {
        pages: AtomicUsize,
    }
    async fn pages(State(st): State<Arc<Api>>, Query(q): Params) -> Json<Value> {
        st.pages.fetch_add(1, Ordering::SeqCst);
        let page: u64 = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(0);
        let records: Vec<Value> = (0..2).map(|i| json!({"page": page, "i": i})).collect();
        Json(json!({"data": records, "last_page": 40}))
    }
    async fn sink() -> Json<Value> {
        tokio::time::sleep(Duration::from_millis(80)).await;
        Json(json!({"ok": true}))
    }
    let st = Arc::new(Api::default());
    let addr = serve(
        Router::new()
            .route("/items", get(pages))
            .route("/sink", post(sink))
            .with_state(st.clone()),
    );
    let s = Scratch::new();
    s.write(
        "providers/paged.yaml",
        "name: paged\nbase_url: \"http://127.0.0.1:0\"\ntimeouts: { request: 500ms }\nretry: { attempts: 1 }\npagination: { type: page_number, param: page, last_page: $.last_page }\nactions:\n  list_items: { path: /items, records: \"$.data[*]\" }\n  sink:\n    method: POST\n    path: /sink\n    params:\n      page: { type: integer, in: body }\n",
    );
    let out = run(
        &s,
        &format!(
            "name: slow\nconnections:\n  c: {{ provider: paged, base_url: \"http://{addr}\" }}\nsteps:\n  - id: items\n    call: c.list_items\n  - id: each\n    for_each: items\n    concurrency: 1\n    steps:\n      - id: put\n        call: c.sink\n        with: {{ page: \"{{{{ item.page }}}}\" }}\n"
        ),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report(&out)["steps"]["each"]["count"], json!(80), "{}", stdout(&out));
    assert_eq!(st.pages.load(Ordering::SeqCst), 40, "every page asked for once");
}

// ---------------------------------------------------------------- secrets

const LEAKY: &str = r#"
name: leaky
base_url: "http://127.0.0.1:0"
config:
  key: { required: true, secret: true }
auth:
  type: static
  query: { api_key: "{{ config.key }}" }
actions:
  echo: { path: /echo, records: "$[*]" }
  moved: { path: /moved, records: "$[*]" }
"#;

/// A key with a space, `+`, `/`, a quote and Cyrillic: each is encoded on
/// its way into a query string.
const KEY: &str = "pa ss+w/\"rd-Жж";

#[test]
fn a_secret_is_masked_encoded_and_cut_and_no_redirect_carries_it_away() {
    // Echoes the query string as it came, after 180 characters of text, so
    // the 200 characters of the body a message shows end inside the key.
    let echo = |RawQuery(raw): RawQuery| async move {
        (
            StatusCode::BAD_REQUEST,
            format!("{}{}", "x".repeat(180), raw.unwrap_or_default()),
        )
    };
    let referers = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = Arc::clone(&referers);
    let other = serve(Router::new().route(
        "/landing",
        get(move |headers: HeaderMap| async move {
            let referer = headers
                .get("referer")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            seen.lock().unwrap().push(referer.unwrap_or_default());
            Json(json!([]))
        }),
    ));
    // Another host (`localhost`, not `127.0.0.1`) on the same machine.
    let to = format!("http://localhost:{}/landing", other.port());
    let addr = serve(Router::new().route("/echo", get(echo)).route(
        "/moved",
        get(move || async move { axum::response::Redirect::temporary(&to) }),
    ));
    let s = Scratch::new();
    s.write("providers/leaky.yaml", LEAKY);
    let call = |action: &str| {
        s.flow()
            .arg("--providers")
            .arg(s.path("providers"))
            .args(["call", action, "-c"])
            .arg(format!("key={KEY}"))
            .env("FLOW_LEAKY_BASE_URL", format!("http://{addr}"))
            .output()
            .unwrap()
    };
    let out = call("leaky.echo");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    // The URL and the body both show the key URL-encoded, and the body's
    // copy is where the 200 characters end.
    assert!(
        err.contains("api_key=***") && err.contains(&format!("{}api_key=***", "x".repeat(180))),
        "{err}"
    );
    for part in ["pa+ss", "pa%20ss", "%D0%96", "ss%2Bw"] {
        assert!(!err.contains(part), "`{part}` of the key in: {err}");
    }
    let out = call("leaky.moved");
    assert!(out.status.success(), "{}", stderr(&out));
    let referers = referers.lock().unwrap();
    assert_eq!(referers.len(), 1, "the redirect was not followed");
    assert_eq!(referers[0], "", "a Referer went to the other host");
}

#[test]
fn text_parameters_of_flow_call_are_sent_as_typed() {
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = Arc::clone(&seen);
    let addr = serve(Router::new().route(
        "/items",
        get(move |RawQuery(q): RawQuery| {
            let log = Arc::clone(&log);
            async move {
                log.lock().unwrap().push(q.unwrap_or_default());
                Json(json!([]))
            }
        }),
    ));
    let s = Scratch::new();
    s.write(
        "providers/texty.yaml",
        "name: texty\nbase_url: \"http://127.0.0.1:9\"\nactions:\n  list:\n    path: /items\n    params:\n      name: { type: string, in: query }\n      n: { type: integer, in: query }\n",
    );
    for (name, n) in [("12345678901234567890123", "7"), ("1.50", "7.0"), ("1e5", "1e1")] {
        let out = s
            .flow()
            .arg("--providers")
            .arg(s.path("providers"))
            .args(["call", "texty.list", "--base-url", &format!("http://{addr}")])
            .args(["-p", &format!("name={name}"), "-p", &format!("n={n}")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // Numbers are read as numbers where the parameter is one.
    assert_eq!(
        *seen.lock().unwrap(),
        ["name=12345678901234567890123&n=7", "name=1.50&n=7", "name=1e5&n=10"]
    );
}

#[test]
fn parameters_of_the_wrong_type_are_refused_before_sending() {
    let s = Scratch::new();
    s.write(
        "providers/typed.yaml",
        "name: typed\nbase_url: \"http://127.0.0.1:9\"\nactions:\n  get_item:\n    path: \"/items/{{ params.id }}\"\n    params:\n      id: { type: integer, required: true, in: path }\n      full: { type: boolean }\n      fields: { type: array }\n      since: { type: date }\n",
    );
    let call = |params: &[&str]| {
        let mut c = s.flow();
        c.arg("--providers")
            .arg(s.path("providers"))
            .args(["call", "typed.get_item"]);
        for p in params {
            c.args(["-p", p]);
        }
        c.output().unwrap()
    };
    for (params, wanted) in [
        (
            &["id=abc"][..],
            "`id` of `typed.get_item` must be a whole number; it is \"abc\"",
        ),
        (
            &["id=7", "full=yes"][..],
            "`full` of `typed.get_item` must be true or false; it is \"yes\"",
        ),
        (
            &["id=7", "fields={\"a\":1}"][..],
            "`fields` of `typed.get_item` must be a list; it is {\"a\":1}",
        ),
        (
            &["id=5.5"][..],
            "`id` of `typed.get_item` must be a whole number; it is 5.5",
        ),
        (
            &["id=7", "since=tomorrow"][..],
            "`since` of `typed.get_item` must be a date or date-time",
        ),
    ] {
        let out = call(params);
        assert_eq!(out.status.code(), Some(2), "{params:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(wanted), "{params:?}: {}", stderr(&out));
    }
    // Text that reads as the type is taken: nothing listens, so the call
    // gets as far as the connection.
    for params in [
        &["id=7", "full=true"][..],
        &["id=5.0"][..],
        &["id=7", "since=2024-05-01"][..],
        &["id=7", "since=2024-05-01T10:00:00Z"][..],
        &["id=7", "since=2024-05-01T10:00"][..],
        &["id=7", "since="][..],
    ] {
        let out = call(params);
        assert!(
            stderr(&out).contains("127.0.0.1:9/items/"),
            "{params:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn a_base_url_that_is_no_url_is_refused_with_the_connection() {
    let s = Scratch::new();
    s.write(
        "providers/bad.yaml",
        "name: bad\nbase_url: \"not a url\"\nactions:\n  get: { path: /x }\n",
    );
    let out = run(
        &s,
        "name: w\nconnections:\n  b: { provider: bad }\nsteps:\n  - id: a\n    call: b.get\n",
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("wf.yaml:3:3: connections.b: the base URL `not a url` is not a URL"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn records_that_are_not_objects_become_value_fields() {
    let addr = serve(Router::new().route(
        "/ids",
        get(|| async { Json(json!({"data": [1, "two", null, {"id": 4}]})) }),
    ));
    let s = Scratch::new();
    let out = call_into_file(
        &s,
        "ids",
        "name: ids\nbase_url: \"http://127.0.0.1:0\"\nactions:\n  list_ids: { path: /ids, records: \"$.data[*]\" }\n",
        "list_ids",
        addr,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        s.lines("out.jsonl"),
        vec![
            json!({"value": 1}),
            json!({"value": "two"}),
            json!({"value": null}),
            json!({"id": 4})
        ]
    );
}

#[test]
fn a_script_sees_every_field_of_a_record_with_fewer_fields_than_the_one_before() {
    // The second record has the first fields of the first, and fewer: the
    // script reads and changes one of them there for the first time.
    let records = [
        json!({"id": 1, "name": "a", "x": 1}),
        json!({"id": 2, "name": "b"}),
        json!({"id": 3, "name": "c", "x": 3}),
    ];
    let page = json!({ "data": records });
    let addr = serve(Router::new().route("/deals", get(move || async move { Json(page) })));
    let s = Scratch::new();
    s.write(
        "providers/shop.yaml",
        "name: shop\nbase_url: \"http://127.0.0.1:0\"\nactions:\n  list: { path: /deals, records: \"$.data[*]\" }\n",
    );
    let lines: String = records.iter().map(|r| format!("{r}\n")).collect();
    s.write("deals.jsonl", &lines);
    s.write(
        "map.lua",
        "function transform(r)\n  if r.id == 2 then\n    r.seen = r.name\n    r.name = r.name:upper()\n  end\n  return r\nend\n",
    );
    let out = run(
        &s,
        &format!(
            "name: fewer\nconnections:\n  api: {{ provider: shop, base_url: \"http://{addr}\" }}\nsteps:\n  - id: page\n    call: api.list\n  - id: file\n    read: deals.jsonl\n  - id: map_page\n    from: page\n    lua: map.lua\n  - id: run_page\n    from: page\n    run: \"{inline}\"\n  - id: map_file\n    from: file\n    lua: map.lua\n  - {{ id: out1, from: map_page, write: out1.jsonl }}\n  - {{ id: out2, from: run_page, write: out2.jsonl }}\n  - {{ id: out3, from: map_file, write: out3.jsonl }}\n",
            inline = "function transform(r) if r.id == 2 then r.seen = r.name; r.name = r.name:upper() end return r end"
        ),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for file in ["out1.jsonl", "out2.jsonl", "out3.jsonl"] {
        assert_eq!(
            s.lines(file),
            vec![
                json!({"id": 1, "name": "a", "x": 1}),
                json!({"id": 2, "name": "B", "seen": "b"}),
                json!({"id": 3, "name": "c", "x": 3}),
            ],
            "{file}"
        );
        // Each name once: the text's field gave way to the script's.
        for line in s.read(file).lines() {
            assert_eq!(line.matches("\"name\"").count(), 1, "{file}: {line}");
        }
    }
}

#[test]
fn a_map_of_records_is_a_list_but_a_wrapper_is_refused() {
    let addr = serve(
        Router::new()
            .route(
                "/keyed",
                get(|| async { Json(json!({"17": {"id": 17}, "18": {"id": 18}})) }),
            )
            .route(
                "/wrapped",
                get(|| async { Json(json!({"status": "ok", "items": [{"id": 1}]})) }),
            ),
    );
    let provider = "name: maps\nbase_url: \"http://127.0.0.1:0\"\nactions:\n  keyed: { path: /keyed, records: \"$[*]\" }\n  wrapped: { path: /wrapped, records: \"$[*]\" }\n";
    let s = Scratch::new();
    let out = call_into_file(&s, "maps", provider, "keyed", addr);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(s.lines("out.jsonl"), vec![json!({"id": 17}), json!({"id": 18})]);
    // Each field of the wrapper would have become a record.
    let s = Scratch::new();
    let out = call_into_file(&s, "maps", provider, "wrapped", addr);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("a map at `$` where the records' list should be, and its fields are not records")
            && err.contains("check the action's `records:`"),
        "{err}"
    );
    assert!(!s.path("out.jsonl").exists() || s.read("out.jsonl").is_empty());
}

#[test]
fn a_stopped_run_sends_nothing_more_not_even_a_retry() {
    let hits = Arc::new(AtomicUsize::new(0));
    let (busy, posts, bad) = (Arc::clone(&hits), Arc::clone(&hits), Arc::clone(&hits));
    let addr = serve(
        Router::new()
            .route(
                "/bad",
                get(move || async move {
                    bad.fetch_add(1, Ordering::SeqCst);
                    (StatusCode::BAD_REQUEST, "no").into_response()
                }),
            )
            .route(
                "/busy",
                get(move || async move {
                    busy.fetch_add(1, Ordering::SeqCst);
                    (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "5")], "slow down").into_response()
                }),
            )
            .route(
                "/items",
                post(move || async move {
                    posts.fetch_add(1, Ordering::SeqCst);
                    Json(json!({"ok": true}))
                }),
            ),
    );
    let s = Scratch::new();
    s.write(
        "providers/slow.yaml",
        "name: slow\nbase_url: \"http://127.0.0.1:0\"\nrate_limit: { requests: 1, per: 3s }\nretry: { attempts: 5 }\nactions:\n  busy: { path: /busy, records: \"$[*]\" }\n  bad: { path: /bad, records: \"$[*]\" }\n  create: { method: POST, path: /items, params: { n: { type: integer } } }\n",
    );
    s.write(
        "items.jsonl",
        &(1..=10).map(|i| format!("{{\"n\":{i}}}\n")).collect::<String>(),
    );
    let cases = [
        // A read told to come back in 5 s.
        "  - id: a\n    call: api.busy\n",
        // Writes held back by the rate limit.
        "  - id: items\n    read: items.jsonl\n  - id: each\n    for_each: items\n    concurrency: 4\n    steps:\n      - id: c\n        call: api.create\n        with: { n: \"{{ item.n }}\" }\n",
        // A read the step tries again after 20 s.
        "  - id: a\n    call: api.bad\n    retry: { attempts: 3, backoff: 20s }\n",
    ];
    for steps in cases {
        hits.store(0, Ordering::SeqCst);
        s.write(
            "wf.yaml",
            &format!(
                "name: stop\nconnections:\n  api: {{ provider: slow, base_url: \"http://{addr}\" }}\nsteps:\n{steps}"
            ),
        );
        let started = Instant::now();
        let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("flow"))
            .current_dir(s.path("."))
            .env_remove("RUST_LOG")
            .arg("--providers")
            .arg(s.path("providers"))
            .args(["run", "--no-state", "wf.yaml", "-o", "json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(800));
        let sent = std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(hits.load(Ordering::SeqCst), 1, "{steps}: {}", stderr(&out));
        // What the stop kept from being sent did not fail.
        let report: Value = serde_json::from_slice(&out.stdout).expect("report");
        for (id, step) in report["steps"].as_object().into_iter().flatten() {
            assert_ne!(step["status"], "failed", "{id}: {report}");
            assert_eq!(step["failed"], 0, "{id}: {report}");
        }
    }
}

#[test]
fn a_field_a_record_lacks_leaves_its_parameter_out() {
    let bodies = Arc::new(Mutex::new(Vec::<Value>::new()));
    let seen = Arc::clone(&bodies);
    let addr = serve(Router::new().route(
        "/people",
        post(move |Json(body): Json<Value>| async move {
            seen.lock().unwrap().push(body);
            Json(json!({"ok": true}))
        }),
    ));
    let s = Scratch::new();
    s.write(
        "providers/people.yaml",
        "name: people\nbase_url: \"http://127.0.0.1:0\"\nactions:\n  create: { method: POST, path: /people, params: { name: { required: true }, email: {} } }\n",
    );
    s.write(
        "rows.jsonl",
        "{\"name\":\"Ann\",\"email\":\"ann@x.ru\",\"vip\":true}\n{\"name\":\"Bob\"}\n",
    );
    let out = run(
        &s,
        &format!(
            "name: people\nconnections:\n  api: {{ provider: people, base_url: \"http://{addr}\" }}\nsteps:\n  - id: rows\n    read: rows.jsonl\n  - id: each\n    for_each: rows\n    steps:\n      - id: c\n        call: api.create\n        with: {{ name: \"{{{{ item.name }}}}\", email: \"{{{{ item.email }}}}\" }}\n      - id: vip\n        if: \"{{{{ item.vip }}}}\"\n        call: api.create\n        with: {{ name: \"VIP {{{{ item.name }}}}\" }}\n"
        ),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut bodies = bodies.lock().unwrap().clone();
    bodies.sort_by_key(|b| b["name"].as_str().unwrap_or("").to_owned());
    assert_eq!(
        bodies,
        vec![
            json!({"name": "Ann", "email": "ann@x.ru"}),
            json!({"name": "Bob"}),
            json!({"name": "VIP Ann"}),
        ]
    );
}

#[test]
fn a_failed_for_each_reports_what_its_items_counted() {
    let addr = serve(Router::new().route(
        "/items",
        post(|| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            (StatusCode::SERVICE_UNAVAILABLE, "down").into_response()
        }),
    ));
    let s = Scratch::new();
    s.write(
        "providers/down.yaml",
        "name: down\nbase_url: \"http://127.0.0.1:0\"\nactions:\n  create: { method: POST, path: /items, params: { n: { type: integer } } }\n",
    );
    s.write(
        "items.jsonl",
        &(1..=8).map(|i| format!("{{\"n\":{i}}}\n")).collect::<String>(),
    );
    let out = run(
        &s,
        &format!(
            "name: down\nconnections:\n  api: {{ provider: down, base_url: \"http://{addr}\" }}\nsteps:\n  - id: items\n    read: items.jsonl\n  - id: each\n    for_each: items\n    concurrency: 4\n    steps:\n      - id: c\n        call: api.create\n        key: \"{{{{ item.n }}}}\"\n        with: {{ n: \"{{{{ item.n }}}}\" }}\n"
        ),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let each = &report(&out)["steps"]["each"];
    let uncertain = each["uncertain"].as_u64().unwrap_or(0);
    // Every item in flight when the first failed was a 503: each write may
    // have been applied, and the store says as many.
    assert!(uncertain >= 1 && each["failed"].as_u64() == Some(uncertain), "{each}");
    assert!(each["steps"]["c"].is_object(), "{each}");
    let shown = s
        .flow()
        .args(["state", "show", "wf.yaml", "-o", "json"])
        .output()
        .unwrap();
    let shown: Value = serde_json::from_slice(&shown.stdout).expect("state");
    assert_eq!(shown["writes"][0]["uncertain"].as_u64(), Some(uncertain), "{shown}");
}

static OFFSET_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static OFFSET_MOST_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// 17 records, 3 a page, with their total; later pages answer sooner.
async fn slow_offset(Query(q): Params) -> Json<Value> {
    let offset: u64 = q.get("offset").and_then(|p| p.parse().ok()).unwrap_or(0);
    let now = OFFSET_IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
    OFFSET_MOST_IN_FLIGHT.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300 - offset * 10)).await;
    OFFSET_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    let records: Vec<Value> = (offset..(offset + 3).min(17)).map(|i| json!({"i": i})).collect();
    Json(json!({"data": records, "total": 17}))
}

#[test]
fn offset_pages_after_a_known_total_are_fetched_at_once_in_order() {
    let addr = serve(Router::new().route("/rows", get(slow_offset)));
    let s = Scratch::new();
    let out = call_into_file(
        &s,
        "offs",
        "name: offs\nbase_url: \"http://127.0.0.1:0\"\nactions:\n  rows:\n    path: /rows\n    records: $.data[*]\n    pagination: { type: offset, offset_param: offset, limit_param: count, limit: 3, total: $.total }\n",
        "rows",
        addr,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let got: Vec<u64> = s.lines("out.jsonl").iter().filter_map(|r| r["i"].as_u64()).collect();
    assert_eq!(got, (0..17).collect::<Vec<_>>(), "every record once, in order");
    assert_eq!(
        OFFSET_MOST_IN_FLIGHT.load(Ordering::SeqCst),
        4,
        "four pages at once by default"
    );
}

/// Ten records, three a page, behind answers whose counts mean what their
/// documents leave unclear: `last_page` as the page just answered, or as
/// the last page; `total` as the records of the page, or of the listing.
#[derive(Default)]
struct Misstated {
    requests: Mutex<Vec<String>>,
}

async fn misstated(State(st): State<Arc<Misstated>>, RawQuery(q): RawQuery, Query(p): Params) -> Json<Value> {
    st.requests.lock().unwrap().push(q.unwrap_or_default());
    let n = |k: &str| p.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let (from, page) = match p.get("offset") {
        Some(_) => (n("offset"), 0),
        None => ((n("page") - 1) * 3, n("page")),
    };
    // `capped`: the API sends at most two a page, whatever it is asked;
    // `shrinking`: three on the first page, then two.
    let size = match p.get("reading").map(String::as_str) {
        Some("capped") => 2,
        Some("shrinking") if from > 0 => 2,
        _ => 3,
    };
    let rows: Vec<Value> = (from..(from + size).min(10)).map(|i| json!({"i": i})).collect();
    match p.get("reading").map(String::as_str) {
        Some("inflated") => return Json(json!({"data": rows, "last_page": 1_000_000})),
        Some("broken") if page == 2 => return Json(json!({"maintenance": true})),
        Some("none") => return Json(json!({"data": null})),
        _ => {}
    }
    let last_page = if p.get("reading").is_some_and(|r| r == "current") {
        page
    } else {
        4
    };
    let total = if p.get("reading").is_some_and(|r| r == "current") {
        rows.len()
    } else {
        10
    };
    Json(json!({"data": rows, "last_page": last_page, "total": total}))
}

#[test]
fn a_listing_whose_counts_may_mislead_ends_only_at_an_empty_page_with_confirm_end() {
    let st = Arc::new(Misstated::default());
    let addr = serve(Router::new().route("/rows", get(misstated)).with_state(Arc::clone(&st)));
    let s = Scratch::new();
    let provider = |pagination: &str, reading: &str| {
        format!(
            "name: mis\nbase_url: \"http://127.0.0.1:0\"\nactions:\n  rows:\n    path: /rows\n    params: {{ reading: {{ default: {reading}, in: query }} }}\n    records: $.data[*]\n    pagination: {pagination}\n"
        )
    };
    let pages = "{ type: page_number, param: page, last_page: $.last_page";
    let offsets = "{ type: offset, offset_param: offset, limit_param: count, limit: 3, total: $.total";
    let read = |pagination: String, reading: &str| {
        st.requests.lock().unwrap().clear();
        let out = call_into_file(&s, "mis", &provider(&pagination, reading), "rows", addr);
        assert!(out.status.success(), "{}", stderr(&out));
        let got: Vec<u64> = s.lines("out.jsonl").iter().filter_map(|r| r["i"].as_u64()).collect();
        (got, st.requests.lock().unwrap().len())
    };
    let all: Vec<u64> = (0..10).collect();

    // `last_page` meaning the page just answered: read as the last page,
    // the listing stops after page 1; confirmed, it is read to the end.
    assert_eq!(read(format!("{pages} }}"), "current").0, vec![0, 1, 2]);
    assert_eq!(
        read(format!("{pages}, confirm_end: true }}"), "current"),
        (all.clone(), 5)
    );
    // Meaning the last page: four pages fetched ahead, in order, and one
    // more request that comes back empty.
    let (got, requests) = read(format!("{pages}, confirm_end: true }}"), "last");
    assert_eq!((got, requests), (all.clone(), 5));
    assert!(st.requests.lock().unwrap().iter().any(|q| q.contains("page=5")));

    // `total` counting the page's records, then the listing's.
    assert_eq!(read(format!("{offsets} }}"), "current").0, vec![0, 1, 2]);
    assert_eq!(
        read(format!("{offsets}, confirm_end: true }}"), "current"),
        (all.clone(), 5)
    );
    assert_eq!(
        read(format!("{offsets}, confirm_end: true }}"), "last"),
        (all.clone(), 5)
    );
    // Pages shorter than the limit before the total: the offsets go by
    // what came, one page at a time (fetched at once by the limit, they
    // skipped records), and the total ends the read.
    assert_eq!(read(format!("{offsets} }}"), "capped"), (all.clone(), 5));
    assert_eq!(
        read(format!("{offsets}, confirm_end: true }}"), "capped"),
        (all.clone(), 6)
    );
    // The first page full, the next ones (fetched at once) short: the read
    // goes on one page at a time from right after the first short one.
    assert_eq!(read(format!("{offsets} }}"), "shrinking").0, all);

    // A last page far beyond the data: the first empty page ends the read.
    let (got, requests) = read(format!("{pages} }}"), "inflated");
    assert_eq!(got, all);
    // (A few more may be under way when it comes back, not a million.)
    assert!(requests < 40, "{requests} requests");

    // A page that holds no list is no empty page: the read fails rather
    // than end there and drop the pages after it.
    // A first answer like that is an empty listing.
    assert_eq!(read(format!("{pages} }}"), "none"), (vec![], 1));
    let out = call_into_file(
        &s,
        "mis",
        &provider(&format!("{pages}, parallel: 1 }}"), "broken"),
        "rows",
        addr,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the answer has no `$.data`, where the records' list should be"),
        "{}",
        stderr(&out)
    );
}

async fn partial(Query(p): Params) -> Response {
    let status = p.get("status").and_then(|s| s.parse().ok()).unwrap_or(200);
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        Json(json!({"error": {"message": "partial content is an error here"}, "id": 1})),
    )
        .into_response()
}

#[test]
fn a_2xx_status_the_api_counts_as_an_error_fails_the_call() {
    let addr = serve(Router::new().route("/item", get(partial)));
    let s = Scratch::new();
    let provider = |success: &str, status: u16| {
        format!(
            "name: strict\nbase_url: \"http://127.0.0.1:0\"\nerrors: {{ message: [$.error.message]{success} }}\nactions:\n  item:\n    path: /item\n    params: {{ status: {{ type: integer, default: {status} }} }}\n"
        )
    };
    let listed = ", success: [200, 201, 202, 204]";
    let out = call_into_file(&s, "strict", &provider(listed, 203), "item", addr);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("HTTP 203: partial content is an error here"),
        "{}",
        stderr(&out)
    );
    // Listed, or with no list, it is an answer.
    let out = call_into_file(&s, "strict", &provider(listed, 202), "item", addr);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = call_into_file(&s, "strict", &provider("", 203), "item", addr);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A list page that never ends.
async fn endless() -> Response {
    use futures::StreamExt;
    let head = futures::stream::once(async { Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b"{\"data\":[")) });
    let rows = futures::stream::repeat_with(|| Ok(axum::body::Bytes::from_static(b"{\"a\":1},")));
    axum::body::Body::from_stream(head.chain(rows)).into_response()
}

#[test]
fn an_answer_that_never_ends_stops_at_max_answer() {
    let addr = serve(Router::new().route("/rows", get(endless)));
    let s = Scratch::new();
    let out = call_into_file(
        &s,
        "endless",
        "name: endless\nbase_url: \"http://127.0.0.1:0\"\nmax_answer: 64KiB\nretry: { attempts: 1 }\nactions:\n  rows:\n    path: /rows\n    records: $.data[*]\n",
        "rows",
        addr,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the answer is larger than 64 KiB (the descriptor's `max_answer`)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_item_that_passed_records_on_is_not_tried_again() {
    // Two pages of records per item; page 2 fails the first time it is
    // asked for. A second attempt would pass page 1's records on again.
    let failed_once = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&failed_once);
    let addr = serve(Router::new().route(
        "/rows",
        get(move |Query(q): Params| {
            let seen = Arc::clone(&seen);
            async move {
                let page: u64 = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
                if page == 2 && seen.fetch_add(1, Ordering::SeqCst) == 0 {
                    return (StatusCode::BAD_GATEWAY, "down").into_response();
                }
                let rows: Vec<Value> = (0..2).map(|i| json!({"page": page, "i": i})).collect();
                Json(json!({"data": rows, "last_page": 2})).into_response()
            }
        }),
    ));
    let s = Scratch::new();
    s.write(
        "providers/paged.yaml",
        "name: paged\nbase_url: \"http://127.0.0.1:0\"\nretry: { attempts: 1 }\nactions:\n  rows:\n    path: /rows\n    records: $.data[*]\n    pagination: { type: page_number, param: page, last_page: $.last_page, parallel: 1 }\n",
    );
    s.write("items.jsonl", "{\"n\":1}\n");
    let out = run(
        &s,
        &format!(
            "name: once\nconnections:\n  api: {{ provider: paged, base_url: \"http://{addr}\" }}\nsteps:\n  - id: items\n    read: items.jsonl\n  - id: each\n    for_each: items\n    retry: {{ attempts: 3, backoff: 10ms }}\n    on_error: continue\n    steps:\n      - id: rows\n        call: api.rows\n  - id: out\n    from: each\n    write: out.jsonl\n"
        ),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let got: Vec<(u64, u64)> = s
        .lines("out.jsonl")
        .iter()
        .map(|r| (r["page"].as_u64().unwrap(), r["i"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        got,
        [(1, 0), (1, 1)],
        "page 1 went on once, and the item was not tried again"
    );
    assert_eq!(report(&out)["steps"]["each"]["failed"], 1);
    assert!(stderr(&out).contains("Not trying the item again"), "{}", stderr(&out));
}

#[test]
fn a_resumed_offset_read_whose_pages_came_short_loses_no_record() {
    // Ten records, two a page whatever the limit (three) says; the write of
    // record 7 is refused the first time.
    let taken = Arc::new(Mutex::new(Vec::<u64>::new()));
    let log = Arc::clone(&taken);
    let refused = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route(
            "/rows",
            get(|Query(q): Params| async move {
                let from: u64 = q.get("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
                let rows: Vec<Value> = (from..(from + 2).min(10)).map(|i| json!({"i": i})).collect();
                Json(json!({"data": rows, "total": 10}))
            }),
        )
        .route(
            "/take",
            post(move |Json(b): Json<Value>| {
                let (log, refused) = (Arc::clone(&log), Arc::clone(&refused));
                async move {
                    let i = b["i"].as_u64().unwrap_or(0);
                    if i == 7 && refused.fetch_add(1, Ordering::SeqCst) == 0 {
                        return (StatusCode::BAD_REQUEST, "no").into_response();
                    }
                    log.lock().unwrap().push(i);
                    Json(json!({"ok": true})).into_response()
                }
            }),
        );
    let addr = serve(app);
    let s = Scratch::new();
    s.write(
        "providers/short.yaml",
        "name: short\nbase_url: \"http://127.0.0.1:0\"\nactions:\n  rows:\n    path: /rows\n    records: $.data[*]\n    pagination: { type: offset, offset_param: offset, limit_param: count, limit: 3, total: $.total }\n  take:\n    method: POST\n    path: /take\n    params: { i: { type: integer, in: body } }\n",
    );
    let wf = s.write(
        "wf.yaml",
        &format!(
            "name: short\nconnections:\n  api: {{ provider: short, base_url: \"http://{addr}\" }}\nsteps:\n  - id: rows\n    call: api.rows\n  - id: each\n    for_each: rows\n    steps:\n      - id: take\n        call: api.take\n        key: \"{{{{ item.i }}}}\"\n        with: {{ i: \"{{{{ item.i }}}}\" }}\n"
        ),
    );
    let flow = |extra: &[&str]| {
        s.flow()
            .arg("--providers")
            .arg(s.path("providers"))
            .arg("run")
            .arg(&wf)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = flow(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = flow(&["--resume"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut got = taken.lock().unwrap().clone();
    got.sort_unstable();
    assert_eq!(got, (0..10).collect::<Vec<_>>(), "every record taken once");
}
