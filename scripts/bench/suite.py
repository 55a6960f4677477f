#!/usr/bin/env python3
"""Measurements of scripts/bench/suite.sh (standard library only).

  suite.py ends <broker> <topic>                 per-partition end offsets, as JSON
  suite.py watch <ends.json> <out.json> <t0> name=url ...
      samples each worker's kappa_sink_committed_offset every 100 ms until
      every partition reached its end; writes, per worker, the seconds from
      t0 (epoch seconds: the resume) it took
  suite.py smtp <port> <mails>                   plain SMTP into Mailpit (16 connections):
      mails/s and the p50 ms of one mail (also scripts/bench/mail.sh's baseline)
  suite.py live <seconds> <gateway> <token> <run> <users_prefix> <video> <out.json>
      one mail_requested (gateway) and one product upload (gateway) per
      second; writes when each was sent
  suite.py mail-latency <sent.json> <mailpit api>    request -> Mailpit, per mode
  suite.py upload-latency <sent.json> <db url>       upload -> active
  suite.py rss <pid>                             resident set of a process, MiB
"""

import concurrent.futures
import json
import os
import smtplib
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
import zlib
from datetime import datetime, timezone
from email.message import EmailMessage


def committed(url, name):
    """kappa_sink_committed_offset of consumer `name` per partition."""
    text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if not line.startswith("kappa_sink_committed_offset{"):
            continue
        labels, value = line.rsplit(" ", 1)
        fields = dict(kv.split("=", 1) for kv in labels[labels.index("{") + 1:-1].split(","))
        if fields.get("consumer", "").strip('"') == name:
            out[int(fields["partition"].strip('"'))] = int(float(value))
    return out


def cmd_ends(broker, topic):
    meta = subprocess.run(["kcat", "-L", "-b", broker, "-t", topic], capture_output=True, text=True, check=True)
    partitions = [int(line.split()[1].rstrip(",")) for line in meta.stdout.splitlines()
                  if line.strip().startswith("partition ")]
    args = ["kcat", "-Q", "-b", broker]
    for p in partitions:
        args += ["-t", f"{topic}:{p}:-1"]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    ends = {}
    for line in out.splitlines():
        # "<topic> [<p>] offset <n>"
        parts = line.split()
        ends[int(parts[1].strip("[]"))] = int(parts[3])
    print(json.dumps(ends))


def cmd_watch(ends_path, out_path, t0, *workers):
    ends = {int(p): o for p, o in json.load(open(ends_path)).items()}
    started = float(t0)
    done, deadline = {}, started + 1800
    while len(done) < len(workers) and time.time() < deadline:
        for worker in workers:
            name, url = worker.split("=", 1)
            if name in done:
                continue
            try:
                at = committed(url, name)
            except OSError:
                continue
            # Past every record (nothing on the topic is written in
            # transactions before the ends are taken: no marker to miss).
            if all(at.get(p, 0) >= end for p, end in ends.items()):
                done[name] = time.time() - started
        time.sleep(0.1)
    json.dump(done, open(out_path, "w"))
    missing = [w.split("=", 1)[0] for w in workers if w.split("=", 1)[0] not in done]
    if missing:
        sys.exit(f"not caught up within 30 min: {missing}")


