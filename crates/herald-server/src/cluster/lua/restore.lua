-- Re-registers, after an outage, a login (L) or membership (M) this node holds: kept if the
-- cluster has it as this node's, taken if nobody live holds it, lost if another live node does.
-- ARGV: app, me, kind, room, uid, the version this node knows it by (0: registered locally while
-- Redis was away), window_messages (0: recovery off; else the stream is kept while registered).
-- Returns the version, -1 if lost, or 0 if the cluster has it as this node's under another
-- version: a newer login or join of the same user here, whose commit ends the one being restored.
local app, me, kind, room, uid = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local known = tonumber(ARGV[6])
local hk = hkey(app, kind, room)
local e = entry(app, kind, room, uid)
local cur = redis.call('HGET', hk, uid)
if cur then
  local n, ver = split(cur)
  if n == me then
    if known ~= 0 and ver ~= known then return 0 end
    redis.call('SADD', idx(me), e)
    if tonumber(ARGV[7]) > 0 then
      local se, _, sb = s_open(app, kind, room, uid)
      redis.call('HSET', hk, uid, regval(me, ver, se, sb))
    end
    return ver
  end
  if alive(n) then return -1 end
  redis.call('SREM', idx(n), e)
  if kind == 'M' then rn_add(app, room, n, -1) end
end
local v = redis.call('INCR', P .. 'seq')
local se, sb
if tonumber(ARGV[7]) > 0 then
  local _
  se, _, sb = s_open(app, kind, room, uid)
end
redis.call('HSET', hk, uid, regval(me, v, se, sb))
redis.call('SADD', idx(me), e)
if kind == 'M' then
  rn_add(app, room, me, 1)
  if not cur then
    to_room_nodes(app, room, me, 'J\n' .. app .. '\n' .. room .. '\n' .. uid .. '\n')
  end
end
return v
