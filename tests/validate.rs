//! `flow validate` and the checks `flow run` makes before it starts: every
//! error names the file, the line, the path and what to do.

mod common;

use common::{stderr, stdout, Scratch};

fn check(s: &Scratch, yaml: &str) -> (i32, String) {
    let wf = s.write("wf.yaml", yaml);
    let out = s.flow().arg("validate").arg(&wf).output().unwrap();
    (out.status.code().unwrap_or(-1), stderr(&out))
}

#[test]
fn bundled_examples_are_valid() {
    let out = common::flow()
        .current_dir(common::repo())
        .args(["validate", "workflows/clean-leads.yaml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("ok: workflows/clean-leads.yaml"));
}

#[test]
fn yaml_syntax_errors_have_line_and_column() {
    let s = Scratch::new();
    let (code, err) = check(&s, "name: x\nsteps:\n  - id: a\n    read: [a.csv\n");
    assert_eq!(code, 2);
    assert!(err.contains("wf.yaml:"), "{err}");
    assert!(err.contains(":5:") || err.contains(":4:"), "{err}");
}

#[test]
fn unknown_keys_get_a_path_line_and_suggestion() {
    let s = Scratch::new();
    s.write("a.csv", "x\n1\n");
    let (code, err) = check(
        &s,
        "name: x\nsteps:\n  - id: a\n    read: a.csv\n  - id: b\n    from: a\n    lue: s.lua\n",
    );
    assert_eq!(code, 2);
    assert!(err.contains("wf.yaml:7:5: steps[1]: unknown key `lue`"), "{err}");
    assert!(err.contains("did you mean `lua`?"), "{err}");
}

#[test]
fn references_scripts_and_templates_are_checked() {
    let s = Scratch::new();
    s.write("bad.lua", "function transform(r)\n  return {\nend\n");
    let (code, err) = check(
        &s,
        r#"name: x
inputs:
  source: { type: string, default: a }
steps:
  - id: leads
    read: a.csv
  - id: clean
    from: lead
    lua: missing.lua
  - id: syntax
    from: leads
    lua: bad.lua
  - id: out
    from: leads
    write: "{{ inputs.sorce }}/x.jsonl"
  - id: later
    if: "{{ steps.out.cont > 0 and steps.nope.count > 0 }}"
    from: leads
    write: "{{ item.x }}.csv"
  - id: weird
    from: leads
    write: out.txt
outputs:
  n: "{{ steps.out.count + }}"
"#,
    );
    assert_eq!(code, 2);
    for expect in [
        "steps[1].from: `from` names the step `lead`",
        "did you mean `leads`?",
        "steps[1].lua: the script",
        "missing.lua does not exist",
        "steps[2].lua: Lua: ",
        "bad.lua:3:",
        "`inputs.sorce` is not a declared input",
        "did you mean `inputs.source`?",
        "steps have no field `cont`",
        "did you mean `steps.out.count`?",
        "`steps.nope` is not a step declared before this point",
        "`item` is only defined inside a `for_each`",
        "cannot tell the format of `out.txt`",
        "outputs.n: template syntax error",
    ] {
        assert!(err.contains(expect), "missing `{expect}` in:\n{err}");
    }
    // Each problem is on its own line with the file and line number.
    assert!(
        err.lines()
            .filter(|l| l.starts_with("error: "))
            .all(|l| l.contains("wf.yaml:")),
        "{err}"
    );
}

#[test]
fn writes_that_would_lose_records_and_durations_past_a_year_are_refused() {
    let s = Scratch::new();
    let (code, err) = check(
        &s,
        r#"name: x
steps:
  - id: a
    read: a.csv
  - id: b
    from: a
    write: out.jsonl
  - id: c
    from: a
    write: ./out.jsonl
  - id: d
    from: a
    write: { path: all.json, append: true }
"#,
    );
    assert_eq!(code, 2, "{err}");
    for expect in [
        "wf.yaml:10:",
        "the steps `b` and `c` both write `./out.jsonl`",
        "wf.yaml:13:",
        "a JSON array file cannot be added to",
    ] {
        assert!(err.contains(expect), "missing `{expect}` in:\n{err}");
    }
    let (code, err) = check(
        &s,
        "name: x\nsteps:\n  - id: a\n    read: a.csv\n    timeout: 99999999999999999999s\n",
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("wf.yaml:3:") && err.contains("longer than a year"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn step_shape_errors() {
    let s = Scratch::new();
    let (code, err) = check(
        &s,
        r#"name: x
steps:
  - id: a
  - id: b
    read: a.csv
    write: b.csv
  - id: c
    lua: x.lua
  - id: a
    read: a.csv
  - id: e
    for_each: a
  - id: f
    from: a
    retry: { attempts: 3 }
    run: "function transform(r) return r end"
"#,
    );
    assert_eq!(code, 2);
    for expect in [
        "the step `a` does nothing",
        "has `read` and `write`; a step does one thing",
        "a `lua` step needs `from:`",
        "the step id `a` is used twice",
        "a `for_each` needs nested `steps`",
        "a `lua` step cannot be retried",
    ] {
        assert!(err.contains(expect), "missing `{expect}` in:\n{err}");
    }
}

#[test]
fn run_checks_before_it_starts() {
    let s = Scratch::new();
    let wf = s.write("wf.yaml", "name: x\nsteps:\n  - id: a\n    reed: a.csv\n");
    let out = s.flow().arg("run").arg(&wf).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("did you mean `read`?"), "{}", stderr(&out));
    let out = s.flow().args(["run", "nothing-here.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("nothing-here.yaml: the file does not exist"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn schema_and_completions() {
    let out = common::flow().arg("schema").output().unwrap();
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(schema["properties"]["steps"].is_object(), "{schema}");
    let step = serde_json::to_string(&schema).unwrap();
    assert!(step.contains("for_each") && step.contains("on_error"));
    let out = common::flow().args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success());
    assert!(stdout(&out).contains("flow"));
    let out = common::flow().args(["frobnicate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bundled_providers_load_with_every_documented_action() {
    let out = common::flow().args(["providers", "-o", "json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let count = |name: &str| {
        all.as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["actions"].as_array().unwrap().len())
            .unwrap_or(0)
    };
    for (name, actions) in [
        ("neiros", 4),
        ("eyenewton", 7),
        ("pozvonim", 27),
        ("solos", 9),
        ("roistat", 4),
    ] {
        assert_eq!(count(name), actions, "{name}");
    }
    let files: Vec<String> = ["neiros", "eyenewton", "pozvonim", "solos", "roistat"]
        .iter()
        .map(|p| format!("providers/{p}.yaml"))
        .collect();
    let out = common::flow()
        .current_dir(common::repo())
        .arg("validate")
        .args(&files)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().filter(|l| l.starts_with("ok: ")).count(), 5);
}

#[test]
fn workflow_connections_and_calls_are_checked() {
    let s = Scratch::new();
    let (code, err) = check(
        &s,
        r#"name: x
connections:
  rs: { provider: roistat, config: { api_kye: x, project: "1" } }
  nope: { provider: roistatt }
steps:
  - id: a
    call: rs.list_lead
  - id: b
    call: rs.create_lead
    with: { phonne: "+79123456789" }
  - id: c
    call: rss.list_leads
"#,
    );
    assert_eq!(code, 2);
    for expect in [
        "connections.rs.config: the provider `roistat` has no config `api_kye`; did you mean `api_key`?",
        "there is no provider `roistatt`; did you mean `roistat`?",
        "steps[0].call: the provider `roistat` has no action `list_lead`",
        "did you mean `list_leads`?",
        "steps[1].with.phonne: `roistat.create_lead` has no parameter `phonne`",
        "steps[2].call: there is no connection `rss`",
        "did you mean `rs`?",
    ] {
        assert!(err.contains(expect), "missing `{expect}` in:\n{err}");
    }
}

#[test]
fn lua_parallel_is_between_one_and_sixty_four() {
    let s = Scratch::new();
    s.write("a.jsonl", "{}\n");
    s.write("m.lua", "function transform(r) return r end\n");
    for (n, says) in [(0, "at least 1"), (600, "(64)")] {
        let (code, err) = check(
            &s,
            &format!("name: x\nsteps:\n  - id: a\n    read: a.jsonl\n  - id: b\n    from: a\n    lua: {{ path: m.lua, parallel: {n} }}\n"),
        );
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("steps[1].lua.parallel") && err.contains(says), "{err}");
    }
}

#[test]
fn a_templated_file_name_takes_its_format_from_the_extension_after_it() {
    let s = Scratch::new();
    s.write("a.csv", "x\n1\n");
    let wf = "name: x\ninputs:\n  day: { type: string, default: d1 }\nsteps:\n  - id: a\n    read: a.csv\n  - id: b\n    from: a\n    write: \"out/leads-{{ inputs.day }}.jsonl\"\n";
    let (code, err) = check(&s, wf);
    assert_eq!(code, 0, "{err}");
    let out = s
        .flow()
        .args(["run", "--no-state", "wf.yaml", "-i", "day=d2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(s.read("out/leads-d2.jsonl"), "{\"x\":\"1\"}\n");
    // With no extension after it, the format must be given.
    let (code, err) = check(&s, &wf.replace(".jsonl\"", "\""));
    assert_eq!(code, 2);
    assert!(err.contains("cannot tell the format"), "{err}");
}

#[test]
fn descriptors_name_the_line_of_a_bad_key_and_a_key_written_twice() {
    let s = Scratch::new();
    let check_file = |name: &str, text: &str| {
        let file = s.write(name, text);
        let out = s.flow().arg("validate").arg(&file).output().unwrap();
        (out.status.code().unwrap_or(-1), stderr(&out))
    };
    // A key inside a map picked by its `type`.
    let (code, err) = check_file(
        "p/demo.yaml",
        "name: demo\nbase_url: \"http://x\"\npagination: { type: page_number, param: page, page_param: p }\nactions:\n  list_items: { path: /items }\n",
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("demo.yaml:3:") && err.contains("unknown key `page_param`"),
        "{err}"
    );
    // A descriptor that YAML cannot read is still checked as one.
    let (code, err) = check_file(
        "p/broken.yaml",
        "name: demo\nbase_url: \"http://x\"\nactions:\n  list_items: { path: /items\n",
    );
    assert_eq!(code, 2);
    assert!(
        !err.contains("the keys allowed here are: name, description, inputs"),
        "{err}"
    );
    // Two actions of one name.
    let (code, err) = check_file(
        "p/dup.yaml",
        "name: demo\nbase_url: \"http://x\"\nactions:\n  list_items: { path: /a }\n  list_items: { path: /b }\n",
    );
    assert_eq!(code, 2);
    assert!(err.contains("actions: the key `list_items` is written twice"), "{err}");
    // Two connections of one name in a workflow.
    let (code, err) = check(
        &s,
        "name: x\nconnections:\n  a: { provider: neiros }\n  a: { provider: solos }\nsteps:\n  - id: a\n    read: a.csv\n",
    );
    assert_eq!(code, 2);
    assert!(err.contains("connections: the key `a` is written twice"), "{err}");
}

#[test]
fn two_descriptors_of_one_name_in_one_folder_are_refused() {
    let s = Scratch::new();
    let roistat = std::fs::read_to_string(common::repo().join("providers/roistat.yaml")).unwrap();
    s.write("providers/a.yaml", &roistat);
    s.write("providers/b.yml", &roistat);
    let out = s
        .flow()
        .arg("--providers")
        .arg(s.path("providers"))
        .arg("providers")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("b.yml: `roistat` is also the name of") && stderr(&out).contains("a.yaml"),
        "{}",
        stderr(&out)
    );
    // One copy in a folder of its own replaces the bundled one, as before.
    std::fs::remove_file(s.path("providers/b.yml")).unwrap();
    let out = s
        .flow()
        .arg("--providers")
        .arg(s.path("providers"))
        .arg("providers")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}
