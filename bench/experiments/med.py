import sys,re,statistics as st
rows={}
for f in sys.argv[1:]:
    for l in open(f):
        m=re.match(r'(\d+) (\S+) load=(\S+) .*cpu_us_per_msg=(\S+)',l)
        if m: rows.setdefault(m[2],[]).append(float(m[4]))
base=st.median(rows['static'])
for k,v in rows.items(): print(k, 'n=%d median=%.2f  (%+.1f%% vs static)  min=%.2f'%(len(v),st.median(v),100*(st.median(v)/base-1),min(v)))
