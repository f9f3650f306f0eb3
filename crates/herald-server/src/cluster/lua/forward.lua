-- A client's message for a recipient not on its node. ARGV: app, me, kind (U|R|B), room, to,
-- prefix, body. Returns 1 if it went to a node that holds the recipient (B: always 1).
local app, me, kind, room, to = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local prefix, body = ARGV[6], ARGV[7]
if kind == 'B' then
  to_room_nodes(app, room, me, prefix .. '*\n' .. body)
  return 1
end
local v = redis.call('HGET', hkey(app, kind == 'U' and 'L' or 'M', room), to)
if not v then return 0 end
local n = split(v)
if n == me or not alive(n) then return 0 end
redis.call('PUBLISH', chan(n), prefix .. to .. '\n' .. body)
return 1
