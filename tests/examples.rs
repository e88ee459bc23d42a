//! The example workflows in `workflows/`, run by the real `flow` binary
//! against the bundled simulators, checked on what the simulators received.

mod common;

use common::sandbox::{call, records, simulators};
use common::{repo, stderr, stdout, Scratch};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

/// The examples write to the same simulators: one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// `flow [global] run workflows/<name>.yaml [args]` with every connection
/// pointed at the test's simulators (see [`run_example`]), writing to `out`.
fn example(name: &str, out: &Scratch, args: &[&str]) -> assert_cmd::Command {
    let mut cmd = common::flow();
    cmd.current_dir(repo())
        .env("OUT_DIR", out.dir.path())
        .env("FLOW_STATE", out.path("state.db"))
        .args(["run", &format!("workflows/{name}.yaml")])
        .args(args);
    for s in simulators() {
        let up = s.provider.to_ascii_uppercase();
        cmd.env(format!("FLOW_{up}_BASE_URL"), s.base_url());
        for (k, v) in &s.config {
            cmd.env(format!("{up}_{}", k.to_ascii_uppercase()), v);
        }
    }
    cmd
}

/// `flow run --output json workflows/<name>.yaml` with every connection
/// pointed at the test's simulators: base URLs through `FLOW_<P>_BASE_URL`,
/// credentials through the `<PROVIDER>_<KEY>` variables the examples read.
/// Returns the JSON report and the requests each simulator received.
fn run_example(name: &str, out: &Scratch) -> (Value, BTreeMap<&'static str, Vec<flow_sandbox::Received>>) {
    let before: Vec<usize> = simulators().iter().map(|s| s.journal.all().len()).collect();
    let output = example(name, out, &["--output", "json"]).output().expect("flow run");
    assert!(output.status.success(), "{}{}", stdout(&output), stderr(&output));
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    let received = simulators()
        .iter()
        .zip(before)
        .map(|(s, n)| (s.provider, s.journal.all()[n..].to_vec()))
        .collect();
    (report, received)
}

fn output(report: &Value, name: &str) -> u64 {
    let v = &report["outputs"][name];
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("output `{name}` in {report}"))
}

fn list(provider: &str, action: &str, params: &[(&str, &str)]) -> Vec<Value> {
    let (out, _) = call(provider, action, params);
    assert!(out.status.success(), "{}", stderr(&out));
    records(&out)
}

/// The JSON bodies of the requests to a path.
fn bodies(received: &[flow_sandbox::Received], path: &str) -> Vec<Value> {
    received
        .iter()
        .filter(|r| r.path == path)
        .map(|r| serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body)))
        .collect()
}

/// Digits of a phone as +7XXXXXXXXXX.
fn phone(v: &Value) -> String {
    let digits: String = v
        .as_str()
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    format!("+7{}", &digits[digits.len() - 10..])
}

fn csv_rows(path: &std::path::Path) -> Vec<BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    r.deserialize().map(|row| row.expect("csv row")).collect()
}

#[test]
fn calls_to_roistat_creates_one_lead_per_phone() {
    let _serial = serial();
    let mut want: BTreeSet<String> = list("pozvonim", "list_calls", &[("start_at", "2024-01-01 00:00:00")])
        .iter()
        .map(|c| phone(&c["client"]))
        .collect();
    let callbacks = list(
        "eyenewton",
        "list_call_records",
        &[("requestDateFrom", "2024-01-01 00:00:00")],
    );
    want.extend(callbacks.iter().map(|c| phone(&c["clientPhone"])));

    let out = Scratch::new();
    let (report, received) = run_example("calls-to-roistat", &out);
    let created = bodies(
        &received["roistat"],
        &format!("{}/project/leads/lead/create", flow_sandbox::roistat::BASE_PATH),
    );
    let phones: Vec<String> = created
        .iter()
        .map(|l| l["phone"].as_str().unwrap_or("").to_owned())
        .collect();
    let unique: BTreeSet<String> = phones.iter().cloned().collect();
    assert_eq!(unique.len(), phones.len(), "a phone was sent twice: {phones:?}");
    assert_eq!(unique, want, "one lead per phone of the calls and callback requests");
    assert!(
        want.len() < 50,
        "the simulators share callers, so some are deduplicated"
    );
    assert_eq!(output(&report, "leads"), want.len() as u64);
    assert_eq!(output(&report, "rejected"), 0);
    for lead in &created {
        assert_eq!(lead["status"], "0", "{lead}");
        assert!(lead["title"].as_str().is_some_and(|t| !t.is_empty()), "{lead}");
        let date = lead["creation_date"].as_str().unwrap_or("");
        assert!(date.starts_with("2024-") && date.ends_with("+0000"), "{lead}");
    }
    // The Roistat simulator keeps them: they show up in its list.
    let listed = list(
        "roistat",
        "list_leads",
        &[
            (
                "period",
                r#"{"from":"2024-01-01T00:00:00.000Z","to":"2024-12-31T23:59:59.000Z"}"#,
            ),
            ("sort_field", "creation_date"),
        ],
    );
    let listed: BTreeSet<String> = listed
        .iter()
        .filter_map(|l| l["phone"].as_str().map(str::to_owned))
        .collect();
    assert!(want.is_subset(&listed));
}

