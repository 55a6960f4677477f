#!/usr/bin/env python3
"""`docker compose up`, emulated without Docker, for scripts/compose-check.sh.

  engine.py up --root DIR --model FILE --run-dir DIR --project NAME --host-ns NS --ns-prefix P
  engine.py forward HOST:PORT=ADDR:PORT ...

`up` reads the compose model (the output of `docker-compose config`), builds
each image's filesystem from this machine's equivalents and runs every service
the way compose would: in a network namespace of its own on a bridge of the
check's own, with its own mount and UTS namespaces, with exactly the
environment, user, working directory, command and volumes that the model and
the image give it, in depends_on order with the conditions, health checks and
restart policies. Published ports are forwarded inside a "host" namespace of
the check's own (never the real host's: the dev suite holds those ports).
It writes RUN_DIR/state.json as it goes (phase: starting, up, failed,
stopping, down), runs until SIGTERM, then stops every service (dependents
first) and removes what it created: namespaces, /etc/netns entries, mount
points, image and container directories, volumes.

`forward` is the port publisher (docker-proxy's job): it runs inside the host
namespace and relays each listening address to a service's address.

Nothing about the suite is hard-coded here: services, environment, commands,
ports, volumes, dependencies and health checks come from the model. What is
written down is how each image is emulated: the project's own images are
interpreted from their Dockerfile stage, the three third-party images from
what their published images contain (see THIRD_PARTY).
"""
import argparse
import asyncio
import json
import os
import pwd
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile

PROG = "compose/engine.py"
# The PATH of debian:bookworm-slim and alpine (Docker's default too).
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SUBNET = "10.231.0"          # the check's own bridge: .1 the host namespace, .10+ the services
DOCKER_STOP_GRACE = 10.0     # compose's default stop_grace_period


_log_lock = threading.Lock()


def log(msg):
    with _log_lock:   # one write per line: the threads' lines must not interleave
        sys.stderr.write(f"[{PROG}] {msg}\n")
        sys.stderr.flush()


class Fatal(Exception):
    """A failure that ends the run, with a message naming what failed."""


def run(*argv, check=True):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise Fatal(f"`{' '.join(argv)}` failed: {r.stdout.strip()}")
    return r


def seconds(value, default):
    """A compose duration ("5s", "1m30s", "500ms") in seconds."""
    if value is None:
        return default
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    if not re.fullmatch(r"(?:\d+(?:\.\d+)?(?:ms|us|h|m|s))+", text):
        raise Fatal(f"cannot read the duration {value!r}")
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text))


def unescape(value):
    """`docker-compose config` prints a literal `$` as `$$` (so its output is a
    compose file again); the container gets one `$`."""
    if isinstance(value, str):
        return value.replace("$$", "$")
    if isinstance(value, list):
        return [unescape(v) for v in value]
    if isinstance(value, dict):
        return {k: unescape(v) for k, v in value.items()}
    return value


def slug(path):
    return re.sub(r"[^A-Za-z0-9._-]+", "_", path.strip("/")) or "root"


# ---------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------

class Image:
    """What a container of an image starts from."""

    def __init__(self, name):
        self.name = name
        self.uid, self.gid, self.user = 0, 0, "root"
        self.home = "/root"
        self.workdir = "/"
        self.env = {"PATH": BASE_PATH}
        self.entrypoint, self.cmd = [], []
        self.stop_signal = signal.SIGTERM
        self.shared = []     # (container path, host path): image content, bound read-only
        self.layer = {}      # container path -> (uid, gid, mode, template dir or None): writable, per container
        self.notes = []      # what is emulated and how, printed once per image


def dockerfile_instructions(path):
    """Logical instructions: continuation lines joined, comments dropped."""
    out, cur = [], ""
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if line.strip().startswith("#"):
                continue   # comments and parser directives, also inside a continuation
            if line.rstrip().endswith("\\"):
                cur += line.rstrip()[:-1] + " "
                continue
            cur += line
            if cur.strip():
                kw, _, rest = cur.strip().partition(" ")
                out.append((kw.upper(), rest.strip()))
            cur = ""
    if cur.strip():
        kw, _, rest = cur.strip().partition(" ")
        out.append((kw.upper(), rest.strip()))
    return out


def expand(text, variables):
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m.group(1) or m.group(2), ""), text)


def exec_form(text):
    text = text.strip()
    return json.loads(text) if text.startswith("[") else ["/bin/sh", "-c", text]


