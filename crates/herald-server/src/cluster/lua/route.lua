-- An OpenAPI message: the app's rate limit, the From rule, then one PUBLISH per node that holds
-- recipients. ARGV: app, me, now_us, limit, rate_member, kind (U|R|B), from, room, prefix, body,
-- window_messages, window_ms, meta ("<flags>\n<accepted µs>\n"), uids... Returns
-- {'rate', retry_us} | {'from'} | {'ok', here (uids), missing (count; with a delivery report,
-- the prefix starting with R or A: the uids), forwarded (count), nodes forwarded to, held (as
-- missing)} (U|R) | {'ok', here (0|1), nodes forwarded to, held (as missing)} (B).
-- With recovery on (window_messages > 0), every recipient's stream takes the message (this
-- node's recipients come back through its channel, in position order: `here` is always empty),
-- and a broadcast names its recipients: the room's members and held streams.
local app, me, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local limit, kind, from, room = tonumber(ARGV[4]), ARGV[6], ARGV[7], ARGV[8]
local prefix, body = ARGV[9], ARGV[10]
local rk = P .. '{' .. app .. '}:rate'
redis.call('ZREMRANGEBYSCORE', rk, '-inf', now - 1000000)
if redis.call('ZCARD', rk) >= limit then
  local oldest = redis.call('ZRANGE', rk, 0, 0, 'WITHSCORES')
  return {'rate', tostring(tonumber(oldest[2]) + 1000000 - now)}
end
redis.call('ZADD', rk, now, ARGV[5])
redis.call('PEXPIRE', rk, 2000)
local hk = hkey(app, kind == 'U' and 'L' or 'M', room)
local f = redis.call('HGET', hk, from)
if f and alive((split(f))) then return {'from'} end
local wmsgs = tonumber(ARGV[11])
local lead = string.sub(prefix, 1, 2)
local report = lead == 'R\n' or lead == 'A\n'
if wmsgs > 0 then
  local ctx = {app = app, kind = kind == 'U' and 'L' or 'M', room = room, meta = ARGV[13],
    body = body, wmsgs = wmsgs, wms = tonumber(ARGV[12])}
  local uids, vals = {}, nil
  if kind == 'B' then
    uids, vals = s_room(app, room, '')
  else
    for i = 14, #ARGV do uids[#uids + 1] = ARGV[i] end
  end
  if #uids == 0 then
    if kind == 'B' then return {'ok', 0, 0, report and {} or 0} end
    return {'ok', {}, report and {} or 0, 0, 0, report and {} or 0}
  end
  local missing, held, forwarded, nodes = s_deliver(ctx, me, uids, prefix, report, vals)
  if kind == 'B' then return {'ok', 0, nodes, held} end
  return {'ok', {}, missing, forwarded, nodes, held}
end
if kind == 'B' then
  local here = 0
  if redis.call('HEXISTS', rnkey(app, room), me) == 1 then here = 1 end
  return {'ok', here, to_room_nodes(app, room, me, prefix .. '*\n' .. body)}
end
local uids = {}
for i = 14, #ARGV do uids[#uids + 1] = ARGV[i] end
if #uids == 0 then return {'ok', {}, {}, 0, 0} end
local vals = redis.call('HMGET', hk, unpack(uids))
local here, missing, gone, forwarded, per, order = {}, 0, {}, 0, {}, {}
for i, u in ipairs(uids) do
  local v = vals[i]
  local n = v and string.sub(v, 1, string.find(v, '|', 1, true) - 1)
  if not n or not alive(n) then
    missing = missing + 1
    if report then gone[#gone + 1] = u end
  elseif n == me then
    here[#here + 1] = u
  else
    local list = per[n]
    if not list then list = {}; per[n] = list; order[#order + 1] = n end
    list[#list + 1] = u
  end
end
for _, n in ipairs(order) do
  redis.call('PUBLISH', chan(n), prefix .. table.concat(per[n], ',') .. '\n' .. body)
  forwarded = forwarded + #per[n]
end
if report then return {'ok', here, gone, forwarded, #order} end
return {'ok', here, missing, forwarded, #order}
