-- Keeps this node alive for ttl ms, and sweeps (a batch of) what one dead node had registered,
-- telling the rooms' other nodes their members left, and holding their streams for keep_ms (-1:
-- recovery off). ARGV: me, ttl_ms, batch, dropped_reason, keep_ms.
-- Returns {1 if this node had been given up for dead (it must re-register), swept entries...}.
local me, ttl, batch, reason = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local t = now_ms()
local prev = redis.call('ZSCORE', P .. 'nodes', me)
redis.call('ZADD', P .. 'nodes', t + ttl, me)
local out = {0}
if not prev or tonumber(prev) <= t then out[1] = 1 end
local dead = redis.call('ZRANGEBYSCORE', P .. 'nodes', '-inf', t, 'LIMIT', 0, 1)
if #dead == 0 then return out end
local d = dead[1]
for _, e in ipairs(redis.call('SPOP', idx(d), batch)) do
  local f = {}
  for part in string.gmatch(e, '[^\t]+') do f[#f + 1] = part end
  local kind, app = f[1], f[2]
  local room, uid = '', f[3]
  if kind == 'M' then room, uid = f[3], f[4] end
  local hk = hkey(app, kind, room)
  local cur = redis.call('HGET', hk, uid)
  if cur and split(cur) == d then
    redis.call('HDEL', hk, uid)
    if tonumber(ARGV[5]) >= 0 then s_end(app, kind, room, uid, tonumber(ARGV[5])) end
    if kind == 'M' then
      rn_add(app, room, d, -1)
      to_room_nodes(app, room, d, 'Q\n' .. app .. '\n' .. room .. '\n' .. uid .. '\n' .. reason .. '\n')
    end
    out[#out + 1] = e
  end
end
if redis.call('SCARD', idx(d)) == 0 then redis.call('ZREM', P .. 'nodes', d) end
return out
