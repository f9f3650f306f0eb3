"""The Redis time of Herald's cluster scripts; see bench/redis-cost."""
import random
import subprocess
import sys
import time

import redis
port = 6399
p = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
time.sleep(0.5)
r = redis.Redis(port=port)
lua = sys.argv[1]
pre = open(lua+"prelude.lua").read()
def load(n): return r.script_load(pre+"\n"+open(lua+n+".lua").read())
route, claim, release = load("route"), load("claim"), load("release")
app = "a"*24
now_ms = int(time.time()*1000)
for n in ["n1","n2","n3"]: r.zadd("herald:nodes", {n: now_ms + 3600_000})
# Subscribers, so PUBLISH really sends.
subs = [subprocess.Popen(["redis-cli","-p",str(port),"subscribe","herald:n:"+n],stdout=subprocess.DEVNULL) for n in ["n2","n3"]]
time.sleep(0.3)
# 10,000 members of room r and 10,000 logins over three nodes, registered as joins would be.
pipe = r.pipeline(transaction=False)
for i in range(10000):
    pipe.evalsha(claim, 0, app, ["n1","n2","n3"][i%3], "M", "r", "u%d"%i, "0")
    if i % 500 == 499: pipe.execute()
pipe.execute()
for i in range(10000):
    pipe.evalsha(claim, 0, app, ["n1","n2","n3"][i%3], "L", "", "u%d"%i, "0")
    if i % 500 == 499: pipe.execute()
pipe.execute()
r.config_resetstat()
body = b"x"*100
prefix = b"D\n"+app.encode()+b"\n2\n0\nr\n\n"
N=2000
for k in range(N):
    uids = random.sample(range(10000), 600)
    pipe.evalsha(route, 0, app, "n1", int(time.time()*1e6), 1_000_000_000, "m%d"%k, "R", "srv", "r", prefix, body, *["u%d"%u for u in uids])
    if k % 50 == 49: pipe.execute()
pipe.execute()
st = r.info("commandstats")["cmdstat_evalsha"]
print("route BatchSendRoomUnicast 600 of 10k, 100 B:", st)
r.config_resetstat()
for k in range(N):
    pipe.evalsha(route, 0, app, "n1", int(time.time()*1e6), 1_000_000_000, "u%d"%k, "U", "srv", "", prefix, body, "u%d"%random.randrange(10000))
    if k % 50 == 49: pipe.execute()
pipe.execute()
print("route SendUnicast:", r.info("commandstats")["cmdstat_evalsha"])
r.config_resetstat()
for k in range(N):
    pipe.evalsha(route, 0, app, "n1", int(time.time()*1e6), 1_000_000_000, "b%d"%k, "B", "srv", "r", prefix, body)
    if k % 50 == 49: pipe.execute()
pipe.execute()
print("route SendBroadcast:", r.info("commandstats")["cmdstat_evalsha"])
r.config_resetstat()
for i in range(N):
    pipe.evalsha(claim, 0, app, "n2", "L", "", "v%d"%i, "0")
    pipe.evalsha(release, 0, app, "n2", "L", "", "v%d"%i, "*", "0", "999999999999")
    if i % 250 == 249: pipe.execute()
pipe.execute()
print("claim+release login (pairs):", r.info("commandstats")["cmdstat_evalsha"])
r.config_resetstat()
for i in range(N):
    pipe.evalsha(claim, 0, app, "n2", "M", "r", "w%d"%i, "0")
    pipe.evalsha(release, 0, app, "n2", "M", "r", "w%d"%i, "*", "1", "999999999999")
    if i % 250 == 249: pipe.execute()
pipe.execute()
print("claim+release member of a 10k room (pairs):", r.info("commandstats")["cmdstat_evalsha"])
print("used_memory bytes with 10k logins + 10k members:", r.info("memory")["used_memory"])
for s in subs: s.kill()
p.kill()
