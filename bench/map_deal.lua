-- The per-record mapping of the benchmark's extract_map jobs: renames three
-- fields and normalises the phone to +7XXXXXXXXXX; other fields pass as
-- they are. bench/peers/ does the same in dlt and Airbyte.
function transform(r, ctx)
  r.deal_id, r.id = r.id, nil
  r.client_name, r.name = r.name, nil
  r.amount, r.summ = r.summ, nil
  r.phone = flow.phone(r.phone)
  return r
end
