-- Checks one trade-show row: the phone must be a Russian number; it becomes
-- +7XXXXXXXXXX. A row without one is rejected with the reason (the workflow
-- writes it to the rejects file).
function transform(row, ctx)
  local phone = flow.phone(row.phone)
  if phone == nil then
    error("no usable phone: '" .. (row.phone or "") .. "'", 0)
  end
  return {
    name = row.name,
    phone = phone,
    email = row.email,
    company = row.company,
  }
end
