-- Keeps a lead only when its phone is a Russian number, normalised to
-- +7XXXXXXXXXX, and tags it with the workflow's `source` input.
function transform(record, ctx)
  local phone = flow.phone(record.phone)   -- "+7XXXXXXXXXX" or nil
  if phone == nil then return nil end
  return { name = record.name, phone = phone, source = ctx.inputs.source }
end
