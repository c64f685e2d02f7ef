#!/usr/bin/env python3
# The breakdown of each restart of `bidmesh-bench restart` (docs/benchmarks.md, "Restart time: where
# it goes"), from kernel tracepoints recorded system-wide (no strace: it slows the start it measures):
#   perf record -a -o restart.data -e sched:sched_process_exec -e sched:sched_process_fork \
#     -e syscalls:sys_enter_kill -e syscalls:sys_enter_bind -e syscalls:sys_enter_accept4 \
#     -e syscalls:sys_enter_fdatasync -e syscalls:sys_enter_fadvise64 -e syscalls:sys_enter_fallocate \
#     -e syscalls:sys_enter_write -- bench/restart-mesh.sh
#   perf script -i restart.data -F comm,pid,tid,time,event,trace | bench/restart-timeline.py
# One line per restart, ms since the bench's SIGKILL: exec of the new node, its first log line
# (config loaded), the ZeroMQ context's threads, LMDB open (reserve_disk's fallocate), the replay's
# first segment open, the router socket's bind (replay done), the router's connection accepted,
# and the first batch's fdatasync (the accepted bid).
import re
import sys

lines = sys.stdin.read().splitlines()
ev=[]
for l in lines:
    m=re.match(r'\s*(\S.*?)\s+(\d+)/(\d+)\s+([\d.]+):\s+(\S+):\s*(.*)',l)
    if m: ev.append((float(m.group(4)),m.group(1),int(m.group(2)),int(m.group(3)),m.group(5),m.group(6)))
i=0
while i<len(ev):
    t,comm,pid,tid,e,a=ev[i]
    if comm=='bidmesh-bench' and e.endswith('sys_enter_kill') and a.endswith('0x00000009'):
        t0=t; marks=[('kill',0)]; node=None; bound=False; wrote=False
        for t2,c2,p2,tid2,e2,a2 in ev[i+1:]:
            d=(t2-t0)*1000
            if e2.endswith('sched_process_exec') and 'bid-node' in a2: node=p2; marks.append(('exec',d)); continue
            if node is None or p2!=node: 
                if c2=='bidmesh-bench' and e2.endswith('sys_enter_kill'): break
                if 'accept4' in e2 or ('ZMQ' in c2 and 'bind' in e2): pass
                continue
            if e2.endswith('sys_enter_write') and not wrote and tid2==node and 'fd: 0x00000002' in a2: marks.append(('first log line (config loaded)',d)); wrote=True
            elif e2.endswith('sched_process_fork') and not any(m[0]=='zmq ctx' for m in marks): marks.append(('zmq ctx',d))
            elif e2.endswith('fallocate') and not any(m[0]=='lmdb open' for m in marks): marks.append(('lmdb open',d))
            elif e2.endswith('fadvise64') and not any(m[0]=='replay start' for m in marks): marks.append(('replay start',d))
            elif e2.endswith('bind') and 'addrlen: 0x00000010' in a2 and not bound: marks.append(('router bind (replay done)',d)); bound=True
            elif e2.endswith('accept4') and not any(m[0]=='router connected' for m in marks): marks.append(('router connected',d))
            elif e2.endswith('fdatasync') and bound: marks.append(('first batch fdatasync',d)); break
        print('  '.join('%s %.1f'%(n,d) for n,d in marks))
    i+=1
