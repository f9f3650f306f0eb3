-- Shared by every Herald cluster script (prepended to each). Keys:
--   herald:nodes                 zset  node -> alive until (ms, Redis clock)
--   herald:seq                   counter of registration versions
--   herald:idx:<node>            set   what <node> registered ("L\t<app>\t<uid>", "M\t<app>\t<room>\t<uid>")
--   herald:{<app>}:login         hash  uid -> "<node>|<version>"
--   herald:{<app>}:room:<room>   hash  uid -> "<node>|<version>"
--   herald:{<app>}:rn:<room>     hash  node -> members of the room on that node
--   herald:{<app>}:rate          zset  admitted calls of the last second (score: µs)
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
-- "<node>|<version>" -> node, version
local function split(v)
  local i = string.find(v, '|', 1, true)
  return string.sub(v, 1, i - 1), tonumber(string.sub(v, i + 1))
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
