#!/usr/bin/env python3
"""Load probe for issue-style figures: starts a dealer and a host of the
bundled model, opens N idle and M slow (one byte a second) connections to
each, runs real devices during the flood, and prints each server's threads,
open descriptors and resident memory before, during and after.

    python3 scripts/flood.py [--idle 1000] [--slow 100] [--devices 3]

Needs a release build (cargo build --release -p mpcvit)."""
import argparse, os, resource, socket, subprocess, sys, tempfile, threading, time

ap = argparse.ArgumentParser()
ap.add_argument("--idle", type=int, default=1000)
ap.add_argument("--slow", type=int, default=100)
ap.add_argument("--devices", type=int, default=3)
ap.add_argument("--bin", default="target/release/mpcvit")
ap.add_argument("--model", default="models/fmnist-mu0.5-kd.mpcvit")
a = ap.parse_args()
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

tmp = tempfile.mkdtemp(prefix="mpcvit-flood-")
keys = os.path.join(tmp, "keys")
subprocess.run([a.bin, "keygen", "--out", keys], check=True, stdout=subprocess.DEVNULL)
blob = os.path.join(tmp, "m.blob")
subprocess.run([a.bin, "provision", "--model", a.model, "--keys", keys, "--out", blob], check=True,
               stdout=subprocess.DEVNULL)


def start(args):
    p = subprocess.Popen([a.bin] + args, stdout=subprocess.PIPE, stderr=open(os.path.join(tmp, args[0] + ".log"), "w"),
                         text=True)
    line = p.stdout.readline()
    return p, line.strip().split()[-1]


dealer, daddr = start(["dealer", "--keys", keys, "--listen", "127.0.0.1:0"])
host, haddr = start(["host", "--model", a.model, "--keys", keys, "--dealer", daddr, "--listen", "127.0.0.1:0"])


def usage(p):
    st = open(f"/proc/{p.pid}/status").read()
    rss = next(int(l.split()[1]) for l in st.splitlines() if l.startswith("VmRSS"))
    return (len(os.listdir(f"/proc/{p.pid}/task")), len(os.listdir(f"/proc/{p.pid}/fd")), rss / 1024)


def report(when):
    for name, p in (("host", host), ("dealer", dealer)):
        t, f, r = usage(p)
        print(f"{when:>14} {name:>6}: {t:4} threads {f:5} descriptors {r:7.1f} MB resident", flush=True)


def device(i):
    t0 = time.time()
    o = subprocess.run([a.bin, "device", "--connect", haddr, "--blob", blob, "--keys", keys, "--index", str(i)],
                       capture_output=True, text=True)
    ok = o.returncode == 0
    print(f"  device {i}: {'served' if ok else 'FAILED: ' + o.stderr.strip()} in {time.time() - t0:.2f} s", flush=True)
    return ok


addr = lambda s: (s.split(":")[0], int(s.split(":")[1]))
report("idle")
ok = [device(0)]
conns, slow = [], []
for target in (haddr, daddr):
    for _ in range(a.idle):
        try:
            conns.append(socket.create_connection(addr(target)))
        except OSError as e:
            print("connect failed:", e)
            break
    for _ in range(a.slow):
        s = socket.create_connection(addr(target))
        slow.append(s)
stop = False


def trickle():
    while not stop:
        for s in slow:
            try:
                s.send(b"M")
            except OSError:
                pass
        time.sleep(1)


threading.Thread(target=trickle, daemon=True).start()
time.sleep(1)
print(f"flood: {a.idle} idle + {a.slow} slow connections to each server")
report("flood")
for i in range(a.devices):
    ok.append(device(i + 1))
report("flood+devices")
stop = True
for s in conns + slow:
    s.close()
time.sleep(2)
ok.append(device(9))
report("after")
host.kill(); dealer.kill()
print("all devices served" if all(ok) else "SOME DEVICES FAILED")
sys.exit(0 if all(ok) else 1)