def build_from_dockerfile(root, image_name, build, images_dir):
    """Interpret the target stage of the service's Dockerfile, narrowly: the
    instructions this project's runtime stage uses (ARG, ENV, RUN's useradd,
    mkdir, chown, chmod, ln -s and test -x, WORKDIR, USER, COPY, ENTRYPOINT,
    CMD, STOPSIGNAL). Anything else in a RUN (apt-get ...) is listed as not
    emulated; an instruction it does not know stops the check."""
    context = build.get("context") or root
    dockerfile = os.path.join(context, build.get("dockerfile") or "Dockerfile")
    args = build.get("args") or {}
    if isinstance(args, list):
        args = dict(a.split("=", 1) for a in args)
    args = {k: str(v) for k, v in args.items()}
    target = build.get("target")

    global_args, stages = {}, []
    for kw, rest in dockerfile_instructions(dockerfile):
        if kw == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?\s*$", rest, re.I)
            stages.append({"base": m.group(1), "name": m.group(2), "body": []})
        elif not stages:
            if kw == "ARG":
                name, _, default = rest.partition("=")
                global_args[name.strip()] = args.get(name.strip(), default.strip().strip('"'))
        else:
            stages[-1]["body"].append((kw, rest))
    by_name = {s["name"]: s for s in stages if s["name"]}
    stage = by_name.get(target) if target else stages[-1]
    if stage is None:
        raise Fatal(f"{dockerfile}: no stage named {target!r}")

    img = Image(image_name)
    rootfs = os.path.join(images_dir, slug(image_name), "rootfs")
    os.makedirs(rootfs)
    variables = {}
    users = {"root": (0, 0, "/root")}
    mkdirs = {}            # path -> [uid, gid, mode]
    content_roots = []     # container paths holding image content (bound read-only)
    skipped = []
    user = "root"
    copied_bins = 0

    def owner(spec):
        u, _, g = spec.partition(":")
        uid = int(u) if u.isdigit() else users[u][0]
        gid = int(g) if g.isdigit() else (users[g][1] if g else users.get(u, (0, 0))[1])
        return uid, gid

    def in_rootfs(path):
        return os.path.join(rootfs, path.lstrip("/"))

    for kw, rest in stage["body"]:
        if kw == "ARG":
            name, _, default = rest.partition("=")
            name = name.strip()
            variables[name] = args.get(name, default.strip().strip('"') or global_args.get(name, ""))
        elif kw == "ENV":
            pairs = shlex.split(expand(rest, variables))
            if pairs and "=" not in pairs[0]:
                pairs = [f"{pairs[0]}={' '.join(pairs[1:])}"]
            for pair in pairs:
                k, _, v = pair.partition("=")
                img.env[k] = v
                variables[k] = v
        elif kw == "RUN":
            text = expand(re.sub(r"^--\S+\s+", "", rest), variables)
            for command in re.split(r"\s*(?:&&|\|\||;)\s*", text):
                words = shlex.split(command)
                if not words:
                    continue
                prog = words[0]
                if prog == "useradd":
                    keys = {"--uid": "u", "-u": "u", "--home-dir": "h", "-d": "h", "--gid": "g", "-g": "g"}
                    opts, name, i = {}, words[-1], 1
                    while i < len(words) - 1:
                        if words[i] in keys:
                            opts[keys[words[i]]] = words[i + 1]
                            i += 2
                        else:
                            i += 1
                    uid = int(opts.get("u", "1000"))
                    # useradd's user group takes the uid's number when it is free (fresh image).
                    gid = int(opts["g"]) if opts.get("g", "").isdigit() else uid
                    users[name] = (uid, gid, opts.get("h", f"/home/{name}"))
                elif prog == "mkdir":
                    for p in (w for w in words[1:] if not w.startswith("-")):
                        mkdirs[p] = [0, 0, 0o755]
                elif prog == "chown":
                    spec, *paths = [w for w in words[1:] if not w.startswith("-")]
                    for p in paths:
                        mkdirs.setdefault(p, [0, 0, 0o755])[:2] = owner(spec)
                elif prog == "chmod":
                    mode, *paths = [w for w in words[1:] if not w.startswith("-")]
                    if not re.fullmatch(r"[0-7]{3,4}", mode):
                        raise Fatal(f"{dockerfile}: chmod {mode}: only octal modes are interpreted")
                    for p in paths:
                        mkdirs.setdefault(p, [0, 0, 0o755])[2] = int(mode, 8)
                elif prog == "ln" and "-s" in words:
                    src, link = [w for w in words[1:] if not w.startswith("-")]
                    os.makedirs(os.path.dirname(in_rootfs(link)), exist_ok=True)
                    os.symlink(src, in_rootfs(link))
                    content_roots.append(os.path.dirname(link))
                elif prog == "test" and words[1:2] == ["-x"]:
                    path = words[2]
                    if not os.access(in_rootfs(path), os.X_OK):
                        raise Fatal(
                            f"image {image_name}: the Dockerfile's `test -x {path}` fails: "
                            f"target/release/{os.path.basename(path)} is missing (scripts/up.sh builds "
                            f"the release binaries; this check never runs cargo)")
                else:
                    skipped.append(" ".join(words[:3]))
        elif kw == "WORKDIR":
            img.workdir = expand(rest, variables)
            os.makedirs(in_rootfs(img.workdir), exist_ok=True)
            content_roots.append(img.workdir)
        elif kw == "USER":
            user = expand(rest, variables)
        elif kw == "COPY":
            words = shlex.split(expand(rest, variables))
            flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--"))
            paths = [w for w in words if not w.startswith("--")]
            *srcs, dst = paths
            if "chown" in flags:
                raise Fatal(f"{dockerfile}: COPY --chown is not interpreted")
            if "from" in flags:
                builder = by_name.get(flags["from"])
                if not builder or not any(k == "RUN" and "cargo build" in r and "--release" in r
                                          for k, r in builder["body"]):
                    raise Fatal(f"{dockerfile}: COPY --from={flags['from']}: only a stage that runs "
                                f"`cargo build --release` is interpreted (as target/release)")
                # The builder copies the workspace's release executables (find
                # -maxdepth 1 -type f -executable): here the ones in target/release,
                # hard-linked now, so a rebuild during the check does not change them.
                release = os.path.join(root, "target", "release")
                os.makedirs(in_rootfs(dst), exist_ok=True)
                for name in sorted(os.listdir(release)):
                    src = os.path.join(release, name)
                    if name.startswith(".") or not os.path.isfile(src) or not os.access(src, os.X_OK):
                        continue
                    try:
                        os.link(src, os.path.join(in_rootfs(dst), name))
                    except OSError:
                        shutil.copy2(src, os.path.join(in_rootfs(dst), name))
                    copied_bins += 1
            else:
                for src in srcs:
                    host_src = os.path.join(context, src)
                    if os.path.isdir(host_src):
                        shutil.copytree(host_src, in_rootfs(dst), dirs_exist_ok=True)
                    else:
                        os.makedirs(in_rootfs(dst) if dst.endswith("/") else os.path.dirname(in_rootfs(dst)),
                                    exist_ok=True)
                        shutil.copy2(host_src, in_rootfs(dst))
            content_roots.append(dst.rstrip("/") or "/")
        elif kw == "ENTRYPOINT":
            img.entrypoint = exec_form(rest)
            img.cmd = []   # Docker: a new ENTRYPOINT resets an inherited CMD
        elif kw == "CMD":
            img.cmd = exec_form(rest)
        elif kw == "STOPSIGNAL":
            img.stop_signal = getattr(signal, rest if rest.startswith("SIG") else "SIG" + rest)
        elif kw in ("EXPOSE", "LABEL"):
            pass
        else:
            raise Fatal(f"{dockerfile}: {kw} in stage {stage['name']} is not interpreted by this check")

    img.uid, img.gid, img.home = users[user] if not user.isdigit() else (int(user), int(user), "/")
    img.user = user
    # Content roots: the smallest set of directories that holds what the
    # image put there (WORKDIR, COPY destinations, symlinks).
    roots = sorted(set(content_roots), key=len)
    kept = []
    for r in roots:
        if not any(r == k or r.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(r)
    img.shared = [(r, in_rootfs(r)) for r in kept]
    # Directories the RUN lines made are in every container's writable layer.
    for p, (uid, gid, mode) in mkdirs.items():
        img.layer[p] = (uid, gid, mode, None)
    img.layer["/tmp"] = (0, 0, 0o1777, None)
    svc_arg = ", ".join(f"{k}={v}" for k, v in args.items())
    dirs = ", ".join(f"{p} {u}:{g} {m:04o}" for p, (u, g, m) in mkdirs.items()) or "none"
    img.notes = [
        f"{image_name}: {os.path.relpath(dockerfile, root)} stage {stage['name']} ({svc_arg}); "
        f"{'; '.join(f'{r} = image content' for r in kept)} ({copied_bins} release binaries hard-linked from target/release); "
        f"USER {user} = uid {img.uid} gid {img.gid}, HOME {img.home}, WORKDIR {img.workdir}; "
        f"ENV {' '.join(f'{k}={v}' for k, v in img.env.items() if k != 'PATH')}; "
        f"ENTRYPOINT {img.entrypoint}; directories made by RUN: {dirs}; "
        f"RUN steps not emulated: {', '.join(sorted(set(skipped))) or 'none'} (the host's packages stand in)"]
    return img


# --- third-party images: what the published images contain, for what this
# --- compose file uses of them.

KAFKA_TOOLS = {  # /opt/kafka/bin/<script> -> class (checked against the jars)
    "kafka-topics.sh": "org.apache.kafka.tools.TopicCommand",
    "kafka-broker-api-versions.sh": "org.apache.kafka.tools.BrokerApiVersionsCommand",
    "kafka-storage.sh": "kafka.tools.StorageTool",
    "kafka-console-producer.sh": "org.apache.kafka.tools.ConsoleProducer",
    "kafka-console-consumer.sh": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "kafka-consumer-groups.sh": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "kafka-get-offsets.sh": "org.apache.kafka.tools.GetOffsetShell",
    "kafka-configs.sh": "kafka.admin.ConfigCommand",
}

KAFKA_RUN_CLASS = r"""#!/usr/bin/env bash
# compose-check: stands in for the image's kafka-run-class.sh: the same
# environment knobs and defaults, the jars at /opt/kafka/libs, the host's java.
set -e
class=$1; shift
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xmx256M}
KAFKA_JVM_PERFORMANCE_OPTS=${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true}
KAFKA_LOG4J_OPTS=${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=/opt/kafka/config/tools-log4j2.yaml}
# shellcheck disable=SC2086  # the *_OPTS split into flags on purpose
exec java $KAFKA_HEAP_OPTS $KAFKA_JVM_PERFORMANCE_OPTS ${KAFKA_GC_LOG_OPTS-} $KAFKA_LOG4J_OPTS \
  -cp '/opt/kafka/libs/*' ${KAFKA_OPTS-} "$class" "$@"
"""

KAFKA_SERVER_START = r"""#!/usr/bin/env bash
# compose-check: the image's kafka-server-start.sh (its heap and log4j defaults).
[ -n "${KAFKA_HEAP_OPTS-}" ] || export KAFKA_HEAP_OPTS="-Xmx1G -Xms1G"
[ -n "${KAFKA_LOG4J_OPTS-}" ] || export KAFKA_LOG4J_OPTS="-Dlog4j2.configurationFile=/opt/kafka/config/log4j2.yaml"
exec /opt/kafka/bin/kafka-run-class.sh kafka.Kafka "$@"
"""

# The image's CMD, /etc/kafka/docker/run (configureDefaults, configure,
# launch), reduced to what a PLAINTEXT KRaft node uses; the env -> properties
# translation and the storage format are the image's own code,
# kafka.docker.KafkaDockerWrapper, which ships in the kafka jar.
KAFKA_DOCKER_RUN = r"""#!/usr/bin/env bash
# compose-check: stands in for apache/kafka's /etc/kafka/docker/run.
set -e
echo "===> User"
id
# configureDefaults: the image's values for what the environment leaves unset.
declare -A env_defaults=(
  [CLUSTER_ID]="5L6g3nShT-eMCtK--X86sw" [KAFKA_NODE_ID]=1
  [KAFKA_LISTENER_SECURITY_PROTOCOL_MAP]="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,PLAINTEXT_HOST:PLAINTEXT"
  [KAFKA_LISTENERS]="PLAINTEXT://localhost:29092,CONTROLLER://localhost:29093,PLAINTEXT_HOST://0.0.0.0:9092"
  [KAFKA_ADVERTISED_LISTENERS]="PLAINTEXT://localhost:29092,PLAINTEXT_HOST://localhost:9092"
  [KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR]=1 [KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS]=0
  [KAFKA_TRANSACTION_STATE_LOG_MIN_ISR]=1 [KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR]=1
  [KAFKA_PROCESS_ROLES]="broker,controller" [KAFKA_CONTROLLER_QUORUM_VOTERS]="1@localhost:29093"
  [KAFKA_INTER_BROKER_LISTENER_NAME]="PLAINTEXT" [KAFKA_CONTROLLER_LISTENER_NAMES]="CONTROLLER"
  [KAFKA_LOG_DIRS]="/tmp/kraft-combined-logs")
for key in "${!env_defaults[@]}"; do
  if [[ -z ${!key:-} ]]; then
    echo "$key not set. Setting it to default value: \"${env_defaults[$key]}\""
    export "$key=${env_defaults[$key]}"
  fi
done
echo "===> Configuring ..."
if [[ -n ${KAFKA_PROCESS_ROLES-} && -z ${CLUSTER_ID-} ]]; then echo "CLUSTER_ID is required." >&2; exit 1; fi
if [[ -z ${KAFKA_LISTENERS-} && ${KAFKA_PROCESS_ROLES-} != controller && -n ${KAFKA_ADVERTISED_LISTENERS-} ]]; then
  export KAFKA_LISTENERS=$(echo "$KAFKA_ADVERTISED_LISTENERS" | sed -e 's|://[^:]*:|://0.0.0.0:|g')
fi
echo "===> Launching ... "
echo "===> Using provided cluster id $CLUSTER_ID ..."
result=$(/opt/kafka/bin/kafka-run-class.sh kafka.docker.KafkaDockerWrapper setup \
  --default-configs-dir /etc/kafka/docker --mounted-configs-dir /mnt/shared/config \
  --final-configs-dir /opt/kafka/config 2>&1) || echo "$result" | grep -i "already formatted" \
  || { echo "$result"; exit 1; }
echo "$result"
exec /opt/kafka/bin/kafka-server-start.sh /opt/kafka/config/server.properties
"""

KAFKA_LOG4J2 = """Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.request.logger
        level: WARN
      - name: state.change.logger
        level: WARN
      - name: kafka.log.LogCleaner
        level: WARN
"""

KAFKA_TOOLS_LOG4J2 = """Configuration:
  Appenders:
    Console:
      name: STDERR
      target: SYSTEM_ERR
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDERR
"""

# The official image's docker-entrypoint.sh, for what it does with this
# compose file's settings (POSTGRES_USER/PASSWORD/DB, a `postgres ...`
# command): fix the data directory's owner and mode as root, drop to the
# postgres user (gosu there, setpriv here), initdb with the superuser and its
# password, `host all all all scram-sha-256` in pg_hba.conf, the database
# created through a socket-only temporary server, then exec the command.
PG_ENTRYPOINT = r"""#!/usr/bin/env bash
# compose-check: stands in for postgres:15's docker-entrypoint.sh.
set -Eeo pipefail
if [ "${1:0:1}" = '-' ]; then set -- postgres "$@"; fi
if [ "$1" = 'postgres' ] && [ "$(id -u)" = '0' ]; then
  mkdir -p "$PGDATA" && chmod 00700 "$PGDATA" && find "$PGDATA" \! -user postgres -exec chown postgres: '{}' +
  mkdir -p /var/run/postgresql && chmod 03775 /var/run/postgresql && find /var/run/postgresql \! -user postgres -exec chown postgres: '{}' +
  exec env HOME=/var/lib/postgresql setpriv --reuid=postgres --regid=postgres --init-groups -- "$BASH_SOURCE" "$@"
fi
if [ "$1" = 'postgres' ]; then
  if [ -s "$PGDATA/PG_VERSION" ]; then
    echo 'PostgreSQL Database directory appears to contain a database; Skipping initialization'
  else
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
      echo 'Error: Database is uninitialized and superuser password is not specified.' >&2; exit 1
    fi
    initdb --username="${POSTGRES_USER:-postgres}" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") ${POSTGRES_INITDB_ARGS:-}
    # The image's postgresql.conf.sample says listen_addresses = '*'; Debian's does not.
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    printf '\nhost all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
    PGUSER="${POSTGRES_USER:-postgres}" pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start
    db=${POSTGRES_DB:-${POSTGRES_USER:-postgres}}
    if [ "$db" != postgres ]; then
      psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --no-password --no-psqlrc \
        --dbname postgres --set db="$db" <<<'CREATE DATABASE :"db" ;'
    fi
    pg_ctl -D "$PGDATA" -m fast -w stop
    echo 'PostgreSQL init process complete; ready for start up.'
  fi
fi
exec "$@"
"""


def pg_bin():
    base = "/usr/lib/postgresql"
    versions = sorted((d for d in os.listdir(base) if os.path.isdir(f"{base}/{d}/bin")),
                      key=lambda v: [int(x) for x in re.findall(r"\d+", v)]) if os.path.isdir(base) else []
    return (versions[-1], f"{base}/{versions[-1]}/bin") if versions else (None, None)


def write_exec(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)


def chown_tree(path, uid, gid):
    os.lchown(path, uid, gid)
    for d, dirs, files in os.walk(path):
        for n in dirs + files:
            os.lchown(os.path.join(d, n), uid, gid)


def populate(path, uid, gid, mode, template):
    """A directory as the image has it at `path`: a copy of `template` (the
    image's directory) or an empty one, with the image's owner and mode."""
    if template:
        shutil.copytree(template, path, symlinks=True)
        chown_tree(path, uid, gid)
    else:
        os.makedirs(path)
        os.chown(path, uid, gid)
    os.chmod(path, mode)


def kafka_image(name, version, root, images_dir):
    libs = os.path.join(root, ".cache", "kafka", version, "libs")
    if not os.path.isfile(os.path.join(root, ".cache", "kafka", version, ".fetch-complete")):
        raise Fatal(f"image {name}: the Kafka {version} jars are not in .cache/kafka/{version} (scripts/kafka.sh fetch)")
    classes = set()
    for jar in os.listdir(libs):
        if jar.startswith("kafka"):
            with zipfile.ZipFile(os.path.join(libs, jar)) as z:
                classes.update(n[:-6].replace("/", ".") for n in z.namelist() if n.endswith(".class"))
    for cls in list(KAFKA_TOOLS.values()) + ["kafka.Kafka", "kafka.docker.KafkaDockerWrapper"]:
        if cls not in classes:
            raise Fatal(f"image {name}: class {cls} is not in the Kafka {version} jars")
    img = Image(name)
    # USER appuser (adduser in the image: uid 1000, group appuser 1000, home /home/appuser).
    img.uid, img.gid, img.user, img.home = 1000, 1000, "appuser", "/home/appuser"
    img.cmd = ["/etc/kafka/docker/run"]
    base = os.path.join(images_dir, slug(name))
    opt = os.path.join(base, "opt-kafka")
    os.makedirs(os.path.join(opt, "bin"))
    os.makedirs(os.path.join(opt, "config"))
    os.makedirs(os.path.join(opt, "libs"))          # the jars are bound here
    write_exec(os.path.join(opt, "bin", "kafka-run-class.sh"), KAFKA_RUN_CLASS)
    write_exec(os.path.join(opt, "bin", "kafka-server-start.sh"), KAFKA_SERVER_START)
    for script, cls in KAFKA_TOOLS.items():
        write_exec(os.path.join(opt, "bin", script),
                   f'#!/usr/bin/env bash\nexec "$(dirname "$0")"/kafka-run-class.sh {cls} "$@"\n')
    for d in (os.path.join(opt, "config"),):
        with open(os.path.join(d, "log4j2.yaml"), "w") as f:
            f.write(KAFKA_LOG4J2)
        with open(os.path.join(d, "tools-log4j2.yaml"), "w") as f:
            f.write(KAFKA_TOOLS_LOG4J2)
    etc = os.path.join(base, "etc-kafka")
    os.makedirs(os.path.join(etc, "docker"))
    os.makedirs(os.path.join(etc, "secrets"))
    write_exec(os.path.join(etc, "docker", "run"), KAFKA_DOCKER_RUN)
    for fname, text in (("log4j2.yaml", KAFKA_LOG4J2), ("tools-log4j2.yaml", KAFKA_TOOLS_LOG4J2),
                        ("server.properties", "# the image's single-node default, used only without KAFKA_* settings\n"
                         "process.roles=broker,controller\nnode.id=1\ncontroller.quorum.voters=1@localhost:9093\n"
                         "listeners=PLAINTEXT://:9092,CONTROLLER://:9093\nadvertised.listeners=PLAINTEXT://localhost:9092\n"
                         "controller.listener.names=CONTROLLER\nlog.dirs=/tmp/kraft-combined-logs\n")):
        with open(os.path.join(etc, "docker", fname), "w") as f:
            f.write(text)
    # The image: chown appuser:appuser -R /opt/kafka /mnt/shared/config;
    # chown appuser:root -R /var/lib/kafka /etc/kafka; chmod -R ug+w /etc/kafka /var/lib/kafka.
    img.layer = {
        "/opt/kafka": (1000, 1000, 0o755, opt),
        "/etc/kafka": (1000, 0, 0o775, etc),
        "/mnt/shared/config": (1000, 1000, 0o755, None),
        "/var/lib/kafka/data": (1000, 0, 0o775, None),
        "/tmp": (0, 0, 0o1777, None),
    }
    img.shared = [("/opt/kafka/libs", libs)]
    img.notes = [
        f"{name}: java from the host (the image has Temurin 21), the Maven Central jars of "
        f".cache/kafka/{version}/libs at /opt/kafka/libs, /opt/kafka/bin/*.sh run the tools' classes "
        f"({', '.join(sorted(KAFKA_TOOLS))}) as kafka-run-class.sh would (KAFKA_HEAP_OPTS etc.); CMD "
        f"/etc/kafka/docker/run: the image's defaults for unset KAFKA_*, then the image's own "
        f"kafka.docker.KafkaDockerWrapper (KAFKA_FOO_BAR -> foo.bar, format with CLUSTER_ID), then "
        f"kafka.Kafka; USER appuser = uid 1000; /var/lib/kafka/data appuser:root 0775; "
        f"not emulated: the class-data-sharing archives, JMX options"]
    return img


def postgres_image(name, version, root, images_dir):
    major, bindir = pg_bin()
    if not bindir:
        raise Fatal(f"image {name}: no PostgreSQL under /usr/lib/postgresql (scripts/postgres.sh install)")
    try:
        pg = pwd.getpwnam("postgres")
    except KeyError:
        raise Fatal(f"image {name}: there is no `postgres` user (scripts/postgres.sh install)")
    img = Image(name)
    img.entrypoint, img.cmd = ["docker-entrypoint.sh"], ["postgres"]
    img.stop_signal = signal.SIGINT      # the image's STOPSIGNAL: a fast shutdown
    # The image's PATH ends with the server's bin directory; here it comes
    # first so that Debian's pg_wrapper scripts in /usr/bin do not stand in.
    img.env = {"PATH": f"{bindir}:{BASE_PATH}", "PGDATA": "/var/lib/postgresql/data",
               "PG_MAJOR": major, "LANG": "C.UTF-8"}
    bin_dir = os.path.join(images_dir, slug(name), "usr-local-bin")
    os.makedirs(bin_dir)
    write_exec(os.path.join(bin_dir, "docker-entrypoint.sh"), PG_ENTRYPOINT)
    img.shared = [("/usr/local/bin", bin_dir)]
    # The image: mkdir -p $PGDATA && chown postgres:postgres && chmod 1777;
    # /var/run/postgresql postgres:postgres 3777.
    img.layer = {
        "/var/lib/postgresql/data": (pg.pw_uid, pg.pw_gid, 0o1777, None),
        "/var/run/postgresql": (pg.pw_uid, pg.pw_gid, 0o3777, None),
        "/tmp": (0, 0, 0o1777, None),
    }
    want = version.split(".")[0]
    img.notes = [
        f"{name}: Debian's PostgreSQL {major} ({bindir}){'' if major == want else f' (the image is {want})'}; "
        f"ENTRYPOINT docker-entrypoint.sh = the image's steps for POSTGRES_USER/PASSWORD/DB "
        f"(initdb, scram-sha-256 for host connections, the database, listen_addresses='*'), as root then "
        f"the postgres user (uid {pg.pw_uid} here, 999 in the image); LANG C.UTF-8 (the image builds "
        f"en_US.utf8, this host has no such locale); STOPSIGNAL SIGINT"]
    return img


def mailpit_image(name, version, root, images_dir):
    binary = os.path.join(root, ".cache", "go", "bin", "mailpit")
    if not os.access(binary, os.X_OK):
        raise Fatal(f"image {name}: .cache/go/bin/mailpit is missing (scripts/mailpit.sh install)")
    built = os.path.isfile(os.path.join(root, ".cache", "go", "bin", f".mailpit-{version}"))
    img = Image(name)
    img.entrypoint = ["/mailpit"]
    img.shared = [("/mailpit", binary)]
    img.layer = {"/tmp": (0, 0, 0o1777, None)}
    img.notes = [f"{name}: .cache/go/bin/mailpit ({'built from ' + version if built else 'NOT built from ' + version}) "
                 f"at /mailpit, ENTRYPOINT /mailpit, as root (no USER in the image); its own HEALTHCHECK "
                 f"is replaced by the compose one (start_interval not emulated)"]
    return img


THIRD_PARTY = {"apache/kafka": kafka_image, "postgres": postgres_image, "axllent/mailpit": mailpit_image}


# ---------------------------------------------------------------------------
# Containers
# ---------------------------------------------------------------------------

class Container:
    def __init__(self, name, spec, image, index, engine):
        self.name, self.spec, self.image, self.engine = name, spec, image, engine
        self.ns = engine.ns_prefix + name
        self.ip = f"{SUBNET}.{10 + index}"
        self.cid = "%012x" % random.getrandbits(48)
        self.hostname = spec.get("hostname") or self.cid
        self.dir = os.path.join(engine.run_dir, "containers", name)
        self.log_path = os.path.join(engine.run_dir, "logs", f"{name}.log")
        self.health_log = os.path.join(engine.run_dir, "logs", f"{name}.health.log")
        self.restart = str(spec.get("restart", "no"))
        deps = spec.get("depends_on") or {}
        self.deps = ({d: "service_started" for d in deps} if isinstance(deps, list)
                     else {d: (v or {}).get("condition", "service_started") for d, v in deps.items()})
        self.stop_signal = getattr(signal, spec["stop_signal"]) if spec.get("stop_signal") else image.stop_signal
        self.stop_grace = seconds(spec.get("stop_grace_period"), DOCKER_STOP_GRACE)
        # user: compose's, else the image's
        self.uid, self.gid = image.uid, image.gid
        if spec.get("user") is not None:
            u, _, g = str(spec["user"]).partition(":")
            if not u.isdigit() or (g and not g.isdigit()):
                raise Fatal(f"{name}: user {spec['user']!r}: only numeric users are emulated")
            self.uid, self.gid = int(u), int(g or u)
        self.workdir = spec.get("working_dir") or image.workdir
        # environment: the image's, then compose's; Docker adds HOSTNAME, and
        # HOME from the user's passwd entry.
        env = dict(image.env)
        compose_env = spec.get("environment") or {}
        if isinstance(compose_env, list):
            compose_env = dict(e.split("=", 1) if "=" in e else (e, None) for e in compose_env)
        for k, v in compose_env.items():
            if v is not None:
                env[k] = str(v)
        env.setdefault("HOSTNAME", self.hostname)
        env.setdefault("HOME", image.home)
        self.env = env
        # argv: an entrypoint from compose drops the image's CMD.
        ep, cmd = spec.get("entrypoint"), spec.get("command")
        ep = shlex.split(ep) if isinstance(ep, str) else ep
        cmd = shlex.split(cmd) if isinstance(cmd, str) else cmd
        self.argv = (ep if ep is not None else image.entrypoint) + (
            cmd if cmd is not None else (image.cmd if ep is None else []))
        if not self.argv:
            raise Fatal(f"{name}: no command (neither the image nor compose gives one)")
        hc = spec.get("healthcheck")
        self.health = None
        if hc and not hc.get("disable") and hc.get("test") not in (None, ["NONE"]):
            test = hc["test"]
            if isinstance(test, str):
                test = ["CMD-SHELL", test]
            if test[0] == "CMD":
                probe = test[1:]
            elif test[0] == "CMD-SHELL":
                probe = ["/bin/sh", "-c", " ".join(test[1:])]
            else:
                raise Fatal(f"{name}: healthcheck test {test!r} is not CMD or CMD-SHELL")
            self.health = {
                "argv": probe, "text": " ".join(test[1:]),
                "interval": seconds(hc.get("interval"), 30), "timeout": seconds(hc.get("timeout"), 30),
                "retries": int(hc.get("retries", 3)), "start_period": seconds(hc.get("start_period"), 0)}
            h = self.health
            # When Docker would have called a container that ran all along
            # unhealthy: the start period, then `retries` probes at most
            # interval + timeout apart, plus one interval of slack.
            self.health_deadline = h["start_period"] + h["retries"] * (h["interval"] + h["timeout"]) + h["interval"]
        self.ports = []
        for p in spec.get("ports") or []:
            if isinstance(p, dict):
                self.ports.append((p.get("host_ip") or "0.0.0.0", int(p["published"]), int(p["target"])))
            else:
                text = str(p).split("/")[0]
                parts = text.split(":")
                if len(parts) == 3:
                    self.ports.append((parts[0], int(parts[1]), int(parts[2])))
                elif len(parts) == 2:
                    self.ports.append(("0.0.0.0", int(parts[0]), int(parts[1])))
                else:
                    raise Fatal(f"{name}: port {p!r} has no published port (random ports are not emulated)")
        self.volumes = []   # (source kind, source, target, read_only)
        for v in spec.get("volumes") or []:
            if isinstance(v, dict):
                src, tgt, ro, kind = v.get("source"), v["target"], bool(v.get("read_only")), v.get("type", "volume")
            else:
                parts = str(v).split(":")
                if len(parts) == 1:
                    src, tgt, ro = None, parts[0], False
                else:
                    src, tgt, ro = parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")
                kind = "bind" if src and (src.startswith("/") or src.startswith(".")) else "volume"
            self.volumes.append((kind, src, tgt, ro))
        ignored = sorted(set(spec) - {"build", "image", "environment", "command", "entrypoint", "depends_on",
                                      "healthcheck", "restart", "ports", "volumes", "user", "working_dir",
                                      "hostname", "stop_signal", "stop_grace_period"})
        if ignored:
            log(f"WARNING {name}: not emulated: {', '.join(ignored)}")
        # runtime state (guarded by engine.cond)
        self.proc = None
        self.pid = None
        self.run_id = 0
        self.starts = 0
        self.restarts = 0
        self.exit_codes = []
        self.state = "created"        # created, waiting, running, restarting, exited, not-started
        self.done = False             # exited and will not be restarted
        self.first_start = None
        self.last_start = None
        self.health_status = "starting" if self.health else None
        self.streak = 0
        self.run_healthy = False
        self.healthy_after = None
        self.last_probe = None
        self.failure = None
        self.waiting_for = []
        self.exited = threading.Event()

    # -- the container's filesystem ---------------------------------------------------

    def prepare(self):
        """Per-container writable directories, volumes, mount points and the launcher."""
        eng = self.engine
        os.makedirs(self.dir)
        mounts = {}   # container path -> (host source, read_only)
        for target, (uid, gid, mode, template) in self.image.layer.items():
            src = os.path.join(self.dir, "layer", slug(target))
            populate(src, uid, gid, mode, template)
            mounts[target] = (src, False)
        for target, src in self.image.shared:
            mounts[target] = (src, True)
        for kind, src, target, ro in self.volumes:
            if kind == "bind":
                mounts[target] = (os.path.abspath(os.path.join(eng.root, src)), ro)
            else:
                mounts[target] = (eng.volume(src or f"anon-{self.name}-{slug(target)}", self.image, target), ro)
        # Parents before children (/opt/kafka, then /opt/kafka/libs); a mount
        # point inside another mount is made in that mount's source, any other
        # on the host (recorded, removed at the end).
        order = sorted(mounts, key=lambda t: t.rstrip("/").count("/"))
        for target in order:
            src, _ = mounts[target]
            parent = max((t for t in mounts if t != target and target.startswith(t.rstrip("/") + "/")),
                         key=len, default=None)
            is_file = os.path.isfile(src)
            if parent:
                mp = os.path.join(mounts[parent][0], os.path.relpath(target, parent))
                if not os.path.lexists(mp):
                    if is_file:
                        os.makedirs(os.path.dirname(mp), exist_ok=True)
                        open(mp, "a").close()
                    else:
                        os.makedirs(mp)
            else:
                eng.ensure_host_path(target, is_file)
        lines = [
            "#!/bin/bash",
            f"# compose-check: container {self.name} (image {self.image.name}), started by",
            f"# `ip netns exec {self.ns} unshare --mount --uts --propagation private`.",
            "set -euo pipefail",
            f"echo {shlex.quote(self.hostname)} >/proc/sys/kernel/hostname",
        ]
        for target in order:
            src, ro = mounts[target]
            lines.append(f"mount --bind {shlex.quote(src)} {shlex.quote(target)}")
            if ro:
                lines.append(f"mount -o remount,bind,ro {shlex.quote(target)}")
        lines.append(f"cd {shlex.quote(self.workdir)}")
        lines.append("exec " + " ".join(shlex.quote(a) for a in self.exec_prefix() + self.argv))
        self.launcher = os.path.join(self.dir, "launch.sh")
        with open(self.launcher, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.mounts = [(t, mounts[t][0], mounts[t][1]) for t in order]

    def exec_prefix(self, chdir=None):
        """env -i with the container's environment, then the container's user."""
        pre = ["env", "-i"] + (["-C", chdir] if chdir else []) + [f"{k}={v}" for k, v in self.env.items()]
        if self.uid != 0 or self.gid != 0:
            pre += ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--"]
        return pre

    # -- the process --------------------------------------------------------------------

    def start(self):
        eng = self.engine
        with open(self.log_path, "a") as logf:
            logf.write(f"==== compose-check: start {self.starts + 1} of {self.name} at "
                       f"{time.strftime('%H:%M:%S')}: {' '.join(self.argv)[:300]} ====\n")
            logf.flush()
            self.exited = threading.Event()
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, "unshare", "--mount", "--uts", "--propagation", "private",
                 "--", "/bin/bash", self.launcher],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
                env={"PATH": BASE_PATH}, cwd="/")
        with eng.cond:
            self.pid = self.proc.pid
            self.run_id += 1
            self.starts += 1
            now = time.monotonic()
            self.last_start = now
            if self.first_start is None:
                self.first_start = now
            self.state = "running"
            if self.health:
                self.health_status, self.streak, self.run_healthy = "starting", 0, False
            eng.cond.notify_all()
        what = f"{self.name}: started (pid {self.pid}, {self.ip})" if self.starts == 1 else \
            f"{self.name}: restarted (restart {self.restarts}, pid {self.pid})"
        log(what)
        if self.health:
            threading.Thread(target=self.health_loop, args=(self.run_id,), daemon=True).start()

    def kill_leftovers(self):
        """Whatever still runs in the container's namespace dies with it (the
        container's PID namespace does that in Docker)."""
        r = run("ip", "netns", "pids", self.ns, check=False)
        for p in r.stdout.split():
            if p.isdigit():
                try:
                    os.kill(int(p), signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def runner(self):
        eng = self.engine
        with eng.cond:
            self.state = "waiting"
            while True:
                if eng.stopping.is_set():
                    return
                verdict = eng.dependency_verdict(self)
                if isinstance(verdict, str):
                    self.state = "not-started"
                    self.failure = f"not started: dependency failed to start: {verdict}"
                    eng.cond.notify_all()
                    return
                self.waiting_for = verdict
                if not verdict:
                    break
                eng.cond.wait(0.5)
        delay = 0.1
        while not eng.stopping.is_set():
            self.start()
            rc = self.proc.wait()
            ran = time.monotonic() - self.last_start
            self.kill_leftovers()
            self.exited.set()
            policy = self.restart.split(":")[0]
            again = not eng.stopping.is_set() and (
                policy in ("always", "unless-stopped") or (policy == "on-failure" and rc != 0))
            with eng.cond:
                self.exit_codes.append(rc)
                self.state = "restarting" if again else "exited"
                self.done = not again
                if self.health:
                    self.health_status = "starting" if again else self.health_status
                eng.cond.notify_all()
            if eng.stopping.is_set():
                return
            log(f"{self.name}: exited with code {rc} after {ran:.1f} s" +
                (f"; restart policy {self.restart}: restarting in {delay:.1f} s" if again else ""))
            if not again:
                return
            # Docker's restart backoff: 100 ms, doubled each time, at most a
            # minute, back to 100 ms after a run of 10 s.
            if ran >= 10:
                delay = 0.1
            if eng.stopping.wait(delay):
                return
            delay = min(delay * 2, 60.0)
            with eng.cond:
                self.restarts += 1

    # -- health -------------------------------------------------------------------------

    def probe(self, pid):
        h = self.health
        argv = ["nsenter", f"--target={pid}", "--net", "--mount", "--uts", "--"] + \
            self.exec_prefix(chdir=self.workdir) + h["argv"]
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
        try:
            out, _ = p.communicate(timeout=h["timeout"])
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.communicate()
            return False, f"Health check exceeded timeout ({h['timeout']:g}s)"
        text = out.decode(errors="replace").strip()[-2000:]
        return p.returncode == 0, (text or f"exit code {p.returncode}")

    def health_loop(self, run_id):
        eng, h = self.engine, self.health
        started = self.last_start
        while True:
            if eng.stopping.wait(h["interval"]):
                return
            with eng.cond:
                if self.run_id != run_id or self.state != "running":
                    return
                pid = self.pid
            ok, out = self.probe(pid)
            now = time.monotonic()
            with open(self.health_log, "a") as f:
                f.write(f"{time.strftime('%H:%M:%S')} {'ok  ' if ok else 'FAIL'} {out[-300:]}\n")
            with eng.cond:
                if self.run_id != run_id:
                    return
                self.last_probe = (ok, out)
                if ok:
                    if self.health_status != "healthy":
                        if self.healthy_after is None:
                            self.healthy_after = now - self.first_start
                        log(f"{self.name}: healthy ({now - started:.0f} s after its start)")
                    self.health_status, self.streak, self.run_healthy = "healthy", 0, True
                elif now - started >= h["start_period"] or self.run_healthy:
                    # A failure inside the start period counts only once a probe passed.
                    self.streak += 1
                    if self.streak >= h["retries"] and self.health_status != "unhealthy":
                        self.health_status = "unhealthy"
                        log(f"{self.name}: unhealthy ({self.streak} failed health checks in a row): {out[-200:]}")
                eng.cond.notify_all()

    def stop(self):
        if self.proc is None or self.exited.is_set():
            return
        try:
            os.kill(self.pid, self.stop_signal)
        except ProcessLookupError:
            pass
        if not self.exited.wait(self.stop_grace):
            log(f"{self.name}: still running {self.stop_grace:g} s after {signal.Signals(self.stop_signal).name}: SIGKILL")
            self.kill_leftovers()
            self.exited.wait(10)

    def describe(self):
        codes = {}
        for c in self.exit_codes:
            codes[c] = codes.get(c, 0) + 1
        return ", ".join(f"code {c} x{n}" for c, n in codes.items())

    def tail(self, n=12):
        try:
            with open(self.log_path, errors="replace") as f:
                lines = f.read().splitlines()[-n:]
        except OSError:
            lines = []
        return "\n".join("      " + line[:400] for line in lines)


# ---------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------

class Engine:
    def __init__(self, a):
        self.root, self.run_dir, self.project = os.path.abspath(a.root), os.path.abspath(a.run_dir), a.project
        self.host_ns, self.ns_prefix, self.up_timeout = a.host_ns, a.ns_prefix, a.up_timeout
        self.cond = threading.Condition()
        self.stopping = threading.Event()
        self.phase = "starting"
        self.error = None
        self.started = time.monotonic()
        self.up_after = None
        self.forwarder = None
        self.created_file = os.path.join(self.run_dir, "created-paths")
        with open(a.model) as f:
            import yaml  # python3-yaml; scripts/compose-check.sh installs it if missing
            self.model = unescape(yaml.safe_load(f))
        self.volume_names = set((self.model.get("volumes") or {}).keys())
        self.volumes = {}

    # -- host paths -------------------------------------------------------------------

    def ensure_host_path(self, path, is_file=False):
        """Make a missing mount point on the host (recorded first, so that a
        killed run's leftovers are found and removed by the next)."""
        missing = []
        p = path
        while not os.path.lexists(p):
            missing.append(p)
            p = os.path.dirname(p)
        for i, p in enumerate(reversed(missing)):
            with open(self.created_file, "a") as f:
                f.write(p + "\n")
            if is_file and i == len(missing) - 1:
                open(p, "a").close()
            else:
                os.mkdir(p, 0o755)

    def remove_created_paths(self):
        try:
            with open(self.created_file) as f:
                paths = [p for p in f.read().splitlines() if p]
        except OSError:
            return
        for p in reversed(paths):
            try:
                if os.path.isdir(p) and not os.path.islink(p):
                    os.rmdir(p)
                elif os.path.isfile(p) and os.path.getsize(p) == 0:
                    os.unlink(p)
            except OSError as e:
                log(f"WARNING could not remove {p}: {e}")
        os.unlink(self.created_file)

    def volume(self, name, image, target):
        """A fresh named volume. Docker fills a new volume from the image's
        content at the mount path, owner and mode included; a path the image
        lacks gives a root:root 0755 mount point."""
        if name in self.volumes:
            return self.volumes[name]
        path = os.path.join(self.run_dir, "volumes", name)
        uid, gid, mode, template = image.layer.get(target, (0, 0, 0o755, None))
        populate(path, uid, gid, mode, template)
        how = "from the image's directory" if target in image.layer else "the image has no such directory"
        log(f"volume {name}: {uid}:{gid} {mode:04o} at {target} of {image.name} ({how})")
        self.volumes[name] = path
        return path

    # -- setup ----------------------------------------------------------------------------

    def prepare(self):
        services = self.model.get("services") or {}
        if not services:
            raise Fatal("the compose model has no services")
        images_dir = os.path.join(self.run_dir, "images")
        os.makedirs(images_dir)
        images = {}
        self.containers = []
        for i, name in enumerate(sorted(services)):
            spec = services[name]
            image_name = spec.get("image") or f"{self.project}_{name}"
            key = (image_name, json.dumps(spec.get("build"), sort_keys=True))
            if key not in images:
                if spec.get("build"):
                    images[key] = build_from_dockerfile(self.root, image_name, spec["build"], images_dir)
                else:
                    repo, _, tag = image_name.partition(":")
                    build = THIRD_PARTY.get(repo)
                    if not build:
                        raise Fatal(f"{name}: no emulation for image {image_name} (known: {', '.join(THIRD_PARTY)})")
                    images[key] = build(image_name, tag or "latest", self.root, images_dir)
                for note in images[key].notes:
                    log("image " + note)
            self.containers.append(Container(name, spec, images[key], i, self))
        self.by_name = {c.name: c for c in self.containers}
        for c in self.containers:
            for d in c.deps:
                if d not in self.by_name:
                    raise Fatal(f"{c.name} depends on {d}, which is not a service")
        # A service something waits on with service_completed_successfully must exit 0.
        self.must_complete = {d for c in self.containers for d, cond in c.deps.items()
                              if cond == "service_completed_successfully"}
        published = {}
        for c in self.containers:
            for host_ip, pub, _ in c.ports:
                if (host_ip, pub) in published or ("0.0.0.0", pub) in published:
                    raise Fatal(f"{c.name} and {published.get((host_ip, pub)) or published[('0.0.0.0', pub)]} "
                                f"both publish port {pub}")
                published[(host_ip, pub)] = c.name
        for c in self.containers:
            c.prepare()

    def setup_network(self):
        run("ip", "netns", "add", self.host_ns)
        run("ip", "-n", self.host_ns, "link", "set", "lo", "up")
        run("ip", "-n", self.host_ns, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.host_ns, "addr", "add", f"{SUBNET}.1/24", "dev", "br0")
        run("ip", "-n", self.host_ns, "link", "set", "br0", "up")
        if not os.path.isdir("/etc/netns"):
            self.ensure_host_path("/etc/netns")
        hosts = "".join(f"{c.ip}\t{c.name} {self.project}-{c.name}-1\n" for c in self.containers)
        for i, c in enumerate(self.containers):
            run("ip", "netns", "add", c.ns)
            run("ip", "-n", c.ns, "link", "set", "lo", "up")
            veth = f"v{i}"
            run("ip", "-n", self.host_ns, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", c.ns)
            run("ip", "-n", self.host_ns, "link", "set", veth, "master", "br0", "up")
            run("ip", "-n", c.ns, "addr", "add", f"{c.ip}/24", "dev", "eth0")
            run("ip", "-n", c.ns, "link", "set", "eth0", "up")
            self.write_netns_files(c.ns, f"# compose-check: /etc/hosts of {c.name}; compose's DNS answers the "
                                         f"service names in Docker\n127.0.0.1\tlocalhost\n"
                                         f"::1\tlocalhost ip6-localhost ip6-loopback\n{c.ip}\t{c.hostname}\n" + hosts)
        self.write_netns_files(self.host_ns, "# compose-check: the host namespace\n127.0.0.1\tlocalhost\n"
                                             "::1\tlocalhost ip6-localhost ip6-loopback\n")
        log(f"network: bridge {SUBNET}.0/24 in namespace {self.host_ns} ({SUBNET}.1), "
            + ", ".join(f"{c.name} {c.ip}" for c in self.containers))

    def write_netns_files(self, ns, hosts):
        d = os.path.join("/etc/netns", ns)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "hosts"), "w") as f:
            f.write(hosts)
        with open(os.path.join(d, "resolv.conf"), "w") as f:
            f.write("# compose-check: no DNS server here; names resolve through /etc/hosts\n"
                    "options ndots:0 timeout:1 attempts:1\n")

    def start_forwarder(self):
        maps = [f"{host_ip}:{pub}={c.ip}:{target}" for c in self.containers for host_ip, pub, target in c.ports]
        if not maps:
            return
        portlog = open(os.path.join(self.run_dir, "logs", "ports.log"), "a")
        self.forwarder = subprocess.Popen(
            ["ip", "netns", "exec", self.host_ns, sys.executable, os.path.abspath(__file__), "forward", *maps],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=portlog, start_new_session=True)
        line = self.forwarder.stdout.readline().decode().strip()
        if line != "ready":
            raise Fatal(f"the port publisher did not start ({line or 'no answer'}); see logs/ports.log")
        for c in self.containers:
            for host_ip, pub, target in c.ports:
                log(f"port {host_ip}:{pub} -> {c.name} {c.ip}:{target} (in namespace {self.host_ns})")

    # -- dependencies, progress -----------------------------------------------------------

    def dependency_verdict(self, c):
        """[] when every condition holds, a list of what is awaited, or a
        string saying which dependency failed (compose then gives up)."""
        pending = []
        for dep, cond in c.deps.items():
            d = self.by_name[dep]
            if d.failure:
                return f"{dep} failed"
            if cond == "service_healthy":
                if not d.health:
                    return f"{dep} has no healthcheck (service_healthy)"
                if d.health_status == "unhealthy":
                    return f"container {dep} is unhealthy"
                if d.health_status != "healthy":
                    pending.append(f"{dep} healthy")
            elif cond == "service_completed_successfully":
                if d.done:
                    if d.exit_codes[-1] != 0:
                        return f"{dep} exited with code {d.exit_codes[-1]}"
                else:
                    pending.append(f"{dep} completed")
            else:
                if d.starts == 0:
                    pending.append(f"{dep} started")
        return pending

    def is_up(self, c):
        if c.name in self.must_complete:
            return c.done and c.exit_codes[-1] == 0
        if c.health:
            return c.health_status == "healthy"
        return c.state == "running" or (c.done and c.exit_codes[-1] == 0)

    def check_failures(self, now):
        """The first service that failed, root causes before the services
        that were not started because of them."""
        not_started = None
        for c in self.containers:
            if c.failure:
                not_started = not_started or (c, c.failure)
                continue
            if c.done and c.exit_codes and c.exit_codes[-1] != 0:
                return c, f"exited with code {c.exit_codes[-1]}" + (" (a one-shot service must exit 0)"
                                                                     if c.name in self.must_complete else "")
            if c.health and c.first_start is not None and self.up_after is None:
                if c.health_status == "unhealthy":
                    return c, (f"is unhealthy: {c.streak} failed health checks in a row "
                               f"(retries {c.health['retries']})")
                if c.health_status != "healthy" and now - c.first_start > c.health_deadline:
                    h = c.health
                    why = (f"never became healthy: not healthy {now - c.first_start:.0f} s after its first start "
                           f"(start_period {h['start_period']:g}s + retries {h['retries']} x (interval "
                           f"{h['interval']:g}s + timeout {h['timeout']:g}s): Docker would call it unhealthy)")
                    if c.restarts:
                        why += f"; it keeps restarting: {c.restarts} restarts ({c.describe()})"
                    return c, why
        return not_started

    def failure_message(self, c, why):
        lines = [f"{c.name} {why}"]
        if c.last_probe and not c.last_probe[0]:
            lines.append(f"    last health check `{c.health['text']}`: {c.last_probe[1][-300:]}")
        lines.append(f"    last lines of {os.path.relpath(c.log_path, self.root)}:")
        lines.append(c.tail())
        return "\n".join(lines)

    def state_json(self):
        now = time.monotonic()
        services = {}
        for c in self.containers:
            services[c.name] = {
                "image": c.image.name, "ip": c.ip, "state": c.state, "health": c.health_status,
                "restarts": c.restarts, "exit_codes": c.exit_codes[-5:], "pid": c.pid,
                "ports": [f"{h}:{p}->{t}" for h, p, t in c.ports],
                "one_shot": c.name in self.must_complete,
                "healthy_after": round(c.healthy_after, 1) if c.healthy_after is not None else None,
                "waiting_for": c.waiting_for if c.state == "waiting" else [],
                "failure": c.failure}
        return {"phase": self.phase, "error": self.error, "elapsed": round(now - self.started, 1),
                "up_after": round(self.up_after, 1) if self.up_after is not None else None,
                "host_ns": self.host_ns, "services": services}

    def write_state(self):
        path = os.path.join(self.run_dir, "state.json")
        with self.cond:
            data = self.state_json()
        with open(path + ".tmp", "w") as f:
            json.dump(data, f, indent=1)
        os.replace(path + ".tmp", path)

    def monitor(self):
        last_write = 0
        while not self.stopping.is_set():
            now = time.monotonic()
            with self.cond:
                failed = self.check_failures(now)
                if failed:
                    raise Fatal(self.failure_message(*failed))
                if self.forwarder and self.forwarder.poll() is not None:
                    raise Fatal(f"the port publisher exited with code {self.forwarder.returncode}; see logs/ports.log")
                if self.up_after is None:
                    if all(self.is_up(c) for c in self.containers):
                        self.up_after = now - self.started
                        self.phase = "up"
                        log(f"all {len(self.containers)} services up after {self.up_after:.0f} s")
                    elif now - self.started > self.up_timeout:
                        pending = [f"{c.name} ({c.state}" + (f", health {c.health_status}" if c.health else "") +
                                   (f", waiting for {', '.join(c.waiting_for)}" if c.state == 'waiting' else "") + ")"
                                   for c in self.containers if not self.is_up(c)]
                        raise Fatal(f"HUNG: not up after {self.up_timeout:g} s: {'; '.join(pending)}")
            if now - last_write >= 1:
                self.write_state()
                last_write = now
            self.stopping.wait(0.25)

    # -- teardown ---------------------------------------------------------------------------

    def stop_all(self):
        """Dependents first, as `docker compose down` does; one level at a time."""
        level = {}

        def lvl(c):
            if c.name not in level:
                level[c.name] = 1 + max((lvl(self.by_name[d]) for d in c.deps), default=0)
            return level[c.name]
        for c in self.containers:
            lvl(c)
        for n in sorted(set(level.values()), reverse=True):
            group = [c for c in self.containers if level[c.name] == n]
            threads = [threading.Thread(target=c.stop) for c in group]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

    def teardown(self):
        if self.forwarder and self.forwarder.poll() is None:
            self.forwarder.terminate()
            try:
                self.forwarder.wait(5)
            except subprocess.TimeoutExpired:
                self.forwarder.kill()
        names = run("ip", "netns", "list", check=False).stdout.split("\n")
        for line in names:
            ns = line.split(" ")[0]
            if ns.startswith(self.ns_prefix):
                for p in run("ip", "netns", "pids", ns, check=False).stdout.split():
                    try:
                        os.kill(int(p), signal.SIGKILL)
                    except (ProcessLookupError, ValueError):
                        pass
                run("ip", "netns", "del", ns, check=False)
                shutil.rmtree(os.path.join("/etc/netns", ns), ignore_errors=True)
        self.remove_created_paths()
        for d in ("images", "containers", "volumes"):
            shutil.rmtree(os.path.join(self.run_dir, d), ignore_errors=True)

    def main(self):
        rc = 0
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
        try:
            self.prepare()
            self.setup_network()
            self.start_forwarder()
            for c in self.containers:
                threading.Thread(target=c.runner, daemon=True).start()
            self.monitor()
        except Fatal as e:
            rc = 1
            self.phase, self.error = "failed", str(e)
            log(f"FAILED: {e}")
        except Exception as e:   # a bug here must still tear everything down
            rc = 2
            self.phase, self.error = "failed", f"{type(e).__name__}: {e}"
            log(f"FAILED (engine error): {type(e).__name__}: {e}")
            import traceback
            traceback.print_exc()
        finally:
            self.stopping.set()
            with self.cond:
                self.cond.notify_all()
                if self.phase != "failed":
                    self.phase = "stopping"
            if hasattr(self, "by_name"):
                try:
                    self.write_state()
                except Exception:
                    pass
                log("stopping every service (dependents first)")
                self.stop_all()
                summary = ", ".join(f"{c.name} {c.restarts}" for c in self.containers if c.restarts)
                log(f"restarts: {summary or 'none'}")
            self.teardown()
            if self.phase != "failed":
                self.phase = "down"
            if hasattr(self, "by_name"):
                self.write_state()
            log("namespaces, /etc/netns entries, mount points, image and container directories removed")
        return rc


