#!/usr/bin/env python3
# Restart under the supervisor (the production path): starts bidmesh-supervisor on a local mesh of
# tools/local-mesh.toml's shape (free loopback ports, a temp dir), kills bid-1 with SIGKILL N times
# (each STABLE_WAIT seconds, default 2.2, after the last: longer than stable_run, and 6 kills stay
# within restart_intensity), and prints kill -> the node's `starting` line and kill -> its
# `serving` line, from the timestamps of the node's own log (ms resolution).
#   usage: bench/supervised-restart.py BIN_DIR [N]     e.g. bench/supervised-restart.py build/bin 6
import os, sys, time, subprocess, socket, re, signal, tempfile, datetime, glob
binp = sys.argv[1]; n = int(sys.argv[2]) if len(sys.argv) > 2 else 6
work = tempfile.mkdtemp(prefix='bidmesh-supervised-restart.')
def fp():
    s = socket.socket(); s.bind(('127.0.0.1', 0)); p = s.getsockname()[1]; s.close(); return p
conf = f'''data_dir = "{work}/data"
[feed]
publish = "tcp://127.0.0.1:{fp()}"
collect = "tcp://127.0.0.1:{fp()}"
[[node]]
name = "router"
kind = "router"
listen = "tcp://127.0.0.1:{fp()}"
feed = true
[[node]]
name = "bid-1"
kind = "bid"
listen = "tcp://127.0.0.1:{fp()}"
slots = ["0-8191"]
[[node]]
name = "bid-2"
kind = "bid"
listen = "tcp://127.0.0.1:{fp()}"
slots = ["8192-16383"]
'''
open(f'{work}/mesh.toml', 'w').write(conf)
sup = subprocess.Popen([f'{binp}/bidmesh-supervisor', '--config', f'{work}/mesh.toml'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
log = f'{work}/data/logs/bid-1.log'
def node_pid():
    out = subprocess.run(['pgrep', '-f', f'name bid-1'], capture_output=True, text=True).stdout.split()
    pids = [int(p) for p in out if open(f'/proc/{p}/cmdline').read().find(work) >= 0]
    return pids[0] if pids else None
def ts(line):
    m = re.match(r'\[bid-1 (\d+-\d+-\d+ \d+:\d+:\d+\.\d+)\]', line)
    return datetime.datetime.strptime(m.group(1), '%Y-%m-%d %H:%M:%S.%f').timestamp() if m else None
try:
    deadline = time.time() + 20
    while time.time() < deadline and not (os.path.exists(log) and 'serving' in open(log).read()): time.sleep(0.1)
    res = []
    for i in range(n):
        time.sleep(float(os.environ.get('STABLE_WAIT', '11')))
        pid = node_pid()
        before = len(open(log).read().splitlines())
        t0 = time.time(); os.kill(pid, signal.SIGKILL)
        deadline = time.time() + 10; st = sv = None
        while time.time() < deadline and sv is None:
            time.sleep(0.02)
            for line in open(log).read().splitlines()[before:]:
                if ' starting' in line and st is None: st = ts(line)
                if 'serving' in line and sv is None: sv = ts(line)
        res.append(((st - t0) * 1000 if st else -1, (sv - t0) * 1000 if sv else -1))
        print(f'kill {i+1}: starting {res[-1][0]:.1f} ms, serving {res[-1][1]:.1f} ms', flush=True)
    s = sorted(r[1] for r in res)
    print(f'serving: median {s[len(s)//2]:.1f} ms, range {s[0]:.1f}-{s[-1]:.1f}')
finally:
    sup.send_signal(signal.SIGTERM); sup.wait(15)
    print(f'work dir (logs): {work}')
