import asyncio
conns=[]
async def h(r,w):
    conns.append(w)
    await asyncio.sleep(3600)
async def main():
    s=await asyncio.start_server(h,"127.0.0.1",24150,backlog=4096)
    await s.serve_forever()
asyncio.run(main())
