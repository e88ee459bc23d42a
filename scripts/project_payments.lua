-- Sums the received payments of each solOS project and says which Neiros
-- deal and which client phone the sum belongs to.
--
-- Reads two kinds of records: projects (`id`, and under `data` the dynamic
-- fields `neiros_site_id`, `neiros_deal_id`, `client_phone`) and payments
-- (`project_id`, `type` "1" for a receipt, `sum`, `date`). Emits one record
-- per project that received money, when every record has been seen:
-- { project_id, site_id, deal_id, phone, summ, date } where `summ` is the
-- total received and `date` the day of the latest receipt. A project whose
-- deal is not linked in the dynamic fields is rejected with the reason.
local projects = {}
local totals = {}

function transform(record, ctx)
  if record.project_id ~= nil then
    if tostring(record.type) == "1" then
      local t = totals[record.project_id]
      if t == nil then
        t = { summ = 0, date = "" }
        totals[record.project_id] = t
      end
      t.summ = t.summ + (tonumber(record.sum) or 0)
      if tostring(record.date) > t.date then
        t.date = tostring(record.date)
      end
    end
  elseif record.id ~= nil then
    projects[record.id] = record
  end
  return nil
end

function finish(ctx)
  local ids = {}
  for id in pairs(totals) do ids[#ids + 1] = id end
  table.sort(ids)
  local out = {}
  for _, id in ipairs(ids) do
    local p = projects[id]
    local data = (p and p.data) or {}
    if data.neiros_deal_id == nil or data.neiros_site_id == nil then
      error("project " .. tostring(id) .. " has no Neiros deal in its fields neiros_site_id/neiros_deal_id", 0)
    end
    out[#out + 1] = {
      project_id = id,
      site_id = data.neiros_site_id,
      deal_id = data.neiros_deal_id,
      phone = flow.phone(data.client_phone),
      summ = totals[id].summ,
      date = totals[id].date,
    }
  end
  return out
end
