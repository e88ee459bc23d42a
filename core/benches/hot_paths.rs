//! Micro-benchmarks of the hot paths: record selection, template rendering,
//! the Lua transform call with its JSON <-> Lua conversion, and the
//! Pozvonim request signature.
//!
//! `cargo bench -p flow-core`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use flow_core::lua::{Limits, Output, Scanned, Script};
use flow_core::rawjson::RawRecords;
use flow_core::record::Records;
use flow_core::select::Selector;
use flow_core::template::Templates;
use serde_json::{json, Value};
use std::hint::black_box;
use std::sync::Arc;

/// A page in the shape of Neiros's deals list: 200 deals.
fn page() -> Value {
    let deals: Vec<Value> = (0..200)
        .map(|i| {
            json!({
                "id": 10_000 + i,
                "site_id": 100,
                "date": format!("2024-05-{:02}", 1 + i % 28),
                "phone": format!("8 (912) {:03}-{:02}-{:02}", i % 1000, i % 100, (i / 7) % 100),
                "name": format!("Deal {i}"),
                "summ": i * 1500,
                "status": "paid",
                "canal": "yandex.direct",
            })
        })
        .collect();
    json!({"data": {"projects": deals}, "last_page": 5000, "total": 1_000_000})
}

fn selection(c: &mut Criterion) {
    let body = page();
    let text = serde_json::to_vec(&body).expect("page");
    let mut g = c.benchmark_group("select");
    g.throughput(Throughput::Elements(200));
    let simple = Selector::new("$.data.projects[*]").expect("selector");
    g.bench_function("simple path, 200 records", |b| {
        b.iter_batched(|| body.clone(), |v| black_box(simple.take(v)), BatchSize::SmallInput)
    });
    let filter = Selector::new("$.data.projects[?(@.summ > 1000)]").expect("selector");
    g.bench_function("filter, 200 records", |b| {
        b.iter(|| black_box(filter.select(&body).len()))
    });
    g.throughput(Throughput::Bytes(text.len() as u64));
    let keys = vec!["data".to_owned(), "projects".to_owned()];
    let page_text = String::from_utf8(text.clone()).expect("utf-8");
    g.bench_function("split page, records kept as text", |b| {
        b.iter_batched(
            || page_text.clone(),
            |t| black_box(flow_core::rawjson::split(t, &keys, false).map(|(_, r)| r.map(|r| r.len()))),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("parse page + select", |b| {
        b.iter(|| {
            let v: Value = serde_json::from_slice(&text).expect("json");
            black_box(simple.take(v))
        })
    });
    g.finish();
}

fn templates(c: &mut Criterion) {
    let t = Templates::new();
    let ctx = minijinja::context! {
        item => minijinja::Value::from_serialize(json!({"phone": "+79123456789", "date": "2024-05-01", "name": "Анна"})),
        inputs => minijinja::Value::from_serialize(json!({"source": "expo"})),
    };
    let mut g = c.benchmark_group("template");
    g.bench_function("text with two fields", |b| {
        b.iter(|| black_box(t.render_str("{{ item.phone }}-{{ item.date }}", &ctx).expect("render")))
    });
    g.bench_function("single typed expression", |b| {
        b.iter(|| black_box(t.render("{{ item.name }}", &ctx).expect("render")))
    });
    g.bench_function("plain string", |b| {
        b.iter(|| black_box(t.render("no template here", &ctx).expect("render")))
    });
    g.finish();
}

fn lua(c: &mut Criterion) {
    let source = r#"
function transform(r, ctx)
  return { deal_id = r.id, client_phone = flow.phone(r.phone), amount = r.summ, date = r.date, status = r.status }
end
"#;
    let script = Script::load(source, "map.lua", Limits::default(), "map", &json!({})).expect("script");
    let record = page()["data"]["projects"][7].clone();
    let mut g = c.benchmark_group("lua");
    g.throughput(Throughput::Elements(1));
    g.bench_function("transform one record", |b| {
        b.iter(|| black_box(script.transform(&record).expect("transform")))
    });
    g.finish();

    // A page kept as text, as a `lua` step gets it from a read: its fields
    // found ahead, then every record through bench/map_deal.lua. The
    // records are shaped as bench/gen_data.py's.
    let phones = ["+79215451961", "8 (912) 345-67-89", "7-903-123-45-67", "89161234567"];
    let lines: String = (0..200)
        .map(|i| {
            json!({
                "id": 1_000_000 + i, "site_id": 100, "date": "2024-05-12 16:00:00",
                "phone": phones[i % 4], "name": "Кузнецов Иван", "email": format!("client{i}@example.ru"),
                "summ": 21_600 + i, "status": "new", "canal": "Прямой заход", "traffic": "social",
                "utm_campaign": "okna_msk", "city": "Казань", "neiros_visit": 23_927_062 + i,
                "comment": if i % 3 == 0 { "" } else { "Перезвонить после обеда" },
            })
            .to_string()
                + "\n"
        })
        .collect();
    let records = Arc::new(Records::Raw(RawRecords::from_lines(lines)));
    let map_deal = include_str!("../../bench/map_deal.lua");
    let script = Script::load(map_deal, "map_deal.lua", Limits::default(), "map", &json!({})).expect("script");
    let mut g = c.benchmark_group("lua page");
    g.throughput(Throughput::Elements(200));
    g.bench_function("find the fields of 200 records kept as text", |b| {
        b.iter(|| black_box(Scanned::of(Arc::clone(&records))))
    });
    let scanned = Scanned::of(Arc::clone(&records));
    let mut out = Output::default();
    g.bench_function("map 200 records kept as text (bench/map_deal.lua)", |b| {
        b.iter(|| {
            out.take();
            let (ran, result) = script.transform_many(&|i| scanned.input(i), 0..200, &mut out, 200);
            result.expect("transform");
            black_box(ran)
        })
    });
    g.finish();
}

fn signature(c: &mut Criterion) {
    let params: serde_json::Map<String, Value> = serde_json::from_value(json!({
        "uid": 65364,
        "site": {"url": "https://example.ru", "name": "Пример", "managers": [{"phone": "+79990001122", "name": "Анна"}]},
        "start_at": "2024-05-01 00:00:00",
        "ids": [1, 2, 3],
    }))
    .expect("params");
    c.bench_function("pozvonim signature", |b| {
        b.iter(|| {
            let query = flow_core::php::build_sorted_query(&params);
            black_box(flow_core::lua::md5_hex(format!("token{query}").as_bytes()))
        })
    });
}

criterion_group!(benches, selection, templates, lua, signature);
criterion_main!(benches);
