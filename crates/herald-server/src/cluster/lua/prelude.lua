-- Shared by every Herald cluster script (prepended to each). Keys:
--   herald:nodes                 zset  node -> alive until (ms, Redis clock)
--   herald:seq                   counter of registration versions
--   herald:idx:<node>            set   what <node> registered ("L\t<app>\t<uid>", "M\t<app>\t<room>\t<uid>")
--   herald:{<app>}:login         hash  uid -> "<node>|<version>"
--   herald:{<app>}:room:<room>   hash  uid -> "<node>|<version>"
--   herald:{<app>}:rn:<room>     hash  node -> members of the room on that node
--   herald:{<app>}:rate          zset  admitted calls of the last second (score: µs)
-- With recovery on (window_messages > 0; every node of a cluster must agree), each login's and
-- membership's stream (<kind> L or M, <room> empty for a login):
--   herald:{<app>}:s:<kind>:<room>:<uid>  hash    e: epoch, b: positions trimmed off the list
--                                                 (while registered, the registration's value
--                                                 carries both too, so that routing reads them
--                                                 with the registrations: "<node>|<version>|e|b")
--   herald:{<app>}:w:<kind>:<room>:<uid>  list    ids of the messages at positions b+1.. (the
--                                                 last position is b + its length; trimmed to
--                                                 window_messages once an eighth longer)
--   herald:{<app>}:m:<id>                 string  "<flags>\n<accepted µs>\n<body>", for window_ms
--   herald:{<app>}:held:<room>            zset    uid -> until (ms): members whose streams are held
--   herald:mseq                           counter of message ids
-- A stream lives while registered, then window_ms more if its connection was lost (held).
-- Channels: herald:n:<node>, one per node (formats in herald-core's relay.rs).
local P = 'herald:'
local T = nil
local live = {}
local function now_ms()
  if T == nil then
    local t = redis.call('TIME')
    T = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return T
end
local function alive(node)
  if live[node] == nil then
    local s = redis.call('ZSCORE', P .. 'nodes', node)
    live[node] = (s and tonumber(s) > now_ms()) or false
  end
  return live[node]
end
-- A registration's value, "<node>|<version>" (with recovery "|<epoch>|<base>" follows, see
-- reg_stream) -> node, version
local function split(v)
  local i = string.find(v, '|', 1, true)
  local j = string.find(v, '|', i + 1, true)
  return string.sub(v, 1, i - 1), tonumber(string.sub(v, i + 1, j and j - 1 or -1))
end
local function chan(node) return P .. 'n:' .. node end
local function hkey(app, kind, room)
  if kind == 'L' then return P .. '{' .. app .. '}:login' end
  return P .. '{' .. app .. '}:room:' .. room
end
local function rnkey(app, room) return P .. '{' .. app .. '}:rn:' .. room end
local function idx(node) return P .. 'idx:' .. node end
local function entry(app, kind, room, uid)
  if kind == 'L' then return 'L\t' .. app .. '\t' .. uid end
  return 'M\t' .. app .. '\t' .. room .. '\t' .. uid
end
local function rn_add(app, room, node, n)
  local c = redis.call('HINCRBY', rnkey(app, room), node, n)
  if c <= 0 then redis.call('HDEL', rnkey(app, room), node) end
end
-- Publishes msg to every live node holding members of the room, but `except`.
local function to_room_nodes(app, room, except, msg)
  local count = 0
  for _, n in ipairs(redis.call('HKEYS', rnkey(app, room))) do
    if n ~= except and alive(n) then
      redis.call('PUBLISH', chan(n), msg)
      count = count + 1
    end
  end
  return count
end

