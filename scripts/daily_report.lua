-- Sums Roistat leads and Neiros deals by day. Leads carry `creation_date`,
-- `status` ("1" is paid) and `price`; deals carry `date`. Emits one row a
-- day, in date order, when every record has been seen.
local days = {}

local function day_of(text)
  local ts = text and flow.date.parse(text)
  if ts == nil then return nil end
  return flow.date.format(ts, "%Y-%m-%d")
end

local function row(day)
  local r = days[day]
  if r == nil then
    r = { day = day, leads = 0, paid_leads = 0, revenue = 0, deals = 0 }
    days[day] = r
  end
  return r
end

function transform(record, ctx)
  if record.creation_date ~= nil then
    local day = day_of(record.creation_date)
    if day ~= nil then
      local r = row(day)
      r.leads = r.leads + 1
      if tostring(record.status) == "1" then
        r.paid_leads = r.paid_leads + 1
        r.revenue = r.revenue + (tonumber(record.price) or 0)
      end
    end
  elseif record.date ~= nil then
    local day = day_of(record.date)
    if day ~= nil then
      local r = row(day)
      r.deals = r.deals + 1
    end
  end
  return nil
end

function finish(ctx)
  local keys = {}
  for day in pairs(days) do keys[#keys + 1] = day end
  table.sort(keys)
  local out = {}
  for _, day in ipairs(keys) do out[#out + 1] = days[day] end
  return out
end
