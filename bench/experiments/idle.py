import asyncio, sys, json, urllib.request, time
port, admin, n, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
pid = int(sys.argv[5])
def mem():
    m = json.load(urllib.request.urlopen(f"http://127.0.0.1:{admin}/memory"))
    rss = int([l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0])
    return int(m["allocated"]), rss
async def one(sem, conns):
    async with sem:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        if mode == "req":
            w.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"); await w.drain()
            data = b""
            while b"ok\n" not in data:
                data += await r.read(4096)
        elif mode == "pending":
            w.write(b"GET /pending HTTP/1.1\r\nHost: x\r\n\r\n"); await w.drain()
        conns.append((r, w))
async def main():
    time.sleep(1)
    a0, r0 = mem()
    conns = []; sem = asyncio.Semaphore(50)
    await asyncio.gather(*[one(sem, conns) for _ in range(n)])
    await asyncio.sleep(2)
    a1, r1 = mem()
    print(f"{mode}: conns={len(conns)} allocated/conn={(a1-a0)/len(conns)/1024:.2f}KB RSS/conn={(r1-r0)/len(conns):.1f}KB")
    for r, w in conns: w.close()
asyncio.run(main())
