#!/usr/bin/env python3
"""Helpers for scripts/scenarios.sh: the HTTP calls, JSON reading, event
generation and the checks whose answers make a scenario's verdict.

Everything here asks the running suite (its HTTP APIs, /metrics, Mailpit's
API) or reads what kcat printed; nothing reads a service's log or database.
Standard library only.
"""

import hashlib
import json
import os
import random
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zlib
import struct
from datetime import date, datetime, timedelta, timezone

GATEWAY = os.environ.get("GATEWAY", "http://127.0.0.1:8080")
USERS = os.environ.get("USERS", "http://127.0.0.1:8081")
RECOMMENDATION = os.environ.get("RECOMMENDATION", "http://127.0.0.1:8082")
DASHBOARD = os.environ.get("DASHBOARD", "http://127.0.0.1:8083")
PRODUCTS = os.environ.get("PRODUCTS", "http://127.0.0.1:8084")
PAGECOUNT = os.environ.get("PAGECOUNT", "http://127.0.0.1:8085")
MAILPIT = os.environ.get("MAILPIT", "http://127.0.0.1:8025")


def token():
    path = os.environ.get("KAPPA_TOKEN_FILE") or os.path.join(os.path.dirname(__file__), "../../.run/token")
    return open(path).read().strip()


def http(method, url, body=None, content_type=None, auth=True, timeout=30):
    """(status, body bytes); connection failures are status 0."""
    headers = {}
    if auth:
        headers["Authorization"] = "Bearer " + token()
    if content_type:
        headers["Content-Type"] = content_type
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        return 0, str(e).encode()


def get_json(url, auth=True, timeout=30):
    status, body = http("GET", url, auth=auth, timeout=timeout)
    if status != 200:
        raise SystemExit(f"GET {url}: {status} {body[:300]!r}")
    return json.loads(body)


def out(value):
    print(json.dumps(value, sort_keys=True) if not isinstance(value, str) else value)


# ---------------------------------------------------------------- reading

def cmd_json(expr):
    """Prints eval("d" + expr) of the JSON on stdin (like smoke.sh's json_field)."""
    d = json.load(sys.stdin)
    value = eval("d" + expr)  # noqa: S307 - our own expressions
    out(value if isinstance(value, (dict, list)) else str(value))


def metric_samples(url):
    """[(name, {label: value}, float)] of a Prometheus text page."""
    status, body = http("GET", url, auth=False, timeout=3)
    if status != 200:
        raise SystemExit(f"GET {url}: {status}")
    samples = []
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, labels = head, {}
        if "{" in head:
            name, rest = head.split("{", 1)
            for part in rest.rstrip("}").split('",'):
                if "=" in part:
                    k, v = part.split("=", 1)
                    labels[k.strip(",")] = v.strip('"')
        try:
            samples.append((name, labels, float(value)))
        except ValueError:
            pass
    return samples


def cmd_metric(url, name, *filters):
    """Sum of a metric's samples whose labels match k=v filters."""
    want = dict(f.split("=", 1) for f in filters)
    total = sum(v for n, labels, v in metric_samples(url)
                if n == name and all(labels.get(k) == x for k, x in want.items()))
    print(int(total) if total == int(total) else total)


def cmd_lag(url, consumer, partitions=""):
    """kappa_sink_consumer_lag of a consumer, summed (over the listed partitions, if any)."""
    only = {p for p in partitions.split(",") if p}
    total = 0
    seen = 0
    for n, labels, v in metric_samples(url):
        if n == "kappa_sink_consumer_lag" and labels.get("consumer") == consumer:
            if not only or labels.get("partition") in only:
                total += v
                seen += 1
    if seen == 0:
        raise SystemExit(f"{url}: no kappa_sink_consumer_lag for {consumer}")
    print(int(total))


DAY_FIELDS = ("views", "clicks", "add_to_cart", "purchases", "revenue_cents")


def rec_day(day):
    for row in get_json(RECOMMENDATION + "/stats/daily", auth=False)["days"]:
        if row["day"] == day:
            return {k: row.get(k, 0) for k in DAY_FIELDS}
    return {k: 0 for k in DAY_FIELDS}


def cmd_rec_day(day):
    out(rec_day(day))


def cmd_free_day(seed):
    """A UTC day from 1990 to 2019 with no interaction in the recommendation
    service's daily counters: this run's own day, so its counts are exact."""
    taken = {row["day"] for row in get_json(RECOMMENDATION + "/stats/daily", auth=False)["days"]}
    rng = random.Random(seed)
    start = date(1990, 1, 1)
    for _ in range(1000):
        day = (start + timedelta(days=rng.randrange(30 * 365))).isoformat()
        if day not in taken:
            print(day)
            return
    raise SystemExit("no free day found")


