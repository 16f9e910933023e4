#!/usr/bin/env python3
"""Keep a local schema registry's contents across restarts (python3 standard library only).

rivven-schema keeps schemas in memory and numbers ids from 1 again after a restart, while the
local brokers keep their records. A record written before the restart names its schema by id,
so a registry that came back empty (or refilled in a different order) would decode old records
with the wrong schema. scripts/stack.sh therefore:

  dump URL FILE           on a graceful stop: write every schema id, every subject's versions
                          and every compatibility setting to FILE (atomically);
  restore URL FILE        on start, against an empty registry: re-register the schemas in id
                          order so that each gets its old id back, restore the compatibility
                          settings, then check that every id and every subject maps to what it
                          did before. Any difference is an error;
  broker-topics HOST:PORT print the non-internal topics a Kafka broker holds (Metadata request),
                          so that a registry with no dump can refuse to start next to a broker
                          whose records it cannot decode.

Exit status: 0 on success, 1 on a failed check (the message says what and what to do), 2 on
usage errors.
"""

import json
import os
import socket
import struct
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

FORMAT = 1
RESTORE_SUBJECT = "_continuum.restore"


class Fail(Exception):
    pass


def http(method, url, body=None, ok404=False):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/vnd.schemaregistry.v1+json, application/json")
    if data is not None:
        req.add_header("Content-Type", "application/vnd.schemaregistry.v1+json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        if ok404 and e.code == 404:
            return None
        raise Fail(f"{method} {url}: HTTP {e.code}: {e.read().decode(errors='replace')}")
    except (urllib.error.URLError, OSError) as e:
        raise Fail(f"{method} {url}: {e}")


def q(s):
    return urllib.parse.quote(s, safe="")


def same_schema(a, b):
    if a == b:
        return True
    try:
        return json.loads(a) == json.loads(b)
    except ValueError:
        return False


def read_state(url):
    """Everything a restore needs, read through the REST API."""
    subjects = []
    max_id = 0
    for name in sorted(http("GET", f"{url}/subjects")):
        versions = []
        for v in http("GET", f"{url}/subjects/{q(name)}/versions"):
            sv = http("GET", f"{url}/subjects/{q(name)}/versions/{v}")
            versions.append({"version": sv["version"], "id": sv["id"]})
            max_id = max(max_id, sv["id"])
        level = http("GET", f"{url}/config/{q(name)}")["compatibilityLevel"]
        subjects.append({"subject": name, "compatibility": level, "versions": versions})
    # Ids are handed out 1, 2, 3, ... and a schema stays readable by id after its subjects are
    # deleted, so probe upwards until the first missing id past the highest one in use.
    schemas = []
    i = 1
    while True:
        s = http("GET", f"{url}/schemas/ids/{i}", ok404=True)
        if s is None:
            if i > max_id:
                break
            schemas.append({"id": i, "missing": True})
        else:
            schemas.append({
                "id": i,
                "schemaType": s.get("schemaType", "AVRO"),
                "schema": s["schema"],
                "references": s.get("references", []),
            })
        i += 1
    return {
        "format": FORMAT,
        "compatibility": http("GET", f"{url}/config")["compatibilityLevel"],
        "mode": http("GET", f"{url}/mode", ok404=True),
        "schemas": schemas,
        "subjects": subjects,
    }


def dump(url, path):
    state = read_state(url)
    state["registry"] = url
    state["dumped_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".schemas.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)
    print(f"dumped {len(state['schemas'])} schema ids and {len(state['subjects'])} subjects to {path}")


def register(url, subject, entry):
    body = {"schema": entry["schema"], "schemaType": entry["schemaType"]}
    if entry.get("references"):
        body["references"] = entry["references"]
    return http("POST", f"{url}/subjects/{q(subject)}/versions", body)["id"]


def restore(url, path):
    with open(path) as f:
        state = json.load(f)
    if state.get("format") != FORMAT:
        raise Fail(f"{path}: unknown dump format {state.get('format')!r}")
    if http("GET", f"{url}/subjects") or http("GET", f"{url}/schemas/ids/1", ok404=True):
        raise Fail(f"{url} already holds schemas; a restore needs an empty registry")

    # For each id, the subjects that hold it. rivven-schema 0.0.22 adds no version when a schema
    # it already has is registered under a subject that already has versions, but does under a
    # new subject. So an id is first registered where it is a later version (that subject has its
    # earlier ids already, and the schema is new), then where it is the first version.
    by_id = {}
    for v_subject in state["subjects"]:
        for v in v_subject["versions"]:
            by_id.setdefault(v["id"], []).append((v["version"], v_subject["subject"]))
    by_id = {i: [name for _, name in sorted(vs, key=lambda x: (-x[0], x[1]))] for i, vs in by_id.items()}

    # No compatibility checks while replaying: the versions were accepted under whatever the
    # settings were at the time; the settings themselves are restored afterwards.
    http("PUT", f"{url}/config", {"compatibility": "NONE"})
    done = set()  # (subject, id) already registered
    for entry in state["schemas"]:
        want = entry["id"]
        names = by_id.get(want, [])
        if entry.get("missing") or not names:
            # An id no live subject uses (its subjects were deleted) or a hole: take the id
            # under a throw-away subject, then delete that subject for good. The schema stays
            # readable by id, as it was.
            placeholder = entry if not entry.get("missing") else {
                "schemaType": "AVRO",
                "schema": json.dumps({"type": "record", "name": f"ContinuumRestoreHole{want}",
                                      "namespace": "continuum.restore", "fields": []}),
            }
            got = register(url, RESTORE_SUBJECT, placeholder)
            http("DELETE", f"{url}/subjects/{q(RESTORE_SUBJECT)}?permanent=true")
            names = []
        else:
            got = None
            for name in names:
                if (name, want) in done:
                    continue
                got_here = register(url, name, entry)
                done.add((name, want))
                if got_here != want:
                    raise Fail(f"schema id {want} (subject {name}) came back as id {got_here}")
                got = want
        if got is not None and got != want:
            raise Fail(f"schema id {want} came back as id {got}")

    # Subjects whose versions point at an older id (the same schema under another subject) were
    # registered above, in id order; now the settings.
    default = state["compatibility"]
    for s in state["subjects"]:
        if s["compatibility"] != default:
            http("PUT", f"{url}/config/{q(s['subject'])}", {"compatibility": s["compatibility"]})
    http("PUT", f"{url}/config", {"compatibility": default})
    mode = (state.get("mode") or {}).get("mode")
    if mode and mode != "READWRITE":
        http("PUT", f"{url}/mode", {"mode": mode})

    verify(url, state)
    print(f"restored {len(state['schemas'])} schema ids and {len(state['subjects'])} subjects from {path}")


def verify(url, want):
    got = read_state(url)
    problems = []
    for w in want["schemas"]:
        i = w["id"]
        s = http("GET", f"{url}/schemas/ids/{i}", ok404=True)
        if w.get("missing"):
            continue
        if s is None:
            problems.append(f"id {i}: missing after restore")
        elif not same_schema(s["schema"], w["schema"]) or s.get("schemaType", "AVRO") != w["schemaType"]:
            problems.append(f"id {i}: maps to a different schema after restore")
    got_subjects = {s["subject"]: s for s in got["subjects"]}
    for w in want["subjects"]:
        g = got_subjects.pop(w["subject"], None)
        if g is None:
            problems.append(f"subject {w['subject']}: missing after restore")
            continue
        if [v["id"] for v in g["versions"]] != [v["id"] for v in w["versions"]]:
            problems.append(f"subject {w['subject']}: ids {[v['id'] for v in g['versions']]}, "
                            f"was {[v['id'] for v in w['versions']]}")
        elif [v["version"] for v in g["versions"]] != [v["version"] for v in w["versions"]]:
            # Version numbers skip where versions were deleted; the ids (what records carry)
            # are right, so this is only worth a warning.
            print(f"warning: subject {w['subject']}: version numbers "
                  f"{[v['version'] for v in g['versions']]}, were "
                  f"{[v['version'] for v in w['versions']]} (ids match)", file=sys.stderr)
        if g["compatibility"] != w["compatibility"]:
            problems.append(f"subject {w['subject']}: compatibility {g['compatibility']}, "
                            f"was {w['compatibility']}")
    for extra in got_subjects:
        problems.append(f"subject {extra}: not in the dump")
    if got["compatibility"] != want["compatibility"]:
        problems.append(f"global compatibility {got['compatibility']}, was {want['compatibility']}")
    if problems:
        raise Fail("the restored registry differs from the dump:\n  " + "\n  ".join(problems[:20]))


# --- Kafka Metadata (v1) over a plain socket -------------------------------------------------

def kafka_topics(address):
    host, _, port = address.rpartition(":")
    client = b"continuum-stack"
    body = struct.pack(">hhih", 3, 1, 1, len(client)) + client + struct.pack(">i", -1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", recv(s, 4))[0]
        buf = recv(s, size)
    r = Reader(buf)
    r.i32()  # correlation id
    for _ in range(r.i32()):  # brokers
        r.i32(); r.string(); r.i32(); r.string()
    r.i32()  # controller
    topics = []
    for _ in range(r.i32()):
        err, name, internal = r.i16(), r.string(), r.i8()
        for _ in range(r.i32()):  # partitions
            r.i16(); r.i32(); r.i32()
            for _ in range(r.i32()):
                r.i32()
            for _ in range(r.i32()):
                r.i32()
        if err == 0 and not internal and not name.startswith("__"):
            topics.append(name)
    return sorted(topics)


def recv(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise Fail("broker closed the connection")
        out += chunk
    return out


class Reader:
    def __init__(self, b):
        self.b, self.p = b, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.b, self.p)[0]
        self.p += struct.calcsize(fmt)
        return v

    def i8(self):
        return self.take(">b")

    def i16(self):
        return self.take(">h")

    def i32(self):
        return self.take(">i")

    def string(self):
        n = self.i16()
        if n < 0:
            return None
        s = self.b[self.p:self.p + n].decode()
        self.p += n
        return s


def main(argv):
    try:
        if len(argv) == 3 and argv[0] == "dump":
            dump(argv[1].rstrip("/"), argv[2])
        elif len(argv) == 3 and argv[0] == "restore":
            restore(argv[1].rstrip("/"), argv[2])
        elif len(argv) == 2 and argv[0] == "broker-topics":
            for t in kafka_topics(argv[1]):
                print(t)
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except (Fail, OSError, ValueError, KeyError, struct.error) as e:
        print(f"registry-state: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
