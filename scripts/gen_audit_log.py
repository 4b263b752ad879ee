#!/usr/bin/env python3
# A valid hash-chained audit log of N sessions (connect, auth, upstream, 6 statements with
# outcomes, disconnect; 50 people), in files of ~128 MB, for measuring `proxy audit
# sessions` and `proxy audit session` over a large log (docs/benchmarks.md, "reading the
# audit"). Usage: scripts/gen_audit_log.py SESSIONS OUT_DIR (200000: 1.6 GB).
import hashlib, json, sys, os
n_sessions = int(sys.argv[1]); out = sys.argv[2]
seq = 0; prev = "0"*64; f = None; size = 0; files = 0
def emit(body):
    global seq, prev, f, size, files
    if f is None or size > 128*1024*1024:
        if f: f.close()
        files += 1
        f = open(os.path.join(out, "audit-%016d-20261206T000000Z.jsonl" % (seq+1)), "w"); size = 0
    seq += 1
    head = '{"seq":%d,"prev":"%s",%s' % (seq, prev, body)
    h = hashlib.sha256(head.encode()).hexdigest()
    line = head + ',"hash":"%s"}\n' % h
    f.write(line); size += len(line); prev = h
emit('"ts":"2026-12-06T00:00:00.000000Z","type":"log_opened","replica":"bench","previous_file":"","pid":1')
for i in range(n_sessions):
    sid = "%024x" % i
    ts = "2026-12-06T%02d:%02d:%02d.%06dZ" % ((i//3600000)%24, (i//60000)%60, (i//1000)%60, i%1000*1000)
    email = "user%d@example.com" % (i % 50)
    ident = '"identity":{"kind":"person","email":"%s","subject":"s%d","issuer":"https://sso.example.com","grant_id":%d,"request_id":%d,"approved_by":["dana@example.com"]},"database":"rates","db_user":"p_u%d","secret_version":"v1","application":"psql"' % (email, i%50, i%50, i%50, i%50)
    who = '"session":"%s","client":"10.0.0.1:%d"' % (sid, 1024 + i % 60000)
    emit('"ts":"%s","type":"connect",%s,"tls":true,"startup":{"user":"%s","database":"rates"}' % (ts, who, email))
    emit('"ts":"%s","type":"auth",%s,%s,"method":"oidc","user":"%s","requested_database":"rates","result":"ok"' % (ts, who, ident, email))
    emit('"ts":"%s","type":"upstream",%s,%s,"backend_pid":%d,"application_name":"dbgw:%s"' % (ts, who, ident, 1000+i, sid))
    for k in range(6):
        s = seq + 1
        emit('"ts":"%s","type":"statement",%s,%s,"protocol":"extended","steps":["parse","bind","execute"],"prepared":"","portal":"","statement":"SELECT price FROM prices WHERE orig_code = $1 AND day = $2","params":["CNGGZ","2021-01-%02d"]' % (ts, who, ident, k+1))
        emit('"ts":"%s","type":"outcome","session":"%s","ref":%d,"status":"ok","tag":"SELECT 1","rows":1,"duration_us":120' % (ts, sid, s))
    emit('"ts":"%s","type":"disconnect",%s,%s,"bytes_from_client":900,"bytes_to_client":1400,"statements":6,"duration_ms":40,"reason":"client closed the connection"' % (ts, who, ident))
f.close()
print(seq, "records in", files, "files")