def cmd_passed(acks_file, *consumers):
    """Have the consumers committed past every acknowledged event in the file?
    `recommendation` is asked for its committed next offsets (/stats); any
    other `name=url[,url...]` (one url per instance) by its
    kappa_sink_committed_offset gauge on the partitions the events are in
    (not the lag gauge: that is refreshed every 2 s, and a 0 from before the
    events were sent would pass). A partition that moved between instances is
    past once one of them committed past: a group's offsets only go forward.
    Prints what lags."""
    last = {}
    for line in open(acks_file):
        a = json.loads(line)
        last[a["partition"]] = max(last.get(a["partition"], -1), a["offset"])
    behind = []
    for consumer in consumers:
        if consumer == "recommendation":
            nxt = get_json(RECOMMENDATION + "/stats", auth=False)["next_offsets"]
            late = [p for p, o in last.items() if int(nxt.get(str(p), 0)) <= o]
            if late:
                behind.append(f"recommendation behind on partitions {sorted(late)}")
        else:
            name, urls = consumer.split("=", 1)
            committed = {}
            for url in urls.split(","):
                for n, labels, v in metric_samples(url + "/metrics"):
                    if n == "kappa_sink_committed_offset" and labels.get("consumer") == name:
                        p = int(labels["partition"])
                        committed[p] = max(committed.get(p, -1), int(v))
            late = [f"{p}:{committed.get(p, 'none')}<={o}" for p, o in sorted(last.items())
                    if committed.get(p, -1) <= o]
            if late:
                behind.append(f"{name} committed {','.join(late)}")
    if behind:
        print("; ".join(behind))
        sys.exit(1)
    print("all past " + ",".join(f"{p}:{o}" for p, o in sorted(last.items())))


# ---------------------------------------------------------------- sending

def cmd_post(path, acks_path, batch="10000", pause="0", progress_path="", deadline="600"):
    """POSTs the NDJSON file to the gateway in batches; a 503 lists the ids
    the broker did not acknowledge, and those lines are sent again with the
    same ids (the documented retry) until every event is acknowledged.
    Appends {id, partition, offset} per acknowledged event to acks_path."""
    lines = [l for l in open(path, "rb").read().split(b"\n") if l.strip()]
    by_id = {}
    for l in lines:
        by_id[json.loads(l)["id"]] = l
    batch, pause, end = int(batch), float(pause), time.time() + float(deadline)
    stats = {"accepted": 0, "retried": 0, "http_503": 0, "errors": 0}
    acks = open(acks_path, "a")
    for start in range(0, len(lines), batch):
        todo = lines[start:start + batch]
        while todo:
            status, body = http("POST", GATEWAY + "/events", b"\n".join(todo) + b"\n",
                                "application/x-ndjson", timeout=120)
            answer = {}
            try:
                answer = json.loads(body)
            except ValueError:
                pass
            for a in answer.get("events", []):
                acks.write(json.dumps({"id": a["id"], "partition": a["partition"],
                                       "offset": a["offset"]}) + "\n")
                stats["accepted"] += 1
            acks.flush()
            if status == 202:
                todo = []
            elif status == 503 and "failed" in answer:
                stats["http_503"] += 1
                stats["retried"] += len(answer["failed"])
                todo = [by_id[i] for i in answer["failed"]]
                time.sleep(1)
            elif status in (0, 500, 502, 503, 504):
                # Nothing acknowledged that we know of: send the batch again (same ids).
                stats["errors"] += 1
                time.sleep(1)
            else:
                raise SystemExit(f"POST /events: {status} {body[:500]!r}")
            if todo and time.time() > end:
                raise SystemExit(f"events still not accepted at the deadline: {stats}")
        if progress_path:
            with open(progress_path, "w") as f:
                f.write(f"{min(start + batch, len(lines))} {len(lines)}\n")
        if pause:
            time.sleep(pause)
    out(stats)


def cmd_post_one(path):
    """POSTs one JSON event (application/json); prints the answer, fails unless 202."""
    status, body = http("POST", GATEWAY + "/events", open(path, "rb").read(), "application/json",
                        timeout=120)
    sys.stdout.write(body.decode(errors="replace"))
    sys.exit(0 if status == 202 else 1)


def cmd_create_user(user_id, email):
    status, body = http("POST", USERS + "/users",
                        json.dumps({"id": user_id, "email": email}).encode(), "application/json")
    if status not in (201, 409):
        raise SystemExit(f"POST /users: {status} {body[:300]!r}")
    print(status)


