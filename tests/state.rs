//! Durable runs against real HTTP servers on loopback: incremental cursors,
//! writes that happen once across re-runs, uncertain writes, the run
//! history, and resuming after the process is killed with SIGKILL.

mod common;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use common::server::serve;
use common::{stderr, stdout, Scratch};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Params = Query<HashMap<String, String>>;

/// A CRM with a list of calls (filtered by `since`, paged) and a lead
/// endpoint that records every create it applies.
#[derive(Default)]
struct Crm {
    calls: Mutex<Vec<Value>>,
    /// The `since` of every list request.
    since: Mutex<Vec<String>>,
    /// Lead creates applied, by phone.
    leads: Mutex<BTreeMap<String, u32>>,
    /// Creates that repeated an idempotency key already applied.
    replays: Mutex<u32>,
    keys: Mutex<std::collections::HashSet<String>>,
    /// Phones whose create is applied but answered later than the client waits.
    slow: Mutex<Vec<String>>,
    /// How long each create takes.
    delay: Mutex<Duration>,
    /// Every list page asked for, in order.
    pages: Mutex<Vec<usize>>,
    /// A phone whose create is refused with a 400.
    refused_phone: Mutex<Option<String>>,
}

const PER_PAGE: usize = 20;

async fn list_calls(State(st): State<Arc<Crm>>, Query(q): Params) -> Response {
    let since = q.get("since").cloned().unwrap_or_default();
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(0);
    if page == 0 {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "page is required"}))).into_response();
    }
    if page == 1 {
        st.since.lock().unwrap().push(since.clone());
    }
    st.pages.lock().unwrap().push(page);
    let matching: Vec<Value> = st
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| since.is_empty() || c["at"].as_str().unwrap_or("") >= since.as_str())
        .cloned()
        .collect();
    let last = matching.len().div_ceil(PER_PAGE).max(1);
    let rows: Vec<Value> = matching
        .into_iter()
        .skip((page - 1) * PER_PAGE)
        .take(PER_PAGE)
        .collect();
    Json(json!({"data": rows, "last_page": last})).into_response()
}

async fn create_lead(State(st): State<Arc<Crm>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let phone = body["phone"].as_str().unwrap_or("").to_owned();
    let delay = *st.delay.lock().unwrap();
    let slow = st.slow.lock().unwrap().contains(&phone);
    if st.refused_phone.lock().unwrap().as_deref() == Some(phone.as_str()) {
        // (Words of a timeout in a refusal do not make it one.)
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "phone is blocked: verification timed out"})),
        )
            .into_response();
    }
    tokio::time::sleep(delay).await;
    if let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()) {
        if !st.keys.lock().unwrap().insert(key.to_owned()) {
            *st.replays.lock().unwrap() += 1;
            return Json(json!({"status": "ok", "replayed": true})).into_response();
        }
    }
    *st.leads.lock().unwrap().entry(phone).or_default() += 1;
    if slow {
        // Applied, but the answer comes after the client has given up.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Json(json!({"status": "ok"})).into_response()
}

fn crm() -> (Arc<Crm>, std::net::SocketAddr) {
    let st = Arc::new(Crm::default());
    let addr = serve(
        Router::new()
            .route("/calls", get(list_calls))
            .route("/leads", axum::routing::post(create_lead))
            .with_state(st.clone()),
    );
    (st, addr)
}

fn call_at(i: usize) -> Value {
    let minutes = i * 7;
    json!({
        "id": i,
        "phone": format!("+7999{:07}", i),
        "at": format!("2024-05-{:02} {:02}:{:02}:00", 1 + minutes / 1440, (minutes / 60) % 24, minutes % 60),
    })
}

const PROVIDER: &str = r#"
name: crm
base_url: "http://127.0.0.1:0"
idempotency_header: Idempotency-Key
timeouts: { request: 500ms }
retry: { attempts: 2, backoff: 10ms }
pagination: { type: page_number, param: page, start: 1, last_page: $.last_page, parallel: 1 }
actions:
  list_calls:
    path: /calls
    params:
      since: { type: date }
    records: $.data[*]
  create_lead:
    method: POST
    path: /leads
    params:
      phone: { type: string, required: true }
"#;

/// The same API without idempotency keys.
fn provider_without_keys() -> String {
    PROVIDER.replace("idempotency_header: Idempotency-Key\n", "")
}

fn workflow(addr: std::net::SocketAddr, lookback: &str, concurrency: usize) -> String {
    format!(
        r#"name: calls-to-leads
connections:
  crm: {{ provider: crm, base_url: "http://{addr}" }}
steps:
  - id: calls
    call: crm.list_calls
    cursor: {{ field: at, param: since, initial: "2024-05-01 00:00:00"{lookback} }}
  - id: leads
    for_each: calls
    concurrency: {concurrency}
    steps:
      - id: lead
        call: crm.create_lead
        key: "{{{{ item.phone }}}}"
        with: {{ phone: "{{{{ item.phone }}}}" }}
"#
    )
}

fn flow_in(s: &Scratch) -> assert_cmd::Command {
    let mut c = s.flow();
    c.arg("--providers").arg(s.path("providers"));
    c
}