def cmd_smtp(port, mails):
    port, mails = int(port), int(mails)
    lat, lock, next_i = [], threading.Lock(), iter(range(mails))

    def sender():
        smtp = smtplib.SMTP("127.0.0.1", port)
        while True:
            with lock:
                i = next(next_i, None)
            if i is None:
                break
            m = EmailMessage()
            m["From"], m["To"], m["Subject"] = "bench@kappa-jobs.local", f"raw{i}@example.com", f"raw {i}"
            m.set_content("b")
            t = time.perf_counter()
            smtp.send_message(m)
            with lock:
                lat.append((time.perf_counter() - t) * 1000)
        smtp.quit()
    started = time.perf_counter()
    threads = [threading.Thread(target=sender) for _ in range(16)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    print(f"{mails / (time.perf_counter() - started):.0f} {sorted(lat)[len(lat) // 2]:.1f}")


def png(width, height):
    """A small RGB PNG with some structure."""
    rows = b"".join(b"\x00" + bytes(((x * 7 + y * 3) % 256, (x ^ y) % 256, (y * 5) % 256)[c]
                                    for x in range(width) for c in range(3)) for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def now_iso():
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def cmd_live(seconds, gateway, token, run, users_prefix, video_path, out_path):
    """One mail request and one upload per second, each sent on its own."""
    seconds = int(seconds)
    image, video = png(96, 64), open(video_path, "rb").read()
    auth = {"Authorization": f"Bearer {token}"}
    sent = {"mails": {}, "uploads": {}}

    def mail(i):
        rid = str(uuid.uuid4())
        body = json.dumps({"type": "mail_requested", "id": rid, "user_id": f"{users_prefix}{i % 60}",
                           "subject": f"suite {run} {i}", "body": "hello", "ts": now_iso()}).encode()
        t = time.time()
        req = urllib.request.Request(gateway + "/events", body, {**auth, "Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=30).read()
        sent["mails"][rid] = t

    def upload(i):
        boundary = uuid.uuid4().hex
        product = f"suite-{run}-{i}"
        parts = [("metadata", None, "application/json",
                  json.dumps({"product_id": product, "title": f"Lamp {i}", "price": "9.90", "currency": "EUR"}).encode()),
                 ("image", "lamp.png", "image/png", image), ("video", "clip.mp4", "video/mp4", video)]
        body = b""
        for name, filename, ctype, data in parts:
            disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
            body += f"--{boundary}\r\nContent-Disposition: {disp}\r\nContent-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        t = time.time()
        req = urllib.request.Request(gateway + "/products", body,
                                     {**auth, "Content-Type": f"multipart/form-data; boundary={boundary}"})
        urllib.request.urlopen(req, timeout=30).read()
        sent["uploads"][product] = t

    started = time.time()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for i in range(seconds):
            time.sleep(max(0.0, started + i - time.time()))
            pool.submit(mail, i)
            pool.submit(upload, i)
    json.dump(sent, open(out_path, "w"))


def percentiles(values):
    values = sorted(values)
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]
    return pick(0.5), pick(0.99), values[-1]


def cmd_mail_latency(sent_path, mailpit):
    sent = json.load(open(sent_path))["mails"]
    deadline, per = time.time() + 300, {}
    while time.time() < deadline:
        listing = json.load(urllib.request.urlopen(f"{mailpit}/api/v1/messages?limit=100000", timeout=30))
        per = {"stateless": [], "stateful": []}
        for m in listing["messages"]:
            # Message-ID <event id>.<mode>@kappa-jobs
            rid, _, rest = m["MessageID"].partition(".")
            mode = rest.split("@")[0]
            if rid in sent and mode in per:
                created = datetime.fromisoformat(m["Created"].replace("Z", "+00:00")).timestamp()
                per[mode].append((created - sent[rid], sent[rid]))
        if all(len(v) >= len(sent) for v in per.values()):
            break
        time.sleep(1)
    out = {}
    t0 = min(sent.values())
    for mode, timed in per.items():
        # The slowest, with when they were sent (seconds into the phase).
        slowest = ", ".join(f"{l * 1e3:.0f} ms at +{t - t0:.0f} s" for l, t in sorted(timed)[-3:])
        lat = [l for l, _ in timed]
        if len(lat) < len(sent):
            sys.exit(f"{mode}: {len(lat)} of {len(sent)} mails arrived")
        p50, p99, worst = percentiles(lat)
        out[mode] = {"p50_ms": p50 * 1e3, "p99_ms": p99 * 1e3, "max_ms": worst * 1e3, "n": len(lat),
                     "slowest": slowest}
    print(json.dumps(out))


def cmd_upload_latency(sent_path, db):
    sent = json.load(open(sent_path))["uploads"]
    deadline, rows = time.time() + 300, []
    while time.time() < deadline:
        out = subprocess.run(["psql", db, "-At", "-F", "\t", "-c",
                              "SELECT id, status, extract(epoch FROM finished_at) FROM products "
                              "WHERE status <> 'pending' AND id LIKE 'suite-%'"],
                             capture_output=True, text=True, check=True).stdout
        rows = [line.split("\t") for line in out.splitlines() if line.split("\t")[0] in sent]
        if len(rows) >= len(sent):
            break
        time.sleep(1)
    if len(rows) < len(sent):
        sys.exit(f"{len(rows)} of {len(sent)} uploads decided")
    not_active = [r for r in rows if r[1] != "active"]
    if not_active:
        sys.exit(f"uploads not active: {not_active[:5]}")
    p50, p99, worst = percentiles([float(t) - sent[p] for p, _, t in rows])
    print(json.dumps({"p50_ms": p50 * 1e3, "p99_ms": p99 * 1e3, "max_ms": worst * 1e3, "n": len(rows)}))


def cmd_rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            print(f"{int(line.split()[1]) / 1024:.1f}")
            return
    sys.exit(f"no VmRSS for {pid}")


if __name__ == "__main__":
    commands = {name[4:].replace("_", "-"): f for name, f in globals().items() if name.startswith("cmd_")}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](*sys.argv[2:])
