-- Registers a login (L) or membership (M) on this node, as a new version; a live node that held
-- it is told to end its older one. A new member's join is told to the room's other nodes.
-- ARGV: app, me, kind, room, uid, want_members (1: return the room's members on other nodes),
-- window_messages (0: recovery off), resume epoch ('' if none), resume position.
-- Returns {version, took_over (0|1), members}; with recovery, then the stream's epoch and last
-- position, and with a resume what s_resume found (1 and the messages, or 0).
local app, me, kind, room, uid = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local hk = hkey(app, kind, room)
local e = entry(app, kind, room, uid)
local v = redis.call('INCR', P .. 'seq')
local old = redis.call('HGET', hk, uid)
local se, sp, sb
if tonumber(ARGV[7]) > 0 then se, sp, sb = s_open(app, kind, room, uid) end
redis.call('HSET', hk, uid, regval(me, v, se, sb))
redis.call('SADD', idx(me), e)
local took, same = 0, false
if old then
  local n = split(old)
  if n == me then
    same = true
  else
    redis.call('SREM', idx(n), e)
    if kind == 'M' then rn_add(app, room, n, -1) end
    if alive(n) then
      took = 1
      if kind == 'L' then
        redis.call('PUBLISH', chan(n), 'L\n' .. app .. '\n' .. uid .. '\n' .. v .. '\n')
      else
        redis.call('PUBLISH', chan(n), 'M\n' .. app .. '\n' .. room .. '\n' .. uid .. '\n' .. v .. '\n')
      end
    end
  end
end
local members = {}
if kind == 'M' then
  if not same then rn_add(app, room, me, 1) end
  if took == 0 and not same then
    to_room_nodes(app, room, me, 'J\n' .. app .. '\n' .. room .. '\n' .. uid .. '\n')
  end
  if ARGV[6] == '1' then
    local all = redis.call('HGETALL', hk)
    for i = 1, #all, 2 do
      local n = split(all[i + 1])
      if n ~= me and alive(n) then members[#members + 1] = all[i] end
    end
  end
end
local out = {v, took, members}
if se then
  out[4], out[5] = se, sp
  if ARGV[8] ~= '' then
    local wmsgs = tonumber(ARGV[7])
    for _, x in ipairs(s_resume(app, kind, room, uid, se, sp, ARGV[8], tonumber(ARGV[9]), wmsgs)) do
      out[#out + 1] = x
    end
  end
end
return out
