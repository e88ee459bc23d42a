#!/usr/bin/env python3
"""Generates the static pages the benchmark's nginx serves.

Usage: gen_data.py OUT_DIR NAME:RECORDS [NAME:RECORDS...] [--items N]

For each data set NAME it writes, with 200 records a page:
  OUT_DIR/NAME/projects/<page>.json   Neiros-style pages:
      {"data":{"projects":[...]},"last_page":P,"total":T}
  OUT_DIR/NAME/projects/empty.json    the answer past the last page
  OUT_DIR/NAME/offset/<offset>.json   offset-style pages without a total:
      {"data":{"projects":[...]}}
  OUT_DIR/NAME/offset/empty.json      the answer past the end (empty list)
and OUT_DIR/items.jsonl, N deals to create (the create job's input).

Records look like real deals (ids, dates, Russian phones in several
spellings, Cyrillic names) and are deterministic: the same seed, the same
bytes.
"""

import json
import os
import random
import sys

PAGE = 200

FIRST = ["Сергей", "Анна", "Дмитрий", "Ольга", "Алексей", "Мария", "Иван", "Елена", "Павел", "Наталья"]
LAST = ["Иванов", "Смирнова", "Кузнецов", "Попова", "Соколов", "Лебедева", "Новиков", "Морозова", "Волков", "Козлова"]
STATUS = ["new", "in_work", "paid", "lost"]
CANAL = ["Яндекс.Директ", "Google Ads", "Органика", "Прямой заход", "ВКонтакте"]
TRAFFIC = ["cpc", "organic", "direct", "social"]
CAMPAIGN = ["okna_msk", "dveri_spb", "kuhni_ekb", "brand", "retarget"]
CITY = ["Москва", "Санкт-Петербург", "Екатеринбург", "Казань", "Пермь"]


def phone(rng):
    """A Russian mobile number in one of the spellings people type."""
    code = rng.randint(900, 999)
    a, b, c = rng.randint(0, 999), rng.randint(0, 99), rng.randint(0, 99)
    style = rng.randrange(4)
    if style == 0:
        return f"8 ({code}) {a:03d}-{b:02d}-{c:02d}"
    if style == 1:
        return f"+7 {code} {a:03d}-{b:02d}-{c:02d}"
    if style == 2:
        return f"+7{code}{a:03d}{b:02d}{c:02d}"
    return f"8-{code}-{a:03d}-{b:02d}-{c:02d}"


def record(rng, i):
    first, last = rng.choice(FIRST), rng.choice(LAST)
    day, hour, minute = rng.randint(1, 28), rng.randint(8, 21), rng.randint(0, 59)
    return {
        "id": 1_000_000 + i,
        "site_id": 100 + i % 7,
        "date": f"2024-05-{day:02d} {hour:02d}:{minute:02d}:00",
        "phone": phone(rng),
        "name": f"{last} {first}",
        "email": f"client{i}@example.ru",
        "summ": rng.randint(0, 500) * 100,
        "status": rng.choice(STATUS),
        "canal": rng.choice(CANAL),
        "traffic": rng.choice(TRAFFIC),
        "utm_campaign": rng.choice(CAMPAIGN),
        "city": rng.choice(CITY),
        "neiros_visit": rng.randint(10_000_000, 99_999_999),
        "comment": "Перезвонить после обеда" if i % 3 else "",
    }


def write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def data_set(out, name, total):
    rng = random.Random(f"flow-bench-{name}")
    pages = (total + PAGE - 1) // PAGE
    os.makedirs(f"{out}/{name}/projects", exist_ok=True)
    os.makedirs(f"{out}/{name}/offset", exist_ok=True)
    size = 0
    for page in range(1, pages + 1):
        start = (page - 1) * PAGE
        rows = [json.dumps(record(rng, i), ensure_ascii=False, separators=(",", ":"))
                for i in range(start, min(start + PAGE, total))]
        size += sum(len(r.encode()) for r in rows)
        body = "[" + ",".join(rows) + "]"
        write(f"{out}/{name}/projects/{page}.json",
              f'{{"data":{{"projects":{body}}},"last_page":{pages},"total":{total}}}')
        write(f"{out}/{name}/offset/{start}.json", f'{{"data":{{"projects":{body}}}}}')
    write(f"{out}/{name}/projects/empty.json",
          f'{{"data":{{"projects":[]}},"last_page":{pages},"total":{total}}}')
    write(f"{out}/{name}/offset/empty.json", '{"data":{"projects":[]}}')
    print(f"{name}: {total} records, {pages} pages, {size / total:.0f} bytes a record", file=sys.stderr)


def items(out, n):
    rng = random.Random("flow-bench-items")
    with open(f"{out}/items.jsonl", "w", encoding="utf-8") as f:
        for i in range(n):
            r = record(rng, i)
            f.write(json.dumps({"name": r["name"], "phone": r["phone"], "summ": r["summ"]},
                               ensure_ascii=False) + "\n")


def main(argv):
    out, rest = argv[0], argv[1:]
    n_items = 0
    if "--items" in rest:
        k = rest.index("--items")
        n_items = int(rest[k + 1])
        del rest[k:k + 2]
    for spec in rest:
        name, total = spec.split(":")
        data_set(out, name, int(total))
    if n_items:
        items(out, n_items)


if __name__ == "__main__":
    main(sys.argv[1:])