#[test]
fn project_payments_set_deal_sums_and_report_conversions() {
    let _serial = serial();
    let out = Scratch::new();
    let (report, received) = run_example("project-payments", &out);
    let projects = output(&report, "projects");
    assert!(projects > 0);

    // Every updated deal got the sum of its project's receipts.
    let updates: Vec<&flow_sandbox::Received> = received["neiros"]
        .iter()
        .filter(|r| r.path.ends_with("/update"))
        .collect();
    assert_eq!(updates.len() as u64, output(&report, "deals_updated"));
    assert_eq!(updates.len() as u64, projects);
    let solos_projects = list("solos", "filter_projects", &[("having", "payments")]);
    let first = &solos_projects[0];
    let id = first["id"].to_string();
    let receipts: i64 = list(
        "solos",
        "list_project_payments",
        &[("id", &id), ("filter_type", "\"1\"")],
    )
    .iter()
    .map(|p| p["sum"].as_i64().unwrap_or(0))
    .sum();
    let deal = &first["data"]["neiros_deal_id"];
    let update = updates
        .iter()
        .find(|r| r.path.ends_with(&format!("/project/{deal}/update")))
        .unwrap_or_else(|| panic!("no update of deal {deal}"));
    let body: Value = serde_json::from_str(&update.body).expect("JSON body");
    assert_eq!(body["summ"], receipts, "{body}");
    assert_eq!(body["site_id"], first["data"]["neiros_site_id"], "{body}");
    let (out_deal, _) = call(
        "neiros",
        "get_deal",
        &[
            ("id", &deal.to_string()),
            ("site_id", &first["data"]["neiros_site_id"].to_string()),
        ],
    );
    assert_eq!(records(&out_deal)[0]["summ"], receipts);

    // Conversions for the clients EyeNewton knows; the rest are rejects.
    let conversions = output(&report, "conversions");
    let rejected = output(&report, "rejected");
    assert!(conversions > 0 && rejected > 0, "{report}");
    assert_eq!(conversions + rejected, projects);
    let rejects = csv_rows(&out.path("payments-rejects.csv"));
    assert_eq!(rejects.len() as u64, rejected);
    assert!(
        rejects[0]["_error"].contains("По номеру не нашлся звонок"),
        "{:?}",
        rejects[0]
    );
    let sent = received["eyenewton"]
        .iter()
        .filter(|r| r.body.contains("callback.CreateCrmLead"))
        .count() as u64;
    assert_eq!(sent, projects, "one conversion attempt per project, never repeated");

    // Run again with nothing changed: no sum is set twice and no sale is
    // reported twice; only the conversions EyeNewton refused are tried again.
    let (again_report, again) = run_example("project-payments", &out);
    assert_eq!(output(&again_report, "deals_updated"), 0, "{again_report}");
    assert_eq!(output(&again_report, "conversions"), 0, "{again_report}");
    assert_eq!(
        again["neiros"].iter().filter(|r| r.path.ends_with("/update")).count(),
        0
    );
    let sent = again["eyenewton"]
        .iter()
        .filter(|r| r.body.contains("callback.CreateCrmLead"))
        .count() as u64;
    assert_eq!(sent, rejected);
}

