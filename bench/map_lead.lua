-- Renames three fields and normalises the phone: the per-record mapping of
-- the streaming benchmark.
function transform(r, ctx)
  return {
    lead_id = r.id,
    full_name = r.name,
    org = r.company,
    email = r.email,
    phone = flow.phone(r.phone),
  }
end
