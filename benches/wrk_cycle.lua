-- wrk script: GET /api/v3/files/{hash}, cycling through a list of hashes, bodies not inspected.
--
--   wrk -t1 -c64 -d10s -H 'x-apikey: testkey' -s benches/wrk_cycle.lua URL -- HASHFILE
--
-- Used to compare the raw serving rate of two mocks: wrk only counts responses and never hands
-- a body to Lua, so a mock with larger (more realistic) bodies is not charged for wrk's Lua.
local hashes, n, i = {}, 0, 0

function init(args)
   for line in io.lines(args[1]) do
      if line ~= "" then
         n = n + 1
         hashes[n] = line
      end
   end
end

function request()
   i = i % n + 1
   return wrk.format("GET", "/api/v3/files/" .. hashes[i])
end