#[test]
fn analytics_report_exports_leads_and_deals() {
    let _serial = serial();
    let out = Scratch::new();
    let (report, _) = run_example("analytics-report", &out);
    let leads = output(&report, "leads");
    let deals = output(&report, "deals");
    let sites = list("neiros", "list_sites", &[]);
    let mut want_deals = 0;
    for s in &sites {
        let id = s["id"].to_string();
        want_deals += list(
            "neiros",
            "list_deals",
            &[
                ("site_id", &id),
                ("date_start", "2024-01-01"),
                ("date_end", "2024-12-31"),
            ],
        )
        .len() as u64;
    }
    assert_eq!(deals, want_deals);
    let db = rusqlite::Connection::open(out.path("report.db")).expect("report.db");
    let count = |table: &str| -> u64 {
        db.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .expect("count")
    };
    assert_eq!(count("roistat_leads"), leads);
    assert_eq!(count("neiros_deals"), deals);
    let days = csv_rows(&out.path("report.csv"));
    assert_eq!(days.len() as u64, output(&report, "days"));
    let total = |col: &str| -> u64 { days.iter().map(|d| d[col].parse::<u64>().unwrap_or(0)).sum() };
    assert_eq!(total("leads"), leads);
    assert_eq!(total("deals"), deals);
    let mut sorted = days.iter().map(|d| d["day"].clone()).collect::<Vec<_>>();
    sorted.sort();
    assert_eq!(sorted, days.iter().map(|d| d["day"].clone()).collect::<Vec<_>>());
}

#[test]
fn expo_leads_send_good_rows_and_write_the_rejects() {
    let _serial = serial();
    let out = Scratch::new();
    let (report, received) = run_example("expo-leads", &out);
    let created = bodies(
        &received["roistat"],
        &format!("{}/project/leads/lead/create", flow_sandbox::roistat::BASE_PATH),
    );
    // Six rows: two without a usable phone, one without a name (Roistat
    // refuses it).
    assert_eq!(created.len(), 4);
    assert_eq!(output(&report, "roistat_leads"), 3);
    let applications: Vec<Value> = bodies(
        &received["eyenewton"],
        &format!("{}/json", flow_sandbox::eyenewton::BASE_PATH),
    )
    .into_iter()
    .filter(|b| b["action"] == "callback.ApplicationRequest")
    .collect();
    assert_eq!(applications.len(), 4);
    assert_eq!(output(&report, "applications"), 4);
    let widget = &list("eyenewton", "list_widgets", &[])[0]["id"];
    assert!(applications.iter().all(|a| &a["params"]["widgetId"] == widget));
    let rejects = csv_rows(&out.path("expo-rejects.csv"));
    assert_eq!(rejects.len(), 3);
    assert_eq!(output(&report, "rejected"), 3);
    assert!(rejects[0]["_error"].contains("no usable phone"), "{rejects:?}");
    let refused = rejects
        .iter()
        .find(|r| r["name"].is_empty())
        .expect("the row without a name");
    assert!(
        refused["_error"].contains("validation_error: Required fields are missing: name"),
        "{refused:?}"
    );

    // The same CSV again: only the lead Roistat refused is tried again.
    let (_, again) = run_example("expo-leads", &out);
    assert_eq!(
        bodies(
            &again["roistat"],
            &format!("{}/project/leads/lead/create", flow_sandbox::roistat::BASE_PATH)
        )
        .len(),
        1
    );
    let applications = bodies(
        &again["eyenewton"],
        &format!("{}/json", flow_sandbox::eyenewton::BASE_PATH),
    )
    .into_iter()
    .filter(|b| b["action"] == "callback.ApplicationRequest")
    .count();
    assert_eq!(applications, 0);
}

/// The README's first command, as written there.
#[test]
fn readme_quick_start_runs_against_the_sandbox() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let command = readme
        .lines()
        .find(|l| l.starts_with("cargo run --release -- run"))
        .expect("quick start command in the README");
    let args: Vec<&str> = command.split_whitespace().skip(4).collect();
    assert!(args.contains(&"--sandbox"), "{command}");
    let out = Scratch::new();
    let mut cmd = common::flow();
    cmd.current_dir(repo())
        .env("OUT_DIR", out.dir.path())
        .env("FLOW_STATE", out.path("state.db"));
    // Base URLs of real accounts left in the environment: `--sandbox` goes
    // to the simulators all the same (nothing listens on port 9).
    for p in ["NEIROS", "EYENEWTON", "POZVONIM", "SOLOS", "ROISTAT"] {
        cmd.env(format!("FLOW_{p}_BASE_URL"), "http://127.0.0.1:9");
    }
    let output = cmd.args(&args).output().expect("flow");
    assert!(output.status.success(), "{}{}", stdout(&output), stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("run succeeded"), "{text}");
    assert!(text.contains("leads: "), "{text}");
}