-- Streams (recovery). Numbers are formatted whole: Lua 5.1 would print 2^50 as 1.1258999068426e+15.
local function num(x) return string.format('%.0f', x) end
-- redis.call(cmd, key?, args...) over many args, a thousand at a time (Lua's unpack fails past
-- about 8000), its answers joined.
local function chunked(cmd, key, args)
  local out = {}
  for i = 1, #args, 1000 do
    local last = math.min(i + 999, #args)
    local part
    if key then
      part = redis.call(cmd, key, unpack(args, i, last))
    else
      part = redis.call(cmd, unpack(args, i, last))
    end
    for j = 1, last - i + 1 do out[#out + 1] = part[j] end
  end
  return out
end
local function skey(app, kind, room, uid)
  return P .. '{' .. app .. '}:s:' .. kind .. ':' .. room .. ':' .. uid
end
local function wkey(app, kind, room, uid)
  return P .. '{' .. app .. '}:w:' .. kind .. ':' .. room .. ':' .. uid
end
local function mkey(app, id) return P .. '{' .. app .. '}:m:' .. id end
-- A registration's value; with a stream (recovery), its epoch and base.
local function regval(node, version, e, b)
  if e then return node .. '|' .. num(version) .. '|' .. e .. '|' .. num(b) end
  return node .. '|' .. num(version)
end
-- The stream's epoch and base a registration's value carries, if it does.
local function reg_stream(v)
  local e, b = string.match(v, '^[^|]*|[^|]*|([^|]*)|(%d+)$')
  if not e then return nil end
  return e, tonumber(b)
end
local function heldkey(app, room) return P .. '{' .. app .. '}:held:' .. room end
-- A new epoch: the Redis clock in ms times 1024, plus a counter, below 2^53 until 2248.
local function new_epoch()
  return num(now_ms() * 1024 + redis.call('INCR', P .. 'seq') % 1024)
end
-- The stream of a login or membership now registered: kept while registered (no expiry),
-- made if there is none. Returns its epoch (a string), last position and base.
local function s_open(app, kind, room, uid)
  local sk, wk = skey(app, kind, room, uid), wkey(app, kind, room, uid)
  local e = redis.call('HGET', sk, 'e')
  if kind == 'M' then redis.call('ZREM', heldkey(app, room), uid) end
  if e then
    redis.call('PERSIST', sk)
    redis.call('PERSIST', wk)
    local b = tonumber(redis.call('HGET', sk, 'b'))
    return e, b + redis.call('LLEN', wk), b
  end
  e = new_epoch()
  redis.call('DEL', wk)
  redis.call('HSET', sk, 'e', e, 'b', 0)
  return e, 0, 0
end
-- The end of a registration: the stream is held for keep_ms (its connection was lost), or
-- forgotten (keep_ms 0: the user left, was kicked, or recovery is off).
local function s_end(app, kind, room, uid, keep_ms)
  local sk, wk = skey(app, kind, room, uid), wkey(app, kind, room, uid)
  if keep_ms <= 0 then
    redis.call('DEL', sk, wk)
    if kind == 'M' then redis.call('ZREM', heldkey(app, room), uid) end
    return
  end
  if redis.call('PEXPIRE', sk, keep_ms) == 0 then return end
  redis.call('PEXPIRE', wk, keep_ms)
  if kind == 'M' then
    local hk = heldkey(app, room)
    redis.call('ZADD', hk, now_ms() + keep_ms, uid)
    if redis.call('PTTL', hk) < keep_ms then redis.call('PEXPIRE', hk, keep_ms) end
  end
end
-- What a resume from (re, rp) replays: {1, messages...} (each "<flags>\n<accepted>\n<body>",
-- positions rp+1..p), or {0} if any of it is not kept (another epoch, a position the stream
-- never had, more than wmsgs, trimmed, or older than the window).
local function s_resume(app, kind, room, uid, e, p, re, rp, wmsgs)
  if re ~= e or rp > p then return {0} end
  local missed = p - rp
  if missed == 0 then return {1} end
  if missed > wmsgs then return {0} end
  local wk = wkey(app, kind, room, uid)
  if missed > redis.call('LLEN', wk) then return {0} end
  local ids = redis.call('LRANGE', wk, -missed, -1)
  local keys = {}
  for i, id in ipairs(ids) do keys[i] = mkey(app, id) end
  local out = {1}
  local bodies = chunked('MGET', nil, keys)
  for i = 1, missed do
    if not bodies[i] then return {0} end
    out[#out + 1] = bodies[i]
  end
  return out
end
-- One message for many streams: its body is stored once, on the first append.
-- ctx: app, kind (L|M), room, meta ("<flags>\n<accepted>\n"), body, wmsgs, wms; mid once stored.
-- Appends to uid's stream. `v`: uid's registration's value if it is registered on a live node
-- (then the stream is made if there is none); nil for a recipient that is not (then only an
-- existing stream, held, takes it). Returns "<uid>:<epoch>:<position>" (nil if uid has no
-- stream) and the registration's value as it is now.
-- Writes uid's registration value `v` again with the stream's epoch and base; returns it.
local function reg_restream(ctx, uid, v, e, b)
  local node, version = split(v)
  v = regval(node, version, e, b)
  redis.call('HSET', hkey(ctx.app, ctx.kind, ctx.room), uid, v)
  return v
end
local function s_append(ctx, uid, v)
  if not ctx.wprefix then ctx.wprefix = wkey(ctx.app, ctx.kind, ctx.room, '') end
  local wk = ctx.wprefix .. uid
  local sk
  local e, b
  if v then e, b = reg_stream(v) end
  if not e then
    sk = skey(ctx.app, ctx.kind, ctx.room, uid)
    local eb = redis.call('HMGET', sk, 'e', 'b')
    e, b = eb[1], tonumber(eb[2])
    if not e then
      if not v then return nil end
      local _
      e, _, b = s_open(ctx.app, ctx.kind, ctx.room, uid)
    end
    -- Registered without the stream in its value (made before it was): from now on, it is.
    if v then v = reg_restream(ctx, uid, v, e, b) end
  end
  if not ctx.mid then
    ctx.mid = redis.call('INCR', P .. 'mseq')
    redis.call('SET', mkey(ctx.app, ctx.mid), ctx.meta .. ctx.body, 'PX', ctx.wms)
  end
  -- One command per registered recipient, most of the time: the position is the list's length
  -- past b, and the registration's value carried e and b.
  local n = redis.call('RPUSH', wk, ctx.mid)
  local p = b + n
  if n > ctx.wmsgs + math.floor(ctx.wmsgs / 8) then
    redis.call('LTRIM', wk, -ctx.wmsgs, -1)
    redis.call('HINCRBY', sk or skey(ctx.app, ctx.kind, ctx.room, uid), 'b', n - ctx.wmsgs)
    if v then v = reg_restream(ctx, uid, v, e, b + n - ctx.wmsgs) end
  elseif n == 1 and not v then
    -- A held stream's first message: the list expires with the stream.
    local t = redis.call('PTTL', sk or skey(ctx.app, ctx.kind, ctx.room, uid))
    if t > 0 then redis.call('PEXPIRE', wk, t) end
  end
  -- Positions stay far below 10^14, which Lua prints whole.
  return uid .. ':' .. e .. ':' .. p, v
end
-- Delivers one message to uids (logins, or members of ctx.room) at the next position of each
-- one's stream: one PUBLISH per live node holding recipients (this node too; it delivers what
-- its channel brings, so each stream's messages arrive in position order). A recipient not
-- registered on a live node but with a stream is held (its stream keeps the message).
-- `vals`: the uids' registrations' values (false: none), if the caller has them.
-- Returns missing, held (counts; with names, lists of uids), forwarded, nodes.
local function s_deliver(ctx, me, uids, prefix, names, vals)
  vals = vals or chunked('HMGET', hkey(ctx.app, ctx.kind, ctx.room), uids)
  local missing, held, forwarded, per, order = 0, 0, 0, {}, {}
  -- A recipient named twice takes two positions; its value may have changed in between.
  local latest = {}
  if names then missing, held = {}, {} end
  for i, u in ipairs(uids) do
    local v = latest[u] or vals[i]
    local n = v and string.sub(v, 1, string.find(v, '|', 1, true) - 1)
    local live = n and alive(n)
    local at
    at, latest[u] = s_append(ctx, u, live and v or nil)
    if not at then
      if names then missing[#missing + 1] = u else missing = missing + 1 end
    elseif not live then
      if names then held[#held + 1] = u else held = held + 1 end
    else
      local list = per[n]
      if not list then list = {}; per[n] = list; order[#order + 1] = n end
      list[#list + 1] = at
    end
  end
  for _, n in ipairs(order) do
    redis.call('PUBLISH', chan(n), prefix .. table.concat(per[n], ',') .. '\n' .. ctx.body)
    forwarded = forwarded + #per[n]
  end
  return missing, held, forwarded, #order
end
-- The members of a room with a stream, registered or held, but `except`, and their
-- registrations' values (false for a held one), for s_deliver.
local function s_room(app, room, except)
  local out, vals, seen = {}, {}, {}
  local all = redis.call('HGETALL', hkey(app, 'M', room))
  for i = 1, #all, 2 do
    local u = all[i]
    if u ~= except then
      out[#out + 1] = u
      vals[#vals + 1] = all[i + 1]
      seen[u] = true
    end
  end
  local hk = heldkey(app, room)
  redis.call('ZREMRANGEBYSCORE', hk, '-inf', now_ms())
  for _, u in ipairs(redis.call('ZRANGE', hk, 0, -1)) do
    if u ~= except and not seen[u] then
      out[#out + 1] = u
      vals[#vals + 1] = false
    end
  end
  return out, vals
end
