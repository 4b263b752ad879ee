#!/bin/sh
# The proxy task's metrics sidecar: every METRICS_INTERVAL_SECS it reads the proxy's
# Prometheus metrics (METRICS_URL) and prints the ones the alarms watch (METRICS_NAMES,
# comma-separated) as one CloudWatch embedded-metric-format line on stdout. The task's log
# driver sends stdout to CloudWatch Logs, which turns the line into metrics in
# METRICS_NAMESPACE with the dimension job=proxy. Counters are sent as their increase since
# the previous read (the first read: since the proxy started, which is the task's start), so
# a Sum over a period is the increase in it; gauges as they are, labels summed.
# It replaces the CloudWatch agent, which runs as root and writes into its own root
# filesystem: this runs as the task's user with a read-only root and writes nothing.
set -u
: "${METRICS_URL:?}" "${METRICS_NAMESPACE:?}" "${METRICS_NAMES:?}"
METRICS_INTERVAL_SECS=${METRICS_INTERVAL_SECS:-60}

log() { printf '{"level":"%s","msg":"%s"}\n' "$1" "$2" >&2; }

# stdin: the Prometheus text; prints the totals (name=value ...) on line 1, the EMF line on 2.
emf() {
  awk -v names="$METRICS_NAMES" -v prev="$1" -v ns="$METRICS_NAMESPACE" -v ts="$(date +%s%3N)" '
    BEGIN {
      n = split(names, order, ",")
      for (i = 1; i <= n; i++) want[order[i]] = 1
      m = split(prev, p, " ")
      for (i = 1; i <= m; i++) { split(p[i], kv, "="); last[kv[1]] = kv[2]; had[kv[1]] = 1 }
    }
    /^# TYPE / { type[$3] = $4; next }
    /^#/ { next }
    {
      name = $1; sub(/\{.*/, "", name)
      if (name in want) { total[name] += $NF; seen[name] = 1 }
    }
    END {
      state = ""; defs = ""; fields = ""
      for (i = 1; i <= n; i++) {
        k = order[i]
        if (!(k in seen)) continue
        state = state k "=" total[k] " "
        t = type[k]
        if (t == "" && k ~ /_total$/) t = type[substr(k, 1, length(k) - 6)]
        v = total[k]
        # A counter below its last value: the proxy restarted; all of it is new.
        if (t == "counter" && (k in had) && v >= last[k]) v = v - last[k]
        defs = defs (defs == "" ? "" : ",") "{\"Name\":\"" k "\"}"
        fields = fields ",\"" k "\":" v
      }
      print state
      if (defs != "")
        printf "{\"_aws\":{\"Timestamp\":%s,\"CloudWatchMetrics\":[{\"Namespace\":\"%s\",\"Dimensions\":[[\"job\"]],\"Metrics\":[%s]}]},\"job\":\"proxy\"%s}\n", ts, ns, defs, fields
    }'
}

prev=""
trap 'exit 0' TERM INT
while :; do
  if body=$(curl -fsS --max-time 10 "$METRICS_URL" 2>/dev/null); then
    out=$(printf '%s\n' "$body" | emf "$prev")
    prev=$(printf '%s\n' "$out" | sed -n 1p)
    line=$(printf '%s\n' "$out" | sed -n 2p)
    if [ -n "$line" ]; then printf '%s\n' "$line"; else log warn "none of $METRICS_NAMES at $METRICS_URL"; fi
  else
    log warn "could not read $METRICS_URL"
  fi
  sleep "$METRICS_INTERVAL_SECS" &
  wait $!
done
