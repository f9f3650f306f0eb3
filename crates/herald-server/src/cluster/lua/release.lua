-- Forgets a login (L) or membership (M) this node ended, if the cluster still has it as this
-- node's `version` ('*': any version below `below`, for purging after an outage). A member's
-- leave is told to the room's other nodes. ARGV: app, me, kind, room, uid, version, reason, below,
-- keep_ms (recovery: the stream is held this long, the connection was lost; 0: forgotten; -1:
-- recovery off). Returns 1 if forgotten.
local app, me, kind, room, uid = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local hk = hkey(app, kind, room)
local cur = redis.call('HGET', hk, uid)
if not cur then
  redis.call('SREM', idx(me), entry(app, kind, room, uid))
  return 0
end
local n, ver = split(cur)
if n ~= me then
  redis.call('SREM', idx(me), entry(app, kind, room, uid))
  return 0
end
if ARGV[6] == '*' then
  if ver >= tonumber(ARGV[8]) then return 0 end
elseif ver ~= tonumber(ARGV[6]) then
  return 0
end
redis.call('HDEL', hk, uid)
redis.call('SREM', idx(me), entry(app, kind, room, uid))
local keep = tonumber(ARGV[9])
if keep >= 0 then s_end(app, kind, room, uid, keep) end
if kind == 'M' then
  rn_add(app, room, me, -1)
  to_room_nodes(app, room, me, 'Q\n' .. app .. '\n' .. room .. '\n' .. uid .. '\n' .. ARGV[7] .. '\n')
end
return 1
