-- A client's message for a recipient not on its node. ARGV: app, me, kind (U|R|B), room, to,
-- prefix, body, window_messages, window_ms, meta, except (B). Returns 1 if it went to a node that
-- holds the recipient, or (recovery on) into the recipient's held stream (B: always 1).
-- With recovery on, every recipient is reached through Redis, this node's too (see route.lua).
local app, me, kind, room, to = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local prefix, body = ARGV[6], ARGV[7]
local wmsgs = tonumber(ARGV[8])
if wmsgs > 0 then
  local ctx = {app = app, kind = kind == 'U' and 'L' or 'M', room = room, meta = ARGV[10],
    body = body, wmsgs = wmsgs, wms = tonumber(ARGV[9])}
  local uids, vals = {to}, nil
  if kind == 'B' then uids, vals = s_room(app, room, ARGV[11]) end
  if #uids == 0 then return 1 end
  local _, held, forwarded = s_deliver(ctx, me, uids, prefix, false, vals)
  if kind == 'B' or held + forwarded > 0 then return 1 end
  return 0
end
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
