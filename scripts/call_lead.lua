-- Turns Pozvonim calls and EyeNewton call requests into Roistat leads.
--
-- A Pozvonim call carries `client` (the caller's phone), `created_at` and
-- `status`; an EyeNewton call request carries `clientPhone`, `requestDate`
-- and where the visitor came from (`referrerHost`, `landingUtmSource`).
-- Each phone becomes +7XXXXXXXXXX; a person who both called and asked for a
-- callback becomes one lead, from whichever record came first. Records with
-- no usable phone are rejected with the reason.
local seen = {}

local function lead(phone, date, title, source)
  local key = flow.phone(phone)
  if key == nil then
    error("no usable phone: '" .. tostring(phone or "") .. "'", 0)
  end
  if seen[key] then
    return nil
  end
  seen[key] = true
  local ts = flow.date.parse(date)
  return {
    phone = key,
    title = title,
    source = source,
    -- Roistat wants 2022-01-01T21:00:00+0000.
    creation_date = flow.date.format(ts or flow.date.now(), "%Y-%m-%dT%H:%M:%S+0000"),
  }
end

function transform(record, ctx)
  if record.clientPhone ~= nil then
    local source = record.landingUtmSource
    if source == nil or source == flow.null then
      source = ctx.inputs.source
    end
    return lead(record.clientPhone, record.requestDate, "Callback request from " .. tostring(record.referrerHost), source)
  end
  return lead(record.client, record.created_at, "Call " .. tostring(record.id) .. " (" .. tostring(record.status) .. ")", ctx.inputs.source)
end