/// The simulators answer under the real APIs' paths, and `--sandbox` keeps
/// the path of the descriptor's base URL: a descriptor whose path is wrong
/// fails against them as it would in production, and the bundled ones pass.
#[test]
fn a_wrong_base_path_in_a_descriptor_fails_against_the_sandbox() {
    let s = Scratch::new();
    // (The simulators' own credentials replace the config written here.)
    for (provider, config, action, right, wrong) in [
        (
            "roistat",
            "api_key: k, project: p",
            "list_lead_statuses",
            "/api/v1",
            "/api/v2",
        ),
        ("pozvonim", "uid: u, api_key: k", "get_server_time", "/v2u", "/v2"),
        ("eyenewton", "token: t, user_id: u", "list_widgets", "/api/v1", "/api"),
        (
            "neiros",
            "email: e, password: p",
            "list_sites",
            "/api/userapi/v1",
            "/api/userapi/v2",
        ),
        (
            "solos",
            "crm_url: c, crm_token: t, crm_secret: s",
            "list_projects",
            "/backend/public",
            "/backend/publik",
        ),
    ] {
        let wf = s.write(
            &format!("{provider}.yaml"),
            &format!("name: base-path\nconnections:\n  api: {{ provider: {provider}, config: {{ {config} }} }}\nsteps:\n  - id: read\n    call: api.{action}\n"),
        );
        let call = |providers: &Path| {
            common::flow()
                .current_dir(s.dir.path())
                .arg("--providers")
                .arg(providers)
                .args(["run", "--sandbox", "--no-state"])
                .arg(&wf)
                .output()
                .expect("flow")
        };
        let bundled = std::fs::read_to_string(repo().join(format!("providers/{provider}.yaml"))).expect("descriptor");
        assert_eq!(bundled.matches(&format!("{right}\n")).count(), 1, "{provider}: {right}");
        s.write(&format!("{provider}-ok/{provider}.yaml"), &bundled);
        let out = call(&s.path(&format!("{provider}-ok")));
        assert!(out.status.success(), "{provider}: {}", stderr(&out));
        s.write(
            &format!("{provider}-bad/{provider}.yaml"),
            &bundled.replace(&format!("{right}\n"), &format!("{wrong}\n")),
        );
        let out = call(&s.path(&format!("{provider}-bad")));
        assert_eq!(out.status.code(), Some(1), "{provider}: {}", stderr(&out));
        assert!(stderr(&out).contains("404"), "{provider}: {}", stderr(&out));
    }
}

/// Every example run with recognisable credentials at trace level: no
/// credential, and no session token the APIs handed out, appears in the
/// output, the logs, the files written or the state store.
#[test]
fn secrets_never_reach_logs_outputs_or_state() {
    let _serial = serial();
    let out = Scratch::new();
    let mut seen = String::new();
    let before: Vec<usize> = simulators().iter().map(|s| s.journal.all().len()).collect();
    for name in ["calls-to-roistat", "project-payments", "analytics-report", "expo-leads"] {
        // Trace level: every request and response the engine logs.
        let output = example(name, &out, &[])
            .env("RUST_LOG", "trace")
            .output()
            .expect("flow run");
        assert!(output.status.success(), "{name}: {}", stderr(&output));
        seen.push_str(&stdout(&output));
        seen.push_str(&stderr(&output));
    }
    let runs = common::flow()
        .env("FLOW_STATE", out.path("state.db"))
        .args(["runs", "-o", "json"])
        .output()
        .expect("flow runs");
    seen.push_str(&stdout(&runs));
    assert!(seen.contains("TRACE"), "trace logging was on");

    let mut secrets: Vec<String> = Vec::new();
    for s in simulators() {
        for (k, v) in &s.config {
            if ["password", "token", "api_key", "crm_token", "crm_secret"].contains(k) {
                secrets.push(v.clone());
            }
        }
    }
    // The bearer tokens Neiros handed out at login.
    let neiros_start = before[simulators()
        .iter()
        .position(|s| s.provider == "neiros")
        .expect("neiros")];
    for r in &simulator_journal("neiros")[neiros_start..] {
        for (k, v) in &r.headers {
            if k == "authorization" {
                secrets.push(v.trim_start_matches("Bearer ").to_owned());
            }
        }
    }
    secrets.sort();
    secrets.dedup();
    assert!(secrets.len() >= 7, "{secrets:?}");

    let mut files = vec![];
    for entry in std::fs::read_dir(out.dir.path()).expect("out dir") {
        let path = entry.expect("entry").path();
        files.push((path.display().to_string(), std::fs::read(&path).expect("read")));
    }
    assert!(files.iter().any(|(p, _)| p.ends_with("state.db")));
    for secret in &secrets {
        assert!(!seen.contains(secret.as_str()), "`{secret}` printed");
        for (path, bytes) in &files {
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "`{secret}` in {path}");
        }
    }
}

fn simulator_journal(provider: &str) -> Vec<flow_sandbox::Received> {
    simulators()
        .iter()
        .find(|s| s.provider == provider)
        .map(|s| s.journal.all())
        .unwrap_or_default()
}