def png(width=48, height=32, seed=0):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\0" + bytes(((x * 4 + y + seed) % 256) for x in range(width * 3))
                   for y in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def cmd_upload(product_id, title, video_path="", deadline="120"):
    """POST /products: metadata, a PNG and (optionally) a video; retried on
    503/connection errors with the same product id. Prints the answer."""
    boundary = "scn" + uuid.uuid4().hex
    parts = [("metadata", "application/json", None,
              json.dumps({"product_id": product_id, "title": title, "price": "9.90",
                          "currency": "EUR"}).encode()),
             ("image", "image/png", "p.png", png(seed=len(product_id)))]
    if video_path:
        parts.append(("video", "video/mp4", "clip.mp4", open(video_path, "rb").read()))
    body = b""
    for name, ctype, filename, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += (f"--{boundary}\r\nContent-Disposition: {disp}\r\nContent-Type: {ctype}\r\n\r\n"
                 .encode() + data + b"\r\n")
    body += f"--{boundary}--\r\n".encode()
    end = time.time() + float(deadline)
    while True:
        status, answer = http("POST", GATEWAY + "/products", body,
                              f"multipart/form-data; boundary={boundary}", timeout=60)
        if status == 202:
            sys.stdout.write(answer.decode())
            return
        if status not in (0, 500, 502, 503, 504) or time.time() > end:
            raise SystemExit(f"POST /products {product_id}: {status} {answer[:300]!r}")
        time.sleep(1)