# ---------------------------------------------------------------------------
# The port publisher
# ---------------------------------------------------------------------------

async def relay(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def forward_main(maps):
    servers = []
    for spec in maps:
        listen, _, target = spec.partition("=")
        lhost, _, lport = listen.rpartition(":")
        thost, _, tport = target.rpartition(":")

        async def handle(cr, cw, thost=thost, tport=int(tport), spec=spec):
            try:
                ur, uw = await asyncio.wait_for(asyncio.open_connection(thost, tport), 5)
            except (OSError, asyncio.TimeoutError) as e:
                print(f"{spec}: {e}", file=sys.stderr, flush=True)
                cw.close()
                return
            await asyncio.gather(relay(cr, uw), relay(ur, cw))
            for w in (uw, cw):
                try:
                    w.close()
                except OSError:
                    pass
        servers.append(await asyncio.start_server(handle, lhost, int(lport), reuse_address=True))
    print("ready", flush=True)
    sys.stdout.close()
    await asyncio.gather(*(s.serve_forever() for s in servers))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up")
    up.add_argument("--root", required=True)
    up.add_argument("--model", required=True)
    up.add_argument("--run-dir", required=True)
    up.add_argument("--project", required=True)
    up.add_argument("--host-ns", required=True)
    up.add_argument("--ns-prefix", required=True)
    up.add_argument("--up-timeout", type=float, default=300)
    fw = sub.add_parser("forward")
    fw.add_argument("maps", nargs="+")
    a = ap.parse_args()
    if a.cmd == "forward":
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        try:
            asyncio.run(forward_main(a.maps))
        except OSError as e:
            print(f"cannot listen: {e}", flush=True)
            return 1
        return 0
    return Engine(a).main()


if __name__ == "__main__":
    sys.exit(main())
