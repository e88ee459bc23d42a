//! `flow run` on real files: streams, scripts, sinks, conditions, loops,
//! failures and exit codes.

mod common;

use common::{repo, stderr, stdout, Scratch};
use serde_json::{json, Value};

fn json_report(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("report is not JSON ({e}): {}", stdout(out)))
}

#[test]
fn quick_start_example_runs_as_written() {
    let s = Scratch::new();
    let out = common::flow()
        .current_dir(repo())
        .env("OUT_DIR", s.dir.path())
        .env("FLOW_STATE", s.path("state.db"))
        .args(["run", "workflows/clean-leads.yaml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("written: 4"), "{text}");
    assert!(text.contains("run succeeded"), "{text}");
    let recs = s.lines("clean.jsonl");
    assert_eq!(recs.len(), 4);
    assert_eq!(
        recs[0],
        json!({"name": "Анна Смирнова", "phone": "+79123456789", "source": "expo"})
    );
    assert!(recs.iter().all(|r| r["phone"].as_str().unwrap().len() == 12));
    // The nested step logged every phone.
    assert_eq!(
        stderr(&out).matches("+79").count() + stderr(&out).matches("+74").count(),
        4,
        "{}",
        stderr(&out)
    );
}

#[test]
fn inputs_and_json_summary() {
    let s = Scratch::new();
    let out = common::flow()
        .current_dir(repo())
        .env("OUT_DIR", s.dir.path())
        .env("FLOW_STATE", s.path("state.db"))
        .args([
            "run",
            "workflows/clean-leads.yaml",
            "--input",
            "source=webinar",
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let r = json_report(&out);
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["steps"]["leads"]["count"], 6);
    assert_eq!(r["steps"]["clean"]["count"], 4);
    assert_eq!(r["steps"]["announce"]["count"], 4);
    assert_eq!(r["steps"]["announce"]["steps"]["show"]["count"], 4);
    assert_eq!(r["outputs"]["written"], 4);
    assert!(s.lines("clean.jsonl").iter().all(|l| l["source"] == "webinar"));
}

const PIPE: &str = r#"
name: pipe
inputs:
  min: { type: integer, default: 2 }
steps:
  - id: src
    read: data.jsonl
  - id: map
    from: src
    run: |
      function transform(r, ctx)
        if r.n < ctx.inputs.min then return nil end
        if r.n == 4 then return {{n = 4, half = "a"}, {n = 4, half = "b"}} end
        return {n = r.n, sq = r.n * r.n}
      end
  - id: csv
    from: map
    write: { path: out/map.csv, columns: [n, sq, half] }
  - id: db
    from: map
    write: { path: out/map.db, table: nums }
  - id: arr
    from: map
    write: out/map.json
  - id: total
    from: map
    run: |
      local sum = 0
      function transform(r) sum = sum + r.n end
      function finish(ctx) return {sum = sum} end
  - id: sum
    from: total
    write: out/sum.jsonl
outputs:
  mapped: "{{ steps.map.count }}"
  label: "{{ steps.csv.count }} rows"
"#;

#[test]
fn one_source_feeds_many_sinks() {
    let s = Scratch::new();
    s.write("data.jsonl", "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n{\"n\":4}\n");
    let wf = s.write("pipe.yaml", PIPE);
    let out = s.flow().arg("run").arg(&wf).args(["-o", "json"]).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let r = json_report(&out);
    assert_eq!(r["outputs"], json!({"mapped": 4, "label": "4 rows"}));
    assert_eq!(s.read("out/map.csv"), "n,sq,half\n2,4,\n3,9,\n4,,a\n4,,b\n");
    let arr: Value = serde_json::from_str(&s.read("out/map.json")).unwrap();
    assert_eq!(arr.as_array().unwrap().len(), 4);
    assert_eq!(s.lines("out/sum.jsonl"), vec![json!({"sum": 13})]);
    let db = rusqlite_count(&s.path("out/map.db"), "nums");
    assert_eq!(db, 4);
}

fn rusqlite_count(path: &std::path::Path, table: &str) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

#[test]
fn script_errors_name_the_script_line_and_record() {
    let s = Scratch::new();
    s.write("data.jsonl", "{\"n\":1}\n{\"n\":2}\n{\"x\":3}\n");
    s.write(
        "scripts/bad.lua",
        "function transform(r)\n  return { n = r.n + 1 }\nend\n",
    );
    s.write("out.jsonl", "{\"kept\":true}\n");
    let wf = s.write(
        "wf.yaml",
        "name: bad\nsteps:\n  - id: src\n    read: data.jsonl\n  - id: map\n    from: src\n    lua: scripts/bad.lua\n  - id: out\n    from: map\n    write: out.jsonl\n",
    );
    let out = s.flow().arg("run").arg(&wf).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("step `map` failed"), "{err}");
    assert!(err.contains("scripts/bad.lua:2:"), "{err}");
    assert!(err.contains("record 3 of `src`"), "{err}");
    assert!(err.contains("wf.yaml"), "{err}");
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{err}");
    // A failed run leaves the old output in place.
    assert_eq!(s.read("out.jsonl"), "{\"kept\":true}\n");
    // An error with no place in the script (what it returned) names it too.
    s.write("scripts/bad.lua", "function transform(r)\n  return 5\nend\n");
    let out = s.flow().arg("run").arg(&wf).output().unwrap();
    let err = stderr(&out);
    assert!(
        err.contains("scripts/bad.lua: `transform` must return a table") && err.contains("record 1 of `src`"),
        "{err}"
    );
}

#[test]
fn on_error_continue_counts_rejects() {
    let s = Scratch::new();
    s.write("data.jsonl", "{\"n\":1}\n{\"x\":2}\n{\"n\":3}\n");
    let wf = s.write(
        "wf.yaml",
        r#"name: rejects
steps:
  - id: src
    read: data.jsonl
  - id: map
    from: src
    on_error: continue
    run: "function transform(r) return { n = r.n * 10 } end"
  - id: out
    from: map
    write: out.jsonl
  - id: rejects
    from: map.rejected
    write: rejects.jsonl
"#,
    );
    let out = s.flow().arg("run").arg(&wf).args(["-o", "json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let rejects = s.lines("rejects.jsonl");
    assert_eq!(rejects.len(), 1);
    assert_eq!(rejects[0]["x"], 2);
    assert!(
        rejects[0]["_error"]
            .as_str()
            .unwrap()
            .contains("attempt to perform arithmetic"),
        "{}",
        rejects[0]
    );
    let r = json_report(&out);
    assert_eq!(r["steps"]["map"]["count"], 2);
    assert_eq!(r["steps"]["map"]["rejected"], 1);
    assert!(stderr(&out).contains("Record rejected"), "{}", stderr(&out));
    assert_eq!(s.lines("out.jsonl"), vec![json!({"n": 10}), json!({"n": 30})]);
}

#[test]
fn runaway_scripts_are_stopped() {
    let s = Scratch::new();
    s.write("data.jsonl", "{\"n\":1}\n");
    for (name, step, expect) in [
        ("loop", "run: \"function transform(r) while true do end end\"", "instructions"),
        (
            "mem",
            "lua: { memory_limit: 8MiB, inline: \"function transform(r) local t = {} for i = 1, 1e8 do t[i] = i end end\" }",
            "out of memory",
        ),
        (
            "slow",
            "timeout: 300ms\n    lua: { instruction_limit: 100000000000, inline: \"function transform(r) while true do end end\" }",
            "timed out after 300ms",
        ),
    ] {
        let wf = s.write(
            &format!("{name}.yaml"),
            &format!("name: {name}\nsteps:\n  - id: src\n    read: data.jsonl\n  - id: map\n    from: src\n    {step}\n"),
        );
        let out = s.flow().arg("run").arg(&wf).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stdout(&out));
        assert!(stderr(&out).contains(expect), "{name}: {}", stderr(&out));
    }
}

#[test]
fn conditions_skip_steps_and_their_consumers() {
    let s = Scratch::new();
    s.write("data.jsonl", "{\"n\":1}\n");
    let wf = s.write(
        "wf.yaml",
        r#"name: cond
inputs:
  enabled: { type: boolean, default: false }
steps:
  - id: src
    if: "{{ inputs.enabled }}"
    read: data.jsonl
  - id: out
    from: src
    write: out.jsonl
  - id: always
    read: data.jsonl
"#,
    );
    let out = s.flow().arg("run").arg(&wf).args(["-o", "json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let r = json_report(&out);
    assert_eq!(r["steps"]["src"]["status"], "skipped");
    assert_eq!(r["steps"]["out"]["status"], "skipped");
    assert_eq!(r["steps"]["always"]["count"], 1);
    assert!(!s.path("out.jsonl").exists());
    let out = s
        .flow()
        .arg("run")
        .arg(&wf)
        .args(["-i", "enabled=true"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(s.lines("out.jsonl").len(), 1);
}

#[test]
fn for_each_over_a_list_with_concurrency_and_forwarding() {
    let s = Scratch::new();
    let wf = s.write(
        "wf.yaml",
        r#"name: loop
inputs:
  cities: { type: list, default: [msk, spb, ekb, nsk, kzn] }
steps:
  - id: each
    for_each: "{{ inputs.cities }}"
    concurrency: 3
    steps:
      - id: tag
        from: item
        # One Lua state inside a for_each, whatever `parallel` says.
        lua:
          inline: "function transform(r, ctx) return { city = ctx.item, len = #ctx.item } end"
          parallel: 4
  - id: out
    from: each
    write: out.jsonl
"#,
    );
    // A list of plain strings: each item is a string, and `from: item` gets it as the record.
    let out = s.flow().arg("run").arg(&wf).args(["-o", "json"]).output().unwrap();
    let r = json_report(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(r["steps"]["each"]["count"], 5);
    let mut cities: Vec<String> = s
        .lines("out.jsonl")
        .iter()
        .map(|l| l["city"].as_str().unwrap().to_owned())
        .collect();
    cities.sort();
    assert_eq!(cities, vec!["ekb", "kzn", "msk", "nsk", "spb"]);
}

#[test]
fn for_each_item_failures_fail_or_continue() {
    let s = Scratch::new();
    s.write("data.jsonl", "{\"n\":1}\n{\"n\":0}\n{\"n\":2}\n");
    let body = |on_error: &str| {
        format!(
            r#"name: items
steps:
  - id: src
    read: data.jsonl
  - id: each
    for_each: src
    on_error: {on_error}
    steps:
      - id: check
        from: item
        run: "function transform(r) if r.n == 0 then error('zero is not allowed') end return r end"
"#
        )
    };
    let wf = s.write("fail.yaml", &body("fail"));
    let out = s.flow().arg("run").arg(&wf).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("item 2: step `check` failed"), "{}", stderr(&out));
    assert!(stderr(&out).contains("zero is not allowed"), "{}", stderr(&out));
    let wf = s.write("cont.yaml", &body("continue"));
    let out = s.flow().arg("run").arg(&wf).args(["-o", "json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let r = json_report(&out);
    assert_eq!(
        (
            r["steps"]["each"]["count"].as_u64(),
            r["steps"]["each"]["failed"].as_u64()
        ),
        (Some(2), Some(1))
    );
}

#[test]
fn undefined_names_at_run_time_are_named() {
    let s = Scratch::new();
    s.write("data.jsonl", "{\"n\":1}\n");
    let wf = s.write(
        "wf.yaml",
        "name: env\nsteps:\n  - id: src\n    read: data.jsonl\n  - id: out\n    from: src\n    write: \"{{ env.FLOW_TEST_NOT_SET }}/out.jsonl\"\n",
    );
    let out = s
        .flow()
        .arg("run")
        .arg(&wf)
        .env_remove("FLOW_TEST_NOT_SET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("`env.FLOW_TEST_NOT_SET` is undefined"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_connection_whose_secret_is_not_set_is_refused_before_anything_is_sent() {
    let s = Scratch::new();
    let wf = s.write(
        "wf.yaml",
        "name: unset\nconnections:\n  crm:\n    provider: roistat\n    config: { api_key: \"{{ secrets.FLOW_TEST_NO_KEY }}\", project: \"12345\" }\nsteps:\n  - id: leads\n    call: crm.list_lead_statuses\n",
    );
    let out = s
        .flow()
        .arg("run")
        .arg(&wf)
        .env_remove("FLOW_TEST_NO_KEY")
        // Nothing listens here: a request would fail differently.
        .env("FLOW_ROISTAT_BASE_URL", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("wf.yaml:5:")
            && err.contains("connections.crm.config.api_key: `secrets.FLOW_TEST_NO_KEY` is undefined"),
        "{err}"
    );
}

#[test]
fn env_file_and_secrets_are_masked() {
    let s = Scratch::new();
    s.write("data.jsonl", "{\"n\":1}\n");
    s.write(".env", "API_TOKEN=tok-very-secret-123\n");
    let wf = s.write(
        "wf.yaml",
        r#"name: secret
steps:
  - id: src
    read: data.jsonl
  - id: leak
    from: src
    run: "function transform(r, ctx) ctx.log.warn('token is ' .. ctx.inputs.t) error('bad ' .. ctx.inputs.t) end"
inputs:
  t: { type: string, default: "{{ secrets.API_TOKEN }}" }
outputs:
  t: "{{ secrets.API_TOKEN }}"
"#,
    );
    let out = s.flow().arg("run").arg(&wf).arg("-v").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!all.contains("tok-very-secret-123"), "{all}");
}

#[test]
fn bad_inputs_are_usage_errors() {
    let s = Scratch::new();
    s.write("data.jsonl", "{\"n\":1}\n");
    let wf = s.write(
        "wf.yaml",
        "name: inputs\ninputs:\n  limit: { type: integer }\nsteps:\n  - id: src\n    read: data.jsonl\n",
    );
    let out = s.flow().arg("run").arg(&wf).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("the input `limit` is required"),
        "{}",
        stderr(&out)
    );
    let out = s.flow().arg("run").arg(&wf).args(["-i", "limt=5"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("did you mean `limit`?"), "{}", stderr(&out));
    let out = s
        .flow()
        .arg("run")
        .arg(&wf)
        .args(["-i", "limit=many"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("`many` is not a whole number"),
        "{}",
        stderr(&out)
    );
    let out = s
        .flow()
        .arg("run")
        .arg(&wf)
        .args(["-i", "limit=2", "-i", "limit=3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--input limit is given twice"),
        "{}",
        stderr(&out)
    );
    let out = s
        .flow()
        .arg("run")
        .arg(&wf)
        .args(["-i", "nokeyvalue"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_data_files_name_the_line() {
    let s = Scratch::new();
    s.write("data.jsonl", "{\"n\":1}\n{\"n\":\n");
    s.write("data.csv", "a,b\n1,2\n3\n");
    s.write("open.csv", "a,b\n1,\"VIP\n2,x\n3,y\n");
    for (file, expect) in [
        ("data.jsonl", "data.jsonl:2: not valid JSON"),
        ("data.csv", "data.csv:3: the row has 1 fields"),
        ("open.csv", "open.csv:2: a field opens a quote that is never closed"),
    ] {
        let wf = s.write(
            "wf.yaml",
            &format!("name: bad\nsteps:\n  - id: src\n    read: {file}\n"),
        );
        let out = s.flow().arg("run").arg(&wf).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains(expect), "{}", stderr(&out));
    }
    let wf = s.write("wf.yaml", "name: bad\nsteps:\n  - id: src\n    read: missing.jsonl\n");
    let out = s.flow().arg("run").arg(&wf).output().unwrap();
    assert!(
        stderr(&out).contains("cannot open") && stderr(&out).contains("missing.jsonl"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn records_flow_cannot_hold_as_values_pass_exactly_or_fail_loudly() {
    // Valid JSON that has no value in flow: nested 200 deep, a number past
    // f64's range, an integer past u64's.
    let s = Scratch::new();
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let data = format!(
        "{{\"n\":1,\"deep\":{deep}}}\n{{\"n\":2,\"big\":1e400}}\n{{\"n\":3,\"id\":123456789012345678901234567890}}\n"
    );
    s.write("data.jsonl", &data);
    // Moved as they are: the JSON array holds them exactly.
    let wf = s.write(
        "wf.yaml",
        "name: pass\nsteps:\n  - id: src\n    read: data.jsonl\n  - id: out\n    from: src\n    write: out.json\n",
    );
    let out = s.flow().arg("run").arg(&wf).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<&str> = data.lines().collect();
    assert_eq!(s.read("out.json"), format!("[\n{}\n]\n", lines.join(",\n")));
    // A sink that needs their fields fails the step and says why, where it
    // used to write them as null or drop them.
    // A CSV file takes each field as it came.
    let wf = s.write(
        "wf.yaml",
        "name: csv\nsteps:\n  - id: src\n    read: data.jsonl\n  - id: out\n    from: src\n    write: { path: out.csv, columns: [n, big, id] }\n",
    );
    let out = s.flow().arg("run").arg(&wf).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        s.read("out.csv"),
        "n,big,id\n1,,\n2,1e400,\n3,,123456789012345678901234567890\n"
    );
    // An SQLite table and a `for_each` need them as values: the step fails
    // and says why.
    for (name, steps) in [
        ("fields", "  - id: out\n    from: src\n    write: { path: out.db, table: t }\n"),
        (
            "each",
            "  - id: each\n    for_each: src\n    steps:\n      - id: out\n        from: item\n        write: { path: each.jsonl, append: true }\n",
        ),
    ] {
        let wf = s.write(
            "wf.yaml",
            &format!("name: {name}\nsteps:\n  - id: src\n    read: data.jsonl\n{steps}"),
        );
        let out = s.flow().arg("run").arg(&wf).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("a record cannot be read as fields"),
            "{}",
            stderr(&out)
        );
    }
    // A script that reads a field it cannot take rejects the record, and
    // the rejects keep its text.
    s.write(
        "id.lua",
        "function transform(r) local _ = r.deep or r.big return r end\n",
    );
    let wf = s.write(
        "wf.yaml",
        "name: lua\nsteps:\n  - id: src\n    read: data.jsonl\n  - id: map\n    from: src\n    lua: id.lua\n    on_error: continue\n  - id: bad\n    from: map.rejected\n    write: bad.jsonl\n",
    );
    let out = s.flow().arg("run").arg(&wf).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let bad: Value = serde_json::from_str(s.read("bad.jsonl").lines().next().unwrap()).unwrap();
    assert_eq!(bad["item"], json!(lines[0]), "{bad}");
}

#[test]
fn a_late_consumer_reads_a_finished_stream() {
    // `late` waits for `count` to finish before it reads `src`, so `src` is
    // spooled rather than held in memory.
    let s = Scratch::new();
    let mut data = String::new();
    for i in 0..5000 {
        data.push_str(&format!("{{\"i\":{i}}}\n"));
    }
    s.write("data.jsonl", &data);
    let wf = s.write(
        "wf.yaml",
        r#"name: late
steps:
  - id: src
    read: data.jsonl
  - id: count
    from: src
    write: first.jsonl
  - id: late
    if: "{{ steps.count.count == 5000 }}"
    from: src
    write: second.jsonl
"#,
    );
    let out = s.flow().arg("run").arg(&wf).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(s.lines("second.jsonl").len(), 5000);
    assert_eq!(s.read("first.jsonl"), s.read("second.jsonl"));
}

#[test]
fn from_a_list_merges_several_streams() {
    let s = Scratch::new();
    s.write(
        "a.jsonl",
        "{\"phone\":\"8 912 345 67 89\"}\n{\"phone\":\"+7 903 111 22 33\"}\n",
    );
    s.write("b.csv", "phone\n79123456789\n89991112233\n");
    let wf = s.write(
        "wf.yaml",
        r#"name: merge
steps:
  - id: a
    read: a.jsonl
  - id: b
    read: b.csv
  - id: unique
    from: [a, b]
    run: |
      local seen = {}
      function transform(r)
        local p = flow.phone(r.phone)
        if p == nil or seen[p] then return nil end
        seen[p] = true
        return { phone = p }
      end
  - id: out
    from: unique
    write: out.jsonl
"#,
    );
    let out = s.flow().arg("run").arg(&wf).args(["-o", "json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mut phones: Vec<String> = s
        .lines("out.jsonl")
        .iter()
        .map(|r| r["phone"].as_str().unwrap().to_owned())
        .collect();
    phones.sort();
    assert_eq!(phones, vec!["+79031112233", "+79123456789", "+79991112233"]);
    let bad = s.write(
        "bad.yaml",
        "name: bad\nsteps:\n  - id: a\n    read: a.jsonl\n  - id: m\n    from: [a, nope]\n    write: x.jsonl\n",
    );
    let out = s.flow().arg("validate").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("steps[1].from[1]: `from` names the step `nope`"),
        "{}",
        stderr(&out)
    );
}

/// A workflow that reads `data.jsonl`, maps it with `script` in `parallel`
/// Lua states and writes `out.jsonl` (and, when it goes on after errors,
/// the rejects to `rejects.jsonl`). A step that hangs times out after a
/// minute.
fn parallel_lua(s: &Scratch, parallel: usize, script: &str, on_error: &str) -> std::process::Output {
    s.write("map.lua", script);
    let rejects = if on_error == "continue" {
        "  - id: rejects\n    from: map.rejected\n    write: rejects.jsonl\n"
    } else {
        ""
    };
    let wf = s.write(
        "wf.yaml",
        &format!(
            "name: par\nsteps:\n  - id: src\n    read: data.jsonl\n  - id: map\n    from: src\n    on_error: {on_error}\n    timeout: 60s\n    lua: {{ path: map.lua, parallel: {parallel} }}\n  - id: out\n    from: map\n    write: out.jsonl\n{rejects}"
        ),
    );
    s.flow().arg("run").arg(&wf).args(["-o", "json"]).output().unwrap()
}

fn numbered(s: &Scratch, n: usize, broken: &[usize]) {
    let mut data = String::new();
    for i in 1..=n {
        if broken.contains(&i) {
            data.push_str(&format!("{{\"x\":{i}}}\n"));
        } else {
            data.push_str(&format!("{{\"n\":{i}}}\n"));
        }
    }
    s.write("data.jsonl", &data);
}

#[test]
fn lua_in_several_states_keeps_the_record_order() {
    let s = Scratch::new();
    let broken = [10usize, 2000, 19999];
    numbered(&s, 20000, &broken);
    // Each state counts the records it has seen, in its own globals.
    let script =
        "local seen = 0\nfunction transform(r)\n  seen = seen + 1\n  return { n = r.n * 2, seen = seen }\nend\n";
    let out = parallel_lua(&s, 3, script, "continue");
    assert!(out.status.success(), "{}", stderr(&out));
    let records = s.lines("out.jsonl");
    let n: Vec<i64> = records.iter().map(|r| r["n"].as_i64().unwrap()).collect();
    let expected: Vec<i64> = (1..=20000i64)
        .filter(|&i| !broken.contains(&(i as usize)))
        .map(|i| i * 2)
        .collect();
    assert_eq!(n, expected, "every record once, in the order read");
    // States take batches as they are free, so how many each gets varies;
    // one state alone would count to the last record.
    let most = records.iter().map(|r| r["seen"].as_i64().unwrap()).max().unwrap();
    assert!(
        most < 20000,
        "one state saw all {most} records: the work was not shared"
    );
    let rejects: Vec<u64> = s
        .lines("rejects.jsonl")
        .iter()
        .map(|r| r["x"].as_u64().unwrap())
        .collect();
    assert_eq!(rejects, broken.map(|b| b as u64));
    let r = json_report(&out);
    assert_eq!(r["steps"]["map"]["count"], 19997);
    assert_eq!(r["steps"]["map"]["rejected"], 3);
}

#[test]
fn lua_in_several_states_fails_on_the_first_bad_record() {
    let s = Scratch::new();
    numbered(&s, 3000, &[700, 1600, 2900]);
    s.write("out.jsonl", "{\"kept\":true}\n");
    let out = parallel_lua(&s, 3, "function transform(r)\n  return { n = r.n + 1 }\nend\n", "fail");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("step `map` failed"), "{err}");
    assert!(err.contains("map.lua:2:"), "{err}");
    assert!(err.contains("record 700 of `src`"), "{err}");
    assert_eq!(s.read("out.jsonl"), "{\"kept\":true}\n");
}

#[test]
fn a_script_with_finish_runs_in_one_state_only() {
    let s = Scratch::new();
    numbered(&s, 10, &[]);
    let script = "local total = 0\nfunction transform(r) total = total + r.n end\nfunction finish() return { total = total } end\n";
    // Refused before the run starts, with the option's path.
    let out = parallel_lua(&s, 2, script, "fail");
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("`finish`") && err.contains("steps[1].lua.parallel"),
        "{err}"
    );
    assert!(err.contains("remove `parallel`"), "{err}");
    assert!(!s.path("out.jsonl").exists());
    // In one state it sums every record.
    let out = parallel_lua(&s, 1, script, "fail");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(s.lines("out.jsonl"), vec![json!({"total": 55})]);
}

#[test]
fn lua_in_several_states_stops_at_once_on_a_bad_record_early_in_a_long_read() {
    let s = Scratch::new();
    // Far more batches than the states and their queue hold.
    numbered(&s, 60000, &[500]);
    // Slow records, so that the states are the bottleneck and their queue
    // is full when the bad one is found.
    let script = "function transform(r)\n  for i = 1, 10000 do end\n  return { n = r.n + 1 }\nend\n";
    let out = parallel_lua(&s, 3, script, "fail");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("record 500 of `src`"), "{err}");
    assert!(!err.contains("timed out"), "{err}");
}

#[test]
fn fields_a_script_leaves_alone_are_written_as_they_came() {
    let s = Scratch::new();
    // Numbers no Lua value holds exactly, a string with its own escapes, a
    // nested value with spaces: untouched, they must come out byte for byte.
    let record = r#"{"id":7,"big":123456789012345678901234567890,"exp":1E+2,"text":"a\u00e9\"b","deep":{"k": [1, 2]},"name":"Анна"}"#;
    s.write(
        "data.jsonl",
        &format!("{record}\n{}\n", record.replace("\"id\":7", "\"id\":8")),
    );
    let script = "function transform(r)\n  r.client, r.name = r.name, nil\n  r.id = r.id * 10\n  return r\nend\n";
    for parallel in [1, 2] {
        let out = parallel_lua(&s, parallel, script, "fail");
        assert!(out.status.success(), "{}", stderr(&out));
        let text = std::fs::read_to_string(s.path("out.jsonl")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            r#"{"big":123456789012345678901234567890,"client":"Анна","deep":{"k": [1, 2]},"exp":1E+2,"id":70,"text":"a\u00e9\"b"}"#
        );
        assert!(lines[1].contains(r#""id":80"#) && lines.len() == 2, "{text}");
    }
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("flow"))
        .arg("providers")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader is gone before flow prints anything.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
}

#[test]
fn a_state_file_that_is_no_store_is_a_usage_error() {
    let s = Scratch::new();
    s.write("data.jsonl", "{\"n\":1}\n");
    let wf = s.write("wf.yaml", "name: st\nsteps:\n  - id: src\n    read: data.jsonl\n");
    let out = s
        .flow()
        .arg("run")
        .arg(&wf)
        .args(["--state", "data.jsonl"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("data.jsonl is not a flow state store"),
        "{}",
        stderr(&out)
    );
    // The file is left as it was.
    assert_eq!(s.read("data.jsonl"), "{\"n\":1}\n");
    // A caller reading JSON gets the reason there too.
    let out = s
        .flow()
        .arg("run")
        .arg(&wf)
        .args(["--state", "data.jsonl", "-o", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap_or_else(|_| panic!("no JSON: {}", stdout(&out)));
    assert_eq!(doc["status"], "error");
    assert!(
        doc["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("is not a flow state store"),
        "{doc}"
    );
    // Another program's SQLite database is not taken over, by a run or by
    // a command that only reads history.
    {
        let db = rusqlite::Connection::open(s.path("report.db")).unwrap();
        db.execute_batch("CREATE TABLE leads(id)").unwrap();
    }
    for args in [
        &["run", "wf.yaml", "--state", "report.db"][..],
        &["runs", "--state", "report.db"],
    ] {
        let out = s.flow().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("not a flow state store (it holds `leads`)"),
            "{}",
            stderr(&out)
        );
    }
    let db = rusqlite::Connection::open(s.path("report.db")).unwrap();
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(tables, ["leads"]);
    // A store that cannot be made says how to run anyway.
    let out = s
        .flow()
        .arg("run")
        .arg(&wf)
        .args(["--state", "data.jsonl/state.db"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot create") && stderr(&out).contains("hint: keep the store elsewhere with --state"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_invalid_workflow_run_with_json_output_says_why_on_stdout() {
    let s = Scratch::new();
    let wf = s.write(
        "wf.yaml",
        "name: j\nsteps:\n  - id: src\n    read: missing.jsonl\n    form: x\n",
    );
    let out = s.flow().arg("run").arg(&wf).args(["-o", "json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(doc["status"], "invalid");
    let first = &doc["errors"][0];
    assert_eq!(
        (first["line"].as_u64(), first["path"].as_str()),
        (Some(5), Some("steps[0]")),
        "{doc}"
    );
    assert!(
        first["message"]
            .as_str()
            .is_some_and(|m| m.contains("unknown key `form`")),
        "{doc}"
    );
}

#[test]
fn a_nested_for_each_over_item_runs_once_per_outer_item() {
    let s = Scratch::new();
    s.write("d.jsonl", "{\"a\":1}\n{\"a\":2}\n");
    let wf = s.write(
        "wf.yaml",
        r#"name: nested
steps:
  - id: src
    read: d.jsonl
  - id: outer
    for_each: src
    steps:
      - id: inner
        for_each: item
        steps:
          - id: mark
            from: item
            run: "function transform(r) r.seen = true; return r end"
  - id: out
    from: outer
    write: out.jsonl
"#,
    );
    let out = s
        .flow()
        .args(["run", "--no-state", "-o", "json"])
        .arg(&wf)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_report(&out)["steps"]["outer"]["steps"]["inner"]["count"], 2);
    let mut lines = s.lines("out.jsonl");
    lines.sort_by_key(|r| r["a"].as_u64());
    assert_eq!(
        lines,
        vec![json!({"a": 1, "seen": true}), json!({"a": 2, "seen": true})]
    );
}

#[test]
fn a_script_stuck_in_a_pattern_match_ends_its_run_at_the_step_timeout() {
    let s = Scratch::new();
    s.write("d.jsonl", "{\"a\":1}\n");
    // Backtracking in C, where no instruction is counted: minutes.
    s.write(
        "slow.lua",
        "function transform(r) string.rep('a', 3000):find('.-.-.-.-.-.-b') return r end\n",
    );
    let wf = s.write(
        "wf.yaml",
        "name: stuck\nsteps:\n  - id: src\n    read: d.jsonl\n  - id: map\n    from: src\n    lua: slow.lua\n    timeout: 1s\n  - id: out\n    from: map\n    write: out.jsonl\n",
    );
    let started = std::time::Instant::now();
    let out = s
        .flow()
        .args(["run", "--no-state"])
        .arg(&wf)
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("timed out after 1s"), "{}", stderr(&out));
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(!s.path("out.jsonl").exists());
}

#[test]
fn two_files_of_one_workflow_name_are_warned_of_the_state_they_share() {
    let s = Scratch::new();
    s.write("data.jsonl", "{\"n\":1}\n");
    let one = s.write("one.yaml", "name: shared\nsteps:\n  - id: src\n    read: data.jsonl\n");
    let two = s.write(
        "two.yaml",
        "name: shared\ndescription: Another job\nsteps:\n  - id: src\n    read: data.jsonl\n",
    );
    let run = |wf: &std::path::Path| s.flow().arg("run").arg(wf).output().unwrap();
    for (wf, warned) in [(&one, false), (&two, true), (&two, false)] {
        let out = run(wf);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            stderr(&out).contains("came from") && stderr(&out).contains("share its cursors and write keys"),
            warned,
            "{}: {}",
            wf.display(),
            stderr(&out)
        );
    }
    // Files of one name in two folders, each run from its own folder with
    // the same relative path, are two files.
    for dir in ["n1", "n2"] {
        s.write(&format!("{dir}/data.jsonl"), "{\"n\":1}\n");
        s.write(
            &format!("{dir}/w.yaml"),
            "name: alike\nsteps:\n  - id: src\n    read: data.jsonl\n",
        );
    }
    for (dir, warned) in [("n1", false), ("n2", true)] {
        let out = s
            .flow()
            .current_dir(s.path(dir))
            .args(["run", "w.yaml", "--state", "../alike.db"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            stderr(&out).contains("share its cursors"),
            warned,
            "{dir}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn two_write_steps_on_one_file_by_rendered_paths_fail_the_run() {
    let s = Scratch::new();
    s.write("data.jsonl", "{\"n\":1}\n{\"n\":2}\n");
    // Told apart only once rendered (an input, a link): validation cannot
    // see it, the run does.
    let wf = s.write(
        "wf.yaml",
        "name: two\ninputs:\n  p: { type: string, default: out.jsonl }\nsteps:\n  - id: src\n    read: data.jsonl\n  - id: a\n    from: src\n    write: out.jsonl\n  - id: b\n    from: a\n    write: { path: \"{{ inputs.p }}\", format: jsonl }\n",
    );
    let out = s.flow().arg("run").arg(&wf).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("writes") && stderr(&out).contains("too"),
        "{}",
        stderr(&out)
    );
    // Two tables of one SQLite file are apart, once one step waits for the
    // other (SQLite takes one writer at a time); table names of any case
    // are one table.
    let two_tables = "name: two\nsteps:\n  - id: src\n    read: data.jsonl\n  - id: a\n    from: src\n    write: { path: out.db, table: a }\n  - id: b\n    from: src\n    write: { path: out.db, table: b }\n";
    let wf = s.write("wf.yaml", two_tables);
    let out = s.flow().args(["validate"]).arg(&wf).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("SQLite takes one writer at a time"),
        "{}",
        stderr(&out)
    );
    let wf = s.write(
        "wf.yaml",
        &two_tables.replace(
            "  - id: b\n",
            "  - id: b\n    if: \"{{ steps.a.status == 'succeeded' }}\"\n",
        ),
    );
    let out = s.flow().args(["validate"]).arg(&wf).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = s.flow().arg("run").arg(&wf).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let wf = s.write("wf.yaml", &two_tables.replace("table: b", "table: A"));
    let out = s.flow().args(["validate"]).arg(&wf).output().unwrap();
    assert!(
        stderr(&out).contains("the steps `a` and `b` both write"),
        "{}",
        stderr(&out)
    );
    // A link to a file that is not there yet leads to it all the same.
    std::os::unix::fs::symlink("linked.jsonl", s.path("link.jsonl")).unwrap();
    let wf = s.write(
        "wf.yaml",
        "name: two\nsteps:\n  - id: src\n    read: data.jsonl\n  - id: a\n    from: src\n    write: linked.jsonl\n  - id: b\n    from: a\n    write: link.jsonl\n",
    );
    let out = s.flow().arg("run").arg(&wf).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("writes") && stderr(&out).contains("too"),
        "{}",
        stderr(&out)
    );
    // A device takes any number of them.
    let wf = s.write(
        "wf.yaml",
        "name: two\nsteps:\n  - id: src\n    read: data.jsonl\n  - id: a\n    from: src\n    write: { path: /dev/null, format: jsonl }\n  - id: b\n    from: src\n    write: { path: /dev/null, format: jsonl }\n",
    );
    let out = s.flow().arg("run").arg(&wf).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn records_written_to_dev_stdout_reach_a_pipe() {
    let s = Scratch::new();
    s.write("data.jsonl", "{\"n\":1}\n");
    let wf = s.write(
        "wf.yaml",
        "name: so\nsteps:\n  - id: src\n    read: data.jsonl\n  - id: out\n    from: src\n    write: { path: /dev/stdout, format: jsonl }\n",
    );
    // (The test's stdout is a pipe: `/dev/stdout` leads to `pipe:[N]`.)
    let out = s.flow().args(["-q", "run", "--no-state"]).arg(&wf).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("{\"n\":1}\n"), "{}", stdout(&out));
}