def murmur2_partition(key, partitions):
    """The partition Kafka's default partitioner (murmur2, as every client
    of the suite uses) gives `key`."""
    data, m, seed = key.encode(), 0x5BD1E995, 0x9747B28C
    h = (seed ^ len(data)) & 0xFFFFFFFF
    for i in range(0, len(data) - len(data) % 4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    rest = len(data) % 4
    tail = data[len(data) - rest:]
    if rest == 3:
        h ^= tail[2] << 16
    if rest >= 2:
        h ^= tail[1] << 8
    if rest >= 1:
        h ^= tail[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions


def cmd_sentinels(prefix, partitions, path):
    """One page_access per partition (pages keyed so that each lands on
    another partition), as NDJSON: no worker acts on them, each worker
    passes them, so their offsets mark a partition's end for kit passed."""
    partitions, pages, i = int(partitions), {}, 0
    while len(pages) < partitions:
        page = f"/{prefix}-end-{i}"
        pages.setdefault(murmur2_partition(page, partitions), page)
        i += 1
    with open(path, "w") as f:
        for _, page in sorted(pages.items()):
            f.write(json.dumps({"type": "page_access", "id": str(uuid.uuid4()), "page": page}) + "\n")


# ---------------------------------------------------------------- generating

def event_id(rng):
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def cmd_gen_run(prefix, day, events, users, products, mail_users, seed, path, expected_path,
                mail_every="1000"):
    """A run's events: `events` interactions of `users` users on `products`
    products, all on `day` (views, clicks, add_to_cart; purchases only by the
    mail users, which exist in the users service), and one mail_requested for
    a mail user every `mail_every` events. Every event has its own id.
    Writes the expected per-day counters and mails to expected_path."""
    rng = random.Random(seed)
    base = datetime.fromisoformat(day).replace(tzinfo=timezone.utc)
    mail_users = [u for u in mail_users.split(",") if u]
    events, users, products, mail_every = int(events), int(users), int(products), int(mail_every)
    counts = {k: 0 for k in DAY_FIELDS}
    mails = interactions = 0
    with open(path, "w") as f:
        for i in range(events):
            ts = (base + timedelta(seconds=rng.randrange(86400))).strftime("%Y-%m-%dT%H:%M:%SZ")
            product = f"{prefix}-p{int(products * rng.random() ** 2)}"
            if mail_users and i % mail_every == mail_every // 2:
                user = mail_users[i % len(mail_users)]
                e = {"type": "interaction", "id": event_id(rng), "user_id": user,
                     "product_id": product, "action": "purchase",
                     "price_cents": 100 + rng.randrange(10000), "ts": ts}
                counts["purchases"] += 1
                counts["revenue_cents"] += e["price_cents"]
                mails += 1
            elif mail_users and i % mail_every == 0:
                user = mail_users[i % len(mail_users)]
                e = {"type": "mail_requested", "id": event_id(rng), "user_id": user,
                     "subject": f"{prefix} mail {i}", "body": f"scenario mail {i}"}
                mails += 1
            else:
                r = rng.random()
                action = "view" if r < 0.6 else "click" if r < 0.85 else "add_to_cart"
                e = {"type": "interaction", "id": event_id(rng),
                     "user_id": f"{prefix}-u{rng.randrange(users)}", "product_id": product,
                     "action": action, "ts": ts}
                counts[{"view": "views", "click": "clicks", "add_to_cart": "add_to_cart"}[action]] += 1
            interactions += e["type"] == "interaction"
            f.write(json.dumps(e, separators=(",", ":")) + "\n")
    json.dump({"day": counts, "mails": mails, "events": events, "interactions": interactions},
              open(expected_path, "w"))
    out({"day": counts, "mails": mails})


def cmd_gen_access_log(prefix, lines, pages, seed, path, expected_path):
    """Combined Log Format lines for the run's own pages (/<prefix>/pN), with
    Zipf-like counts; the expected count per page to expected_path."""
    rng = random.Random(seed)
    lines, pages = int(lines), int(pages)
    counts = {}
    with open(path, "w") as f:
        for i in range(lines):
            page = f"/{prefix}/p{int(pages * rng.random() ** 3)}"
            counts[page] = counts.get(page, 0) + 1
            f.write(f'192.0.2.{i % 250 + 1} - - [26/Nov/2026:10:{i // 60 % 60:02d}:{i % 60:02d} +0000] '
                    f'"GET {page}?i={i} HTTP/1.1" 200 {100 + i % 900} "-" "scenarios"\n')
    json.dump(counts, open(expected_path, "w"))
    out({"pages": len(counts), "lines": lines})


def cmd_check_pages(job_id, expected_path):
    """A succeeded page-count job's pages against the expected counts: every
    expected page with its exact count, and no other page of the run."""
    expected = json.load(open(expected_path))
    prefix = next(iter(expected)).rsplit("/", 1)[0] + "/"
    found, after = {}, None
    while True:
        url = f"{PAGECOUNT}/jobs/{job_id}/pages?limit=1000"
        if after:
            url += "&after=" + urllib.parse.quote(after)
        body = get_json(url)
        for row in body["pages"]:
            if row["page"].startswith(prefix):
                found[row["page"]] = row["count"]
        after = body.get("next_after")
        if not after:
            break
    wrong = {p: (c, found.get(p)) for p, c in expected.items() if found.get(p) != c}
    extra = set(found) - set(expected)
    job = get_json(f"{PAGECOUNT}/jobs/{job_id}")
    summary = (f"{job['state']}, read {job['lines']['read']:,} of {job['lines_total']:,} lines "
               f"({job['lines']['rejected']:,} rejected); the run's {len(found)} pages count "
               f"{sum(found.values()):,}")
    if wrong or extra:
        sample = "; ".join(f"{p} {got} not {want}" for p, (want, got) in list(wrong.items())[:3])
        print(f"{summary}; {len(wrong)} pages wrong ({sample}); {len(extra)} unexpected")
        sys.exit(1)
    print(f"{summary}, every page exact")


# ---------------------------------------------------------------- the DLQ

def cmd_dlq(spec_json):
    """Reads `kcat -C -J` records of the DLQ topic on stdin. For every marker
    of the spec ({marker: expected code}) counts the dead letters whose
    payload contains it, by dlq.code, with their reasons and origins."""
    spec = json.loads(spec_json)
    found = {m: {"codes": {}, "reasons": [], "origins": []} for m in spec}
    for line in sys.stdin:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        payload = record.get("payload") or ""
        hits = [m for m in spec if m in payload]
        if not hits:
            continue
        h = record.get("headers") or []
        headers = dict(zip(h[0::2], h[1::2]))
        for m in hits:
            code = headers.get("dlq.code", "?")
            found[m]["codes"][code] = found[m]["codes"].get(code, 0) + 1
            if len(found[m]["reasons"]) < 3:
                found[m]["reasons"].append(headers.get("dlq.reason", ""))
            origin = f'{headers.get("dlq.origin.topic")}:{headers.get("dlq.origin.partition")}:{headers.get("dlq.origin.offset")}'
            if origin not in found[m]["origins"]:
                found[m]["origins"].append(origin)
    out(found)


def cmd_dlq_origins(acks_path):
    """Reads `kcat -C -J` DLQ records on stdin; prints the dead letters whose
    origin is one of the acknowledged events (partition, offset) in acks_path,
    by code (none is the expected answer for events that must be applied)."""
    ours = set()
    for line in open(acks_path):
        a = json.loads(line)
        ours.add((str(a["partition"]), str(a["offset"])))
    codes = {}
    for line in sys.stdin:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        h = record.get("headers") or []
        headers = dict(zip(h[0::2], h[1::2]))
        if headers.get("dlq.origin.topic") == os.environ.get("EVENTS_TOPIC", "events") and \
                (headers.get("dlq.origin.partition"), headers.get("dlq.origin.offset")) in ours:
            code = headers.get("dlq.code", "?")
            codes[code] = codes.get(code, 0) + 1
    out(codes)


# ---------------------------------------------------------------- Mailpit

def mails(query):
    """Every Mailpit message matching a search query."""
    found, start = [], 0
    while True:
        url = f"{MAILPIT}/api/v1/search?query={urllib.parse.quote(query)}&start={start}&limit=500"
        body = get_json(url, auth=False)
        found.extend(body.get("messages") or [])
        start += len(body.get("messages") or [])
        if not body.get("messages") or start >= body.get("messages_count", 0):
            return found


def cmd_mail_count(query):
    """Mails matching the query by the worker that sent them (the mode is in
    the Message-ID, <request-id>.<mode>@kappa-jobs), and how many distinct
    requests they answer."""
    counts = {"stateless": 0, "stateful": 0, "other": 0}
    requests = {"stateless": set(), "stateful": set()}
    sizes = []
    for m in mails(query):
        mid = m.get("MessageID", "")
        mode = mid.rsplit("@", 1)[0].rsplit(".", 1)[-1]
        if mode in requests:
            counts[mode] += 1
            requests[mode].add(mid.rsplit(".", 1)[0])
        else:
            counts["other"] += 1
        sizes.append(m.get("Size", 0))
    counts["distinct_stateless"] = len(requests["stateless"])
    counts["distinct_stateful"] = len(requests["stateful"])
    counts["max_size"] = max(sizes, default=0)
    out(counts)


def cmd_mail_text_ends(query, marker):
    """Every mail matching the query has a text body that ends with the marker
    (whitespace aside); prints the text sizes."""
    sizes = []
    for m in mails(query):
        text = get_json(f"{MAILPIT}/api/v1/message/{m['ID']}", auth=False).get("Text", "")
        if not text.rstrip().endswith(marker):
            print(f"mail {m['MessageID']} ({len(text)} chars of text) does not end with the marker")
            sys.exit(1)
        sizes.append(len(text))
    print(" and ".join(f"{n:,}" for n in sizes))
    sys.exit(0 if sizes else 1)


# ---------------------------------------------------------------- oversize

def cmd_big_mail(user, subject, marker, size, path):
    """A mail_requested whose body is `size` bytes of text lines ending in the marker."""
    size = int(size)
    line = "kappa-jobs oversize scenario: this line is one of many in a large event body.\n"
    body = (line * (size // len(line) + 1))[: size - len(marker)] + marker
    with open(path, "w") as f:
        json.dump({"type": "mail_requested", "user_id": user, "subject": subject, "body": body}, f)
    print(os.path.getsize(path))


def cmd_envelope_check(record_json_path, token_, marker):
    """The record on the topic (one `kcat -J` line) is a small claim-check
    envelope naming the token, and does not carry the payload."""
    record = json.loads(open(record_json_path).read().splitlines()[0])
    payload = record.get("payload") or ""
    env = json.loads(payload)
    problems = []
    if "claim_check" not in env or env["claim_check"].get("token") != token_:
        problems.append("no claim_check with the token")
    if marker in payload:
        problems.append("the payload's marker is on the topic")
    if len(payload) > 4096:
        problems.append(f"record is {len(payload)} bytes")
    out({"bytes": len(payload), "sha256": env.get("claim_check", {}).get("sha256"),
         "size": env.get("claim_check", {}).get("size"), "problems": problems})
    sys.exit(1 if problems else 0)


def cmd_claim_check(token_, sha, marker, posted_path):
    """GET /claims/{token}: the stored bytes have the envelope's sha256, and
    they are the event that was posted (the file, not the gateway's word:
    every field posted, with the same value)."""
    status, body = http("GET", f"{GATEWAY}/claims/{token_}", timeout=60)
    posted = json.load(open(posted_path))
    try:
        stored = json.loads(body)
    except ValueError:
        stored = {}
    same = all(stored.get(k) == v for k, v in posted.items())
    ok = status == 200 and hashlib.sha256(body).hexdigest() == sha and same
    print(f"{status}, {len(body):,} B" + ("" if same else ", not the posted event"))
    sys.exit(0 if ok else 1)


def cmd_now_ms():
    print(int(time.time() * 1000))


def main():
    name, args = sys.argv[1], sys.argv[2:]
    globals()["cmd_" + name.replace("-", "_")](*args)


if __name__ == "__main__":
    main()
