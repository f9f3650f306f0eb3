-- Read-only questions. ARGV: op, app, ...
--   'online', app, uid          -> 1 if uid is logged in on a live node
--   'room', app, room           -> the room's members on live nodes
--   'kick', app, room, me, uid  -> 'here' | 'gone' | the node told to kick (it PUBLISHes)
local op, app = ARGV[1], ARGV[2]
if op == 'online' then
  local v = redis.call('HGET', hkey(app, 'L', ''), ARGV[3])
  if v and alive((split(v))) then return 1 end
  return 0
elseif op == 'room' then
  local out = {}
  local all = redis.call('HGETALL', hkey(app, 'M', ARGV[3]))
  for i = 1, #all, 2 do
    if alive((split(all[i + 1]))) then out[#out + 1] = all[i] end
  end
  return out
elseif op == 'kick' then
  local room, me, uid = ARGV[3], ARGV[4], ARGV[5]
  local v = redis.call('HGET', hkey(app, 'M', room), uid)
  if not v then return 'gone' end
  local n = split(v)
  if n == me then return 'here' end
  if not alive(n) then return 'gone' end
  redis.call('PUBLISH', chan(n), 'K\n' .. app .. '\n' .. room .. '\n' .. uid .. '\n')
  return n
end
return redis.error_reply('unknown lookup')
