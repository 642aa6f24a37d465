import sys,re,statistics as st
rows={}
for l in open(sys.argv[1]):
    m=re.match(r'(\d+) (\S+) load=(\S+) conn/s=(\S+) cpu_us_per_conn=(\S+)',l)
    if m: rows.setdefault(m[2],[]).append((float(m[5]),float(m[4])))
for k,v in rows.items(): print(k,'n=%d cpu/conn median=%.0f conn/s median=%.0f'%(len(v),st.median(x for x,_ in v),st.median(y for _,y in v)))