fn run(s: &Scratch, extra: &[&str]) -> (Value, std::process::Output) {
    let out = flow_in(s)
        .args(["run", "wf.yaml", "-o", "json"])
        .args(extra)
        .output()
        .expect("flow");
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("no JSON report: {}{}", stdout(&out), stderr(&out)));
    (report, out)
}

#[test]
fn cursors_fetch_only_new_records_and_move_only_after_success() {
    let (st, addr) = crm();
    st.calls.lock().unwrap().extend((0..30).map(call_at));
    let s = Scratch::new();
    s.write("providers/crm.yaml", PROVIDER);
    s.write("wf.yaml", &workflow(addr, "", 2));

    let (r1, out) = run(&s, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(r1["steps"]["calls"]["count"], 30);
    assert_eq!(r1["steps"]["leads"]["count"], 30);
    let last = call_at(29)["at"].as_str().unwrap().to_owned();

    // Three new calls; the next run asks from the last one it saw.
    st.calls.lock().unwrap().extend((30..33).map(call_at));
    let (r2, out) = run(&s, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        st.since.lock().unwrap().clone(),
        vec!["2024-05-01 00:00:00".to_owned(), last.clone()]
    );
    // The last call again (the API's `since` is inclusive) and three new.
    assert_eq!(r2["steps"]["calls"]["count"], 4);
    assert_eq!(r2["steps"]["leads"]["skipped"], 1, "{r2}");
    assert_eq!(st.leads.lock().unwrap().len(), 33);
    assert!(st.leads.lock().unwrap().values().all(|n| *n == 1));

    // `flow state show` prints the cursor; a failed run does not move it.
    let shown = flow_in(&s).args(["state", "show", "wf.yaml"]).output().unwrap();
    let newest = call_at(32)["at"].as_str().unwrap().to_owned();
    assert!(stdout(&shown).contains(&newest), "{}", stdout(&shown));
    st.calls.lock().unwrap().push(call_at(33));
    s.write(
        "wf.yaml",
        &format!(
            "{}  - id: boom\n    from: calls\n    run: |\n      function transform(r) error('downstream broke') end\n",
            workflow(addr, "", 2)
        ),
    );
    let (r3, out) = run(&s, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(r3["status"], "failed");
    s.write("wf.yaml", &workflow(addr, ", lookback: 1h", 2));
    let (_, out) = run(&s, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let since = st.since.lock().unwrap().clone();
    assert_eq!(since[2], newest, "the failed run started from the saved cursor");
    // Lookback: an hour before the saved cursor, in the API's own format.
    let an_hour_before = {
        let t = chrono::NaiveDateTime::parse_from_str(&newest, "%Y-%m-%d %H:%M:%S").unwrap();
        (t - chrono::Duration::hours(1)).format("%Y-%m-%d %H:%M:%S").to_string()
    };
    assert_eq!(since[3], an_hour_before, "the failed run did not move the cursor");

    // Reset rewinds to the initial value.
    // A step the workflow does not have is an error, not a reset of nothing.
    let reset = flow_in(&s)
        .args(["state", "reset", "wf.yaml", "--step", "cals"])
        .output()
        .unwrap();
    assert_eq!(reset.status.code(), Some(2), "{}", stderr(&reset));
    assert!(
        stderr(&reset).contains("has no step `cals`; its steps are `calls`, `leads`, `lead`"),
        "{}",
        stderr(&reset)
    );
    let reset = flow_in(&s).args(["state", "reset", "wf.yaml"]).output().unwrap();
    assert!(stdout(&reset).contains("1 cursor(s) rewound"), "{}", stdout(&reset));
    let (r5, _) = run(&s, &[]);
    assert_eq!(st.since.lock().unwrap().last().unwrap(), "2024-05-01 00:00:00");
    assert_eq!(r5["steps"]["leads"]["skipped"], 34, "every lead was sent before: {r5}");
    assert!(st.leads.lock().unwrap().values().all(|n| *n == 1));

    // A step that fails under `on_error: continue` lets the run succeed,
    // but it did not handle the records: the cursor stays.
    st.calls.lock().unwrap().push(call_at(34));
    s.write(
        "wf.yaml",
        &format!(
            "{}  - id: out\n    from: calls\n    write: wf.yaml/out.jsonl\n    on_error: continue\n",
            workflow(addr, "", 2)
        ),
    );
    let (r6, out) = run(&s, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(r6["steps"]["out"]["status"], "failed", "{r6}");
    s.write("wf.yaml", &workflow(addr, "", 2));
    let (_, out) = run(&s, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let since = st.since.lock().unwrap().clone();
    assert_eq!(
        since[since.len() - 1],
        call_at(33)["at"].as_str().unwrap(),
        "the cursor moved past records a failed step never wrote"
    );

    // Nor when an item of a `for_each` failed under `on_error: continue`
    // and no step reads its rejects: that call is still to be sent.
    let refused = call_at(35)["phone"].as_str().unwrap().to_owned();
    *st.refused_phone.lock().unwrap() = Some(refused);
    st.calls.lock().unwrap().push(call_at(35));
    s.write(
        "wf.yaml",
        &workflow(addr, "", 2).replace("    concurrency: 2\n", "    concurrency: 2\n    on_error: continue\n"),
    );
    let (r7, out) = run(&s, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(r7["steps"]["leads"]["failed"], 1, "{r7}");
    *st.refused_phone.lock().unwrap() = None;
    let (_, out) = run(&s, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let since = st.since.lock().unwrap().clone();
    assert_eq!(since[since.len() - 1], call_at(34)["at"].as_str().unwrap());
    assert_eq!(st.leads.lock().unwrap().len(), 36, "the refused call was sent at last");

    // Nor when a step inside the items failed under `on_error: continue`
    // while they went on.
    st.calls.lock().unwrap().push(call_at(36));
    s.write(
        "wf.yaml",
        &format!(
            "{}      - id: log\n        from: item\n        write: wf.yaml/log.jsonl\n        on_error: continue\n",
            workflow(addr, "", 2)
        ),
    );
    let (r8, out) = run(&s, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(r8["steps"]["leads"]["failed"], 0, "{r8}");
    s.write("wf.yaml", &workflow(addr, "", 2));
    let (_, out) = run(&s, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let since = st.since.lock().unwrap().clone();
    assert_eq!(since[since.len() - 1], call_at(35)["at"].as_str().unwrap());

    // Failed items whose rejects a step writes are handled: the cursor
    // moves; not when that step was skipped.
    let refused = call_at(37)["phone"].as_str().unwrap().to_owned();
    *st.refused_phone.lock().unwrap() = Some(refused);
    st.calls.lock().unwrap().push(call_at(37));
    for (cond, moved) in [("false", false), ("true", true)] {
        s.write(
            "wf.yaml",
            &format!(
                "{}  - id: rej\n    from: leads.rejected\n    if: \"{{{{ {cond} }}}}\"\n    write: rej.jsonl\n",
                workflow(addr, "", 2).replace("    concurrency: 2\n", "    concurrency: 2\n    on_error: continue\n")
            ),
        );
        let (r, out) = run(&s, &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(r["steps"]["leads"]["failed"], 1, "{r}");
        let before = st.since.lock().unwrap().len();
        s.write(
            "wf.yaml",
            &workflow(addr, "", 2).replace("    concurrency: 2\n", "    concurrency: 2\n    on_error: continue\n"),
        );
        let _ = run(&s, &[]);
        let since = st.since.lock().unwrap().clone();
        assert_eq!(since.len(), before + 1);
        let want = if moved { call_at(37) } else { call_at(36) };
        assert_eq!(
            since[since.len() - 1],
            want["at"].as_str().unwrap(),
            "reader `if: {cond}`"
        );
    }
}

#[test]
fn a_write_whose_outcome_is_unknown_is_never_sent_again() {
    let (st, addr) = crm();
    st.calls.lock().unwrap().extend((0..5).map(call_at));
    let slow_phone = call_at(2)["phone"].as_str().unwrap().to_owned();
    st.slow.lock().unwrap().push(slow_phone.clone());
    let s = Scratch::new();
    // Without idempotency keys the API cannot tell a repeat: the timed-out
    // create must not be sent again.
    s.write("providers/crm.yaml", &provider_without_keys());
    s.write(
        "wf.yaml",
        &workflow(addr, "", 1).replace("    concurrency: 1\n", "    concurrency: 1\n    on_error: continue\n"),
    );
    let (r1, out) = run(&s, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(r1["steps"]["leads"]["failed"], 1, "{r1}");
    // The item failed because its write is now uncertain: counted as both.
    assert_eq!(r1["steps"]["leads"]["uncertain"], 1, "{r1}");
    let err = r1["steps"]["leads"]["steps"]["lead"]["error"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(err.contains("uncertain"), "{err}");

    st.slow.lock().unwrap().clear();
    // Read everything again (the cursor moved past it), keys kept.
    let reset = flow_in(&s).args(["state", "reset", "wf.yaml"]).output().unwrap();
    assert!(
        stdout(&reset).contains("0 write key(s) forgotten"),
        "{}",
        stdout(&reset)
    );
    let (r2, out) = run(&s, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(r2["steps"]["leads"]["uncertain"], 1, "{r2}");
    assert_eq!(r2["steps"]["leads"]["skipped"], 4, "{r2}");
    // The server applied it once, though the client never heard; never twice.
    assert_eq!(st.leads.lock().unwrap().get(&slow_phone), Some(&1));

    let shown = flow_in(&s).args(["state", "show", "wf.yaml"]).output().unwrap();
    assert!(stdout(&shown).contains("4 done, 1 uncertain"), "{}", stdout(&shown));

    // Checked in the API and found missing: forget that write only.
    st.leads.lock().unwrap().remove(&slow_phone);
    let reset = flow_in(&s)
        .args(["state", "reset", "wf.yaml", "--uncertain"])
        .output()
        .unwrap();
    assert!(
        stdout(&reset).contains("1 write key(s) forgotten"),
        "{}",
        stdout(&reset)
    );
    let (r3, out) = run(&s, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(r3["steps"]["leads"]["skipped"], 4, "{r3}");
    assert_eq!(r3["steps"]["leads"]["uncertain"], 0, "{r3}");
    let leads = st.leads.lock().unwrap();
    assert_eq!(leads.len(), 5);
    assert!(leads.values().all(|&n| n == 1), "{leads:?}");
}

#[test]
fn an_empty_key_fails_its_item_rather_than_share_one_write() {
    // The key as the field alone, and with a prefix (`lead-null`, `lead-`
    // would be shared too).
    for key in ["{{ item.phone }}", "lead-{{ item.phone }}"] {
        let (st, addr) = crm();
        let mut calls: Vec<Value> = (0..4).map(call_at).collect();
        calls[1]["phone"] = Value::Null;
        calls[2]["phone"] = json!("");
        calls[3]["phone"] = json!(" ");
        st.calls.lock().unwrap().extend(calls);
        let s = Scratch::new();
        s.write("providers/crm.yaml", PROVIDER);
        s.write(
            "wf.yaml",
            &workflow(addr, "", 1)
                .replace("    concurrency: 1\n", "    concurrency: 1\n    on_error: continue\n")
                .replace("key: \"{{ item.phone }}\"", &format!("key: \"{key}\"")),
        );
        assert!(s.read("wf.yaml").contains(&format!("key: \"{key}\"")));
        let (r, out) = run(&s, &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(r["steps"]["leads"]["failed"], 3, "{key}: {r}");
        assert_eq!(r["steps"]["leads"]["skipped"], 0, "{key}: {r}");
        assert_eq!(st.leads.lock().unwrap().len(), 1);
        assert!(
            stderr(&out).contains("has an empty part for this item"),
            "{}",
            stderr(&out)
        );
    }
    // A key whose blocks pick another part when a field is empty is judged
    // as a whole.
    let (st, addr) = crm();
    let mut calls: Vec<Value> = (0..2).map(call_at).collect();
    calls[1]["phone"] = json!("");
    st.calls.lock().unwrap().extend(calls);
    let s = Scratch::new();
    s.write("providers/crm.yaml", PROVIDER);
    let key = "{% if item.phone %}{{ item.phone }}{% else %}at-{{ item.at }}{% endif %}";
    s.write(
        "wf.yaml",
        &workflow(addr, "", 1).replace("key: \"{{ item.phone }}\"", &format!("key: \"{key}\"")),
    );
    assert!(s.read("wf.yaml").contains(key));
    let (r, out) = run(&s, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(r["steps"]["leads"]["failed"], 0, "{r}");
}

#[test]
fn two_runs_at_once_and_repeated_keys_send_each_write_once() {
    let (st, addr) = crm();
    // Every call twice: two records of one run with one key.
    st.calls.lock().unwrap().extend((0..80).map(|i| call_at(i / 2)));
    *st.delay.lock().unwrap() = Duration::from_millis(10);
    let s = Scratch::new();
    s.write("providers/crm.yaml", &provider_without_keys());
    s.write("wf.yaml", &workflow(addr, "", 4));
    // Two runs of one workflow on one store, started together.
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("flow"));
            c.current_dir(s.path("."))
                .env_remove("RUST_LOG")
                .arg("--providers")
                .arg(s.path("providers"))
                .args(["run", "wf.yaml", "-o", "json"]);
            c.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("flow")
        })
        .collect();
    for run in runs {
        let out = run.wait_with_output().expect("flow");
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let leads = st.leads.lock().unwrap();
    assert_eq!(leads.len(), 40, "{leads:?}");
    assert!(leads.values().all(|&n| n == 1), "sent twice: {leads:?}");
}

#[test]
fn run_history_lists_and_shows_runs() {
    let (st, addr) = crm();
    st.calls.lock().unwrap().extend((0..3).map(call_at));
    let s = Scratch::new();
    s.write("providers/crm.yaml", PROVIDER);
    s.write("wf.yaml", &workflow(addr, "", 1));
    let (r1, _) = run(&s, &[]);
    let (r2, _) = run(&s, &[]);
    let id = r2["run_id"].as_str().expect("run id").to_owned();
    assert_ne!(r1["run_id"], r2["run_id"]);
    assert!(s.path(".flow/state.db").exists());

    let list = flow_in(&s)
        .args(["runs", "--workflow", "wf.yaml", "-o", "json"])
        .output()
        .unwrap();
    let runs: Vec<Value> = serde_json::from_slice(&list.stdout).expect("JSON list");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["id"], id.as_str(), "newest first");
    assert!(runs.iter().all(|r| r["status"] == "succeeded"));

    let show = flow_in(&s)
        .args(["runs", "show", &id[..id.len() - 2]])
        .output()
        .unwrap();
    let text = stdout(&show);
    assert!(show.status.success(), "{}", stderr(&show));
    assert!(text.contains("succeeded") && text.contains("leads"), "{text}");
    // The second run read from the last call it had seen: one, done before.
    assert!(text.contains("1 skipped"), "{text}");

    let missing = flow_in(&s).args(["runs", "show", "nope"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("no run `nope`"));

    // Where nothing ran, there is no history, and asking creates none.
    let empty = Scratch::new();
    let none = empty.flow().args(["runs"]).output().unwrap();
    assert_eq!(none.status.code(), Some(2));
    assert!(stderr(&none).contains("no runs recorded"), "{}", stderr(&none));
    assert!(!empty.path(".flow").exists());

    // Nothing failed, so there is nothing to resume.
    // (`--resume` before the file is the flag, not a run id.)
    let out = flow_in(&s).args(["run", "--resume", "wf.yaml"]).output().unwrap();
    assert!(stderr(&out).contains("nothing to resume"), "{}", stderr(&out));
    let out = flow_in(&s).args(["run", "wf.yaml", "--resume"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("nothing to resume"), "{}", stderr(&out));
}

/// Stops a run with SIGINT and SIGTERM: the creates under way finish and are
/// recorded, the run ends `interrupted` with 128 + the signal's number, no
/// write is left uncertain, and `--resume` creates the rest once.
#[test]
fn a_signal_stops_a_run_after_the_writes_under_way() {
    let (st, addr) = crm();
    st.calls.lock().unwrap().extend((0..60).map(call_at));
    *st.delay.lock().unwrap() = Duration::from_millis(100);
    let s = Scratch::new();
    // Without idempotency keys: a write cut off would be left uncertain.
    s.write("providers/crm.yaml", &provider_without_keys());
    s.write("wf.yaml", &workflow(addr, "", 2));
    let bin = assert_cmd::cargo::cargo_bin("flow");
    for (signal, code) in [("-INT", 130), ("-TERM", 143)] {
        let mut cmd = std::process::Command::new(&bin);
        cmd.current_dir(s.dir.path())
            .env_remove("RUST_LOG")
            .arg("--providers")
            .arg(s.path("providers"))
            .args(["run", "wf.yaml", "-o", "json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if signal == "-TERM" {
            cmd.arg("--resume");
        }
        let child = cmd.spawn().expect("spawn flow");
        std::thread::sleep(Duration::from_millis(700));
        let sent = std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success());
        let out = child.wait_with_output().expect("flow");
        assert_eq!(out.status.code(), Some(code), "{}", stderr(&out));
        let report: Value = serde_json::from_slice(&out.stdout).expect("report");
        assert_eq!(report["status"], "interrupted", "{report}");
        assert_eq!(report["steps"]["leads"]["uncertain"], 0, "{report}");
        assert!(
            stderr(&out).contains("stopping once the requests under way"),
            "{}",
            stderr(&out)
        );
    }
    let created: u32 = st.leads.lock().unwrap().values().sum();
    assert!(created > 0 && created < 60, "{created} created before the stops");
    let runs = flow_in(&s).args(["runs", "-o", "json"]).output().unwrap();
    let runs: Value = serde_json::from_slice(&runs.stdout).expect("runs");
    assert!(
        runs.as_array()
            .is_some_and(|r| r.iter().all(|r| r["status"] == "interrupted")),
        "{runs}"
    );
    let (report, out) = run(&s, &["--resume"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report["status"], "succeeded", "{report}");
    let leads = st.leads.lock().unwrap();
    assert_eq!(leads.len(), 60);
    assert!(leads.values().all(|&n| n == 1), "sent twice: {leads:?}");
}

/// Kills `flow` with SIGKILL at random moments of a long run, resumes, and
/// checks on the server that every lead was created exactly once.
#[test]
fn killed_runs_resume_and_write_every_record_exactly_once() {
    use rand::Rng;
    let (st, addr) = crm();
    let total = 1000;
    st.calls.lock().unwrap().extend((0..total).map(call_at));
    *st.delay.lock().unwrap() = Duration::from_millis(5);
    let s = Scratch::new();
    s.write("providers/crm.yaml", PROVIDER);
    s.write("wf.yaml", &workflow(addr, "", 4));
    let bin = assert_cmd::cargo::cargo_bin("flow");
    let mut rng = rand::rng();
    let mut kills = 0;
    let mut finished = None;
    let mut runs = 0;
    for attempt in 0..12 {
        runs += 1;
        let mut cmd = std::process::Command::new(&bin);
        cmd.current_dir(s.dir.path())
            .arg("--providers")
            .arg(s.path("providers"))
            .args(["run", "wf.yaml", "-o", "json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        if attempt > 0 {
            cmd.arg("--resume");
        }
        let mut child = cmd.spawn().expect("spawn flow");
        if kills < 4 {
            std::thread::sleep(Duration::from_millis(rng.random_range(150..400)));
            if child.try_wait().expect("wait").is_none() {
                child.kill().expect("SIGKILL");
                child.wait().expect("reap");
                kills += 1;
                continue;
            }
        }
        let out = child.wait_with_output().expect("flow");
        if out.status.success() {
            finished = Some(serde_json::from_slice::<Value>(&out.stdout).expect("report"));
            break;
        }
    }
    let report = finished.expect("a run finished");
    assert!(kills >= 2, "the run was killed mid-way at least twice ({kills})");
    let leads = st.leads.lock().unwrap().clone();
    assert_eq!(leads.len(), total, "nothing lost");
    let twice: Vec<_> = leads.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "nothing duplicated: {twice:?}");
    // Resumed runs read on after the pages handled before each kill and
    // skip completed writes of the pages after by their keys; only writes in
    // flight at a kill (at most the concurrency each time) were sent again,
    // and the API applied those once thanks to the idempotency key.
    assert_eq!(report["status"], "succeeded", "{report}");
    let from_page_one = st.since.lock().unwrap().len();
    assert!(
        from_page_one < runs,
        "some resumed run read on after a checkpoint ({from_page_one} of {runs} runs read page 1)"
    );
    assert!(
        *st.replays.lock().unwrap() <= kills * 4,
        "replays {}",
        st.replays.lock().unwrap()
    );

    // The history knows the killed runs as interrupted, and the last run
    // resumed one.
    let list = flow_in(&s)
        .args(["runs", "--workflow", "wf.yaml", "-o", "json"])
        .output()
        .unwrap();
    let runs: Vec<Value> = serde_json::from_slice(&list.stdout).expect("JSON list");
    let interrupted = runs.iter().filter(|r| r["status"] == "interrupted").count();
    assert_eq!(interrupted as u32, kills, "{runs:#?}");
    assert!(runs[0]["resumed_from"].is_string(), "{:#?}", runs[0]);
}

/// Ten pages of calls whose 151st write (page 8) the API refuses: `wf` runs
/// once and fails there. Returns the run's id and the run as `runs show`
/// gives it.
fn run_refused_on_page_8(st: &Crm, s: &Scratch, wf: &str) -> (String, Value) {
    st.calls.lock().unwrap().extend((0..10 * PER_PAGE).map(call_at));
    *st.refused_phone.lock().unwrap() = Some(call_at(150)["phone"].as_str().unwrap().to_owned());
    s.write("providers/crm.yaml", PROVIDER);
    s.write("wf.yaml", wf);
    let (r1, out) = run(s, &[]);
    assert!(!out.status.success(), "{r1}");
    assert_eq!(st.leads.lock().unwrap().len(), 150, "{r1}");
    let id = r1["run_id"].as_str().expect("run id").to_owned();
    let shown = flow_in(s).args(["runs", "show", &id, "-o", "json"]).output().unwrap();
    (id, serde_json::from_slice(&shown.stdout).expect("JSON run"))
}

/// Lets the refused write through and resumes the last run, which writes
/// every call once in all. Returns its report and the pages it asked for.
fn resume_with_every_write_let_through(st: &Crm, s: &Scratch) -> (Value, Vec<usize>) {
    st.refused_phone.lock().unwrap().take();
    st.pages.lock().unwrap().clear();
    let (report, out) = run(s, &["--resume"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let leads = st.leads.lock().unwrap().clone();
    assert_eq!(leads.len(), 10 * PER_PAGE, "nothing lost");
    assert!(leads.values().all(|n| *n == 1), "nothing duplicated");
    (report, st.pages.lock().unwrap().clone())
}

#[test]
fn a_resumed_run_reads_on_after_the_pages_it_had_handled() {
    let (st, addr) = crm();
    let s = Scratch::new();
    let (id, shown) = run_refused_on_page_8(&st, &s, &workflow(addr, "", 1));
    let checkpoint = &shown["checkpoints"][0];
    assert_eq!(checkpoint["step"], "calls", "{shown}");
    assert_eq!(checkpoint["pages"], 7, "{shown}");
    // The latest cursor value of the handled pages, not of pages read ahead.
    assert_eq!(checkpoint["cursor"], "\"2024-05-01 16:13:00\"", "{shown}");

    // The API lets the phone through now; the resumed run starts at page 8,
    // the first one with a record not yet handled.
    let (r2, pages) = resume_with_every_write_let_through(&st, &s);
    assert_eq!(pages.first(), Some(&8), "{pages:?}");
    assert!(pages.iter().all(|p| *p >= 8), "{pages:?}");
    // Page 8's first ten writes had completed: skipped by their keys.
    assert_eq!(r2["steps"]["leads"]["skipped"], 10, "{r2}");
    assert_eq!(r2["steps"]["leads"]["count"], 60, "{r2}");

    // The cursor has moved since: resuming the first run again reads a new
    // window, so its checkpoint no longer applies.
    st.pages.lock().unwrap().clear();
    let (r3, out) = run(&s, &[&format!("--resume={id}")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(st.pages.lock().unwrap().first(), Some(&1), "{r3}");
}

/// `workflow` with a Lua step between the read and the writes, slower than
/// the read: the pages after the one it maps are there when it is done.
fn workflow_through_a_script(addr: std::net::SocketAddr) -> String {
    let script = "function transform(r) for _ = 1, 20000 do end r.tel, r.phone = r.phone, nil return r end";
    let wf = workflow(addr, "", 1)
        .replace(
            "  - id: leads\n    for_each: calls\n",
            &format!("  - id: mapped\n    from: calls\n    lua: {{ inline: \"{script}\" }}\n  - id: leads\n    for_each: mapped\n"),
        )
        .replace("item.phone", "item.tel");
    assert!(wf.contains("for_each: mapped") && wf.contains("item.tel"), "{wf}");
    wf
}

#[test]
fn a_resumed_run_reads_on_after_the_pages_a_script_and_the_writes_after_it_handled() {
    let (st, addr) = crm();
    let s = Scratch::new();
    let (_, shown) = run_refused_on_page_8(&st, &s, &workflow_through_a_script(addr));
    // Each page's records went through the script on their own: the seven
    // pages whose every record was written count, none more.
    assert_eq!(shown["checkpoints"][0]["pages"], 7, "{shown}");
    let (report, pages) = resume_with_every_write_let_through(&st, &s);
    assert_eq!(pages.first(), Some(&8), "{report}");
}

#[test]
fn small_pages_through_a_script_arrive_whole_and_in_order() {
    let (st, addr) = crm();
    let total = 60 * PER_PAGE;
    st.calls.lock().unwrap().extend((0..total).map(call_at));
    let s = Scratch::new();
    s.write("providers/crm.yaml", PROVIDER);
    // Without state no page marks tie records to their pages: the script,
    // slower than the read, sends its output of several pages as one batch.
    s.write(
        "wf.yaml",
        &format!(
            r#"name: calls
connections:
  crm: {{ provider: crm, base_url: "http://{addr}" }}
steps:
  - id: calls
    call: crm.list_calls
  - id: mapped
    from: calls
    lua: {{ inline: "function transform(r) for _ = 1, 20000 do end r.n = r.id * 2 return r end" }}
  - id: out
    from: mapped
    write: out.jsonl
"#
        ),
    );
    let (report, out) = run(&s, &["--no-state"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report["steps"]["out"]["count"], total, "{report}");
    let written: Vec<Value> = s
        .read("out.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let ids: Vec<u64> = written.iter().map(|r| r["id"].as_u64().expect("id")).collect();
    assert_eq!(ids, (0..total as u64).collect::<Vec<_>>());
    assert!(written.iter().all(|r| r["n"] == json!(r["id"].as_u64().unwrap() * 2)));
}

#[test]
fn reads_into_a_file_start_over_when_resumed() {
    // A file is committed whole when its step ends, so none of its pages
    // count as handled before then, not even by the writes of a step that
    // reads what the file step passes on: a resumed run reads from the start.
    let (st, addr) = crm();
    st.calls.lock().unwrap().extend((0..5 * PER_PAGE).map(call_at));
    // The write of the 71st call (page 4) is refused: the run fails there,
    // with the writes of pages 1 to 3 done.
    *st.refused_phone.lock().unwrap() = Some(call_at(70)["phone"].as_str().unwrap().to_owned());
    let s = Scratch::new();
    s.write("providers/crm.yaml", PROVIDER);
    s.write(
        "wf.yaml",
        &format!(
            r#"name: calls-to-file
connections:
  crm: {{ provider: crm, base_url: "http://{addr}" }}
steps:
  - id: calls
    call: crm.list_calls
  - id: save
    from: calls
    write: {{ path: calls.jsonl }}
  - id: leads
    for_each: save
    steps:
      - id: lead
        call: crm.create_lead
        key: "{{{{ item.phone }}}}"
        with: {{ phone: "{{{{ item.phone }}}}" }}
"#
        ),
    );
    let (r1, out) = run(&s, &[]);
    assert!(!out.status.success(), "{r1}");
    assert_eq!(st.leads.lock().unwrap().len(), 70, "{r1}");
    st.refused_phone.lock().unwrap().take();
    st.pages.lock().unwrap().clear();
    let (r2, out) = run(&s, &["--resume"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(st.pages.lock().unwrap().first(), Some(&1), "{r2}");
    assert_eq!(r2["steps"]["save"]["count"], 5 * PER_PAGE, "{r2}");
    let lines = std::fs::read_to_string(s.path("calls.jsonl")).unwrap().lines().count();
    assert_eq!(lines, 5 * PER_PAGE);
    let leads = st.leads.lock().unwrap().clone();
    assert_eq!(leads.len(), 5 * PER_PAGE);
    assert!(leads.values().all(|n| *n == 1), "nothing duplicated");
}

#[test]
fn a_retried_item_never_sends_again_a_write_that_may_have_been_applied() {
    let (st, addr) = crm();
    st.calls.lock().unwrap().extend((0..2).map(call_at));
    let slow_phone = call_at(0)["phone"].as_str().unwrap().to_owned();
    st.slow.lock().unwrap().push(slow_phone.clone());
    let s = Scratch::new();
    s.write("providers/crm.yaml", &provider_without_keys());
    let retried = |wf: String| {
        wf.replace(
            "    concurrency: 1\n",
            "    concurrency: 1\n    retry: { attempts: 3, backoff: 10ms }\n",
        )
    };

    // No key: the create times out after it was applied; trying the item
    // again would apply it again.
    s.write(
        "wf.yaml",
        &retried(workflow(addr, "", 1)).replace("        key: \"{{ item.phone }}\"\n", ""),
    );
    let (r, out) = run(&s, &["--no-state"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(st.leads.lock().unwrap().get(&slow_phone), Some(&1), "{r}");
    assert!(stderr(&out).contains("Not trying the item again"), "{}", stderr(&out));

    // With a key, the item's own timeout drops the create under way: the
    // key is recorded as uncertain, the retry does not send it, and the
    // report says so rather than counting it as done before.
    st.leads.lock().unwrap().clear();
    s.write(
        "wf.yaml",
        &retried(workflow(addr, "", 1)).replace("    concurrency: 1\n", "    concurrency: 1\n    timeout: 300ms\n"),
    );
    let (r, out) = run(&s, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(st.leads.lock().unwrap().get(&slow_phone), Some(&1), "{r}");
    assert_eq!(r["steps"]["leads"]["uncertain"], 1, "{r}");
    assert_eq!(r["steps"]["leads"]["skipped"], 0, "{r}");
    let shown = flow_in(&s).args(["state", "show", "wf.yaml"]).output().unwrap();
    assert!(stdout(&shown).contains("1 done, 1 uncertain"), "{}", stdout(&shown));

    // Without a retry the item fails, and says what became of its write.
    st.leads.lock().unwrap().clear();
    let reset = flow_in(&s)
        .args(["state", "reset", "wf.yaml", "--keys"])
        .output()
        .unwrap();
    assert!(reset.status.success(), "{}", stderr(&reset));
    s.write(
        "wf.yaml",
        &workflow(addr, "", 1).replace(
            "    concurrency: 1\n",
            "    concurrency: 1\n    timeout: 300ms\n    on_error: continue\n",
        ),
    );
    let (r, out) = run(&s, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(st.leads.lock().unwrap().get(&slow_phone), Some(&1), "{r}");
    assert_eq!(r["steps"]["leads"]["uncertain"], 1, "{r}");
    assert_eq!(r["steps"]["leads"]["failed"], 1, "{r}");
    let lead = &r["steps"]["leads"]["steps"]["lead"];
    assert_ne!(lead["status"], "running", "{r}");
    assert!(
        stderr(&out).contains("timed out after 300ms; a write under way may have reached the server"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_item_that_times_out_reports_the_uncertain_writes_of_the_items_inside_it() {
    let (st, addr) = crm();
    st.calls.lock().unwrap().extend((0..1).map(call_at));
    let slow_phone = call_at(0)["phone"].as_str().unwrap().to_owned();
    st.slow.lock().unwrap().push(slow_phone.clone());
    let s = Scratch::new();
    s.write("providers/crm.yaml", &provider_without_keys());
    // The write sits in a `for_each` inside the item that times out.
    let nested = workflow(addr, "", 1)
        .replace(
            "    steps:\n      - id: lead\n",
            "    timeout: 300ms\n    on_error: continue\n    steps:\n      - id: inner\n        for_each: \"{{ [item] }}\"\n        steps:\n          - id: lead\n",
        )
        .replace("        call: crm.create_lead\n", "            call: crm.create_lead\n")
        .replace("        key: \"{{ item.phone }}\"\n", "            key: \"{{ item.phone }}\"\n")
        .replace("        with: { phone", "            with: { phone");
    s.write("wf.yaml", &nested);
    let (r, out) = run(&s, &[]);
    assert!(out.status.success(), "{}\n{nested}", stderr(&out));
    assert_eq!(st.leads.lock().unwrap().get(&slow_phone), Some(&1), "{r}");
    assert_eq!(r["steps"]["leads"]["uncertain"], 1, "{r}");
    assert_eq!(r["steps"]["leads"]["failed"], 1, "{r}");
    assert!(
        stderr(&out)
            .contains("timed out after 300ms; a write under way may have reached the server (recorded as uncertain"),
        "{}",
        stderr(&out)
    );
    let shown = flow_in(&s).args(["state", "show", "wf.yaml"]).output().unwrap();
    assert!(stdout(&shown).contains("0 done, 1 uncertain"), "{}", stdout(&shown));
}

#[test]
fn a_step_timeout_leaves_a_write_uncertain_and_a_refusal_does_not() {
    let (st, addr) = crm();
    st.calls.lock().unwrap().extend((0..2).map(call_at));
    let slow_phone = call_at(0)["phone"].as_str().unwrap().to_owned();
    st.slow.lock().unwrap().push(slow_phone.clone());
    *st.refused_phone.lock().unwrap() = Some(call_at(1)["phone"].as_str().unwrap().to_owned());
    let s = Scratch::new();
    // A request timeout longer than the step's own.
    s.write(
        "providers/crm.yaml",
        &provider_without_keys().replace("request: 500ms", "request: 10s"),
    );
    s.write(
        "wf.yaml",
        &workflow(addr, "", 1)
            .replace("    concurrency: 1\n", "    concurrency: 1\n    on_error: continue\n")
            .replace(
                "        call: crm.create_lead\n",
                "        call: crm.create_lead\n        timeout: 300ms\n",
            ),
    );
    let (r, out) = run(&s, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(r["steps"]["leads"]["uncertain"], 1, "{r}");
    assert_eq!(r["steps"]["leads"]["failed"], 2, "{r}");
    let shown = flow_in(&s).args(["state", "show", "wf.yaml"]).output().unwrap();
    assert!(stdout(&shown).contains("0 done, 1 uncertain"), "{}", stdout(&shown));
    assert!(
        stderr(&out).contains("timed out after 300ms; the request may have reached the server"),
        "{}",
        stderr(&out)
    );
}
