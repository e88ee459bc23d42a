-- wrk script for bench/run.sh: GET /<set>/projects?page=N with the bearer
-- token, N cycling through 1..PAGES on each connection so the server reads
-- every page file, not one cached page.
-- Usage: wrk ... -s wrk_pages.lua http://127.0.0.1:PORT -- SET PAGES TOKEN
local set, pages
local page = 0

function init(args)
  set, pages = args[1], tonumber(args[2])
  wrk.headers["Authorization"] = "Bearer " .. args[3]
end

function request()
  page = page % pages + 1
  return wrk.format("GET", "/" .. set .. "/projects?page=" .. page)
end
