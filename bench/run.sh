#!/usr/bin/env bash
# certgate's side-by-side benchmark (docs/performance.md): certgate, nginx and HAProxy do the
# same mTLS job in front of one nginx upstream (two of its ports for the balanced phase), on
# loopback only; every phase runs against every target, interleaved over several rounds; one
# Markdown table of medians is printed at the end (and one of certgate against another certgate
# build with --baseline).
#
#   bench/run.sh [--rounds N] [--duration SECONDS] [--warmup SECONDS] [--idle-connections N]
#                [--phases h1,h2,https,balanced,full,resumed,idle] [--nice N] [--results FILE]
#                [--no-install] [--certgate BINARY] [--baseline BINARY] [--one-session]
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3
duration=5
warmup=1
idle_connections=10000
results=""
install=1
phases=h1,h2,https,balanced,full,resumed,idle
nice=""
certgate_binary=""
baseline_binary=""
detach=(setsid)
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --idle-connections) idle_connections="$2"; shift 2 ;;
    --results) results="$2"; shift 2 ;;
    --phases) phases="$2"; shift 2 ;;
    --nice) nice="$2"; shift 2 ;;
    --no-install) install=0; shift ;;
    --certgate) certgate_binary="$2"; shift 2 ;;
    --baseline) baseline_binary="$2"; shift 2 ;;
    --one-session) detach=(); shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 64 ;;
  esac
done

log() { echo "bench: $*" >&2; }
die() { echo "bench: $*" >&2; exit 1; }

for phase in ${phases//,/ }; do
  case "$phase" in
    h1|h2|https|balanced|full|resumed|idle) ;;
    *) echo "unknown phase: $phase (h1, h2, https, balanced, full, resumed, idle)" >&2; exit 64 ;;
  esac
done
has_phase() { [[ ",$phases," == *",$1,"* ]]; }

# --- what the benchmark needs -----------------------------------------------------------------
need=()
command -v nginx >/dev/null || need+=(nginx)
command -v haproxy >/dev/null || need+=(haproxy)
command -v curl >/dev/null || need+=(curl)
command -v ps >/dev/null || need+=(procps)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$install" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    die "missing ${need[*]}: apt-get install ${need[*]}"
  fi
fi

# Every idle connection is a file descriptor in the load generator and in the proxy.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fd_limit=$(ulimit -n)
if [ "$fd_limit" != unlimited ] && [ "$fd_limit" -lt $((idle_connections + 1000)) ]; then
  die "--idle-connections $idle_connections needs $((idle_connections + 1000)) open files; the limit is $fd_limit"
fi

target_dir=${CARGO_TARGET_DIR:-target}
if [ -n "$certgate_binary" ]; then
  # A build made earlier, e.g. to compare two builds back to back.
  [ -x "$certgate_binary" ] || die "--certgate $certgate_binary is not an executable file"
  certgate=$(realpath "$certgate_binary")
  log "building the load generator (release); certgate is $certgate"
  cargo build --release --locked --example loadgen >&2
else
  log "building certgate and the load generator (release)"
  cargo build --release --locked --bin certgate --example loadgen >&2
  certgate=$(realpath "$target_dir/release/certgate")
fi
loadgen=$(realpath "$target_dir/release/examples/loadgen")
if [ -n "$baseline_binary" ]; then
  # Another certgate build, typically an older commit's, measured beside this one.
  [ -x "$baseline_binary" ] || die "--baseline $baseline_binary is not an executable file"
  baseline=$(realpath "$baseline_binary")
  log "baseline is $baseline"
fi

# Everything started from here on (proxies, upstream, load generator) inherits the priority.
if [ -n "$nice" ]; then
  renice -n "$nice" -p $$ >/dev/null || die "cannot renice to $nice (negative values need root)"
fi

# --- processes, and their clean-up ------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/certgate-bench.XXXXXX")
chmod 755 "$work" # nginx workers run as nobody
started=()        # every process this script started
declare -A pid    # target -> main process

# Whether a process this script started still runs (an exited child stays a zombie until waited).
running() {
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ $state != Z* ]]
}

# Stops one process this script started (TERM, then KILL after 5 s, with nginx's workers) and
# forgets it, so a later clean-up never signals a reused process id.
stop_pid() {
  local p=$1 children kept=() q
  children=$(ps -o pid= --ppid "$p" 2>/dev/null || true)
  if kill -TERM "$p" 2>/dev/null; then
    for _ in $(seq 50); do
      running "$p" || break
      sleep 0.1
    done
    if running "$p"; then
      # shellcheck disable=SC2086 # one process id a word
      kill -KILL "$p" $children 2>/dev/null || true
    fi
    wait "$p" 2>/dev/null || true
  fi
  for q in "${started[@]}"; do [ "$q" = "$p" ] || kept+=("$q"); done
  started=("${kept[@]}")
}

cleanup() {
  local i
  # Newest first: the proxies before the upstream, certgate-log before its log's reader.
  for ((i = ${#started[@]} - 1; i >= 0; i--)); do stop_pid "${started[i]}"; done
  exec 3>&-
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts "$@" in the background and remembers it under the target name $1. Each process gets a
# session of its own, as separate services do: with the kernel's scheduling autogroups
# (/proc/sys/kernel/sched_autogroup_enabled, on by default) a session is a scheduling group, and
# in one session the threads of the proxy, the load generator and the upstream would compete one
# by one, as no deployment of separate services does (--one-session keeps them all in this
# script's session, to compare).
# The script runs without job control, so a background child is not a process-group leader and
# setsid(1) makes the new session without forking: $! stays the process measured.
spawn() {
  local name=$1
  shift
  "${detach[@]}" "$@" &
  pid[$name]=$!
  started+=("$!")
}

# The processes whose CPU time and memory count for a target: nginx's master and workers.
pids_of() {
  local main=${pid[$1]}
  { echo "$main"; ps -o pid= --ppid "$main"; } | tr -d ' ' | grep -v '^$' | paste -sd, -
}

read -r upstream_port upstream_b_port upstream_tls_port nginx_port haproxy_port certgate_port certgate_log_port baseline_port \
  <<<"$("$loadgen" ports 8)"
declare -A port=([nginx]=$nginx_port [haproxy]=$haproxy_port [certgate]=$certgate_port [certgate-log]=$certgate_log_port [baseline]=$baseline_port)
# The host name (SNI and Host) each proxy routes to the TLS upstream by, for the https phase. The
# bench server certificate lists it by name: OpenSSL and webpki refuse its *.localhost wildcard
# (a wildcard directly above a one-label name).
tls_name=require.localhost
# The host name of each proxy's route to two upstream endpoints, for the balanced phase: the
# upstream's plain HTTP server ($upstream_port) and a second one like it ($upstream_b_port).
balanced_name=balanced.localhost

# --- PKI: EC P-256 CA, server and client ------------------------------------------------------
# The server certificate lists the balanced host by name too (--host), for the same reason.
"$certgate" pki init "$work/pki" --host "$balanced_name" >/dev/null
pki="$work/pki"
cat "$pki/server.pem" "$pki/server.key" >"$pki/haproxy.pem"
# HAProxy's client certificate to the TLS upstream: certificate and key in one file.
cat "$pki/client.pem" "$pki/client.key" >"$pki/client-with-key.pem"

# --- the upstream: nginx answering a small fixed body, in plain HTTP and over mutual TLS ----------
nginx_prelude() { # $1 = prefix folder
  mkdir -p "$1/tmp"
  cat <<EOF
pid $1/nginx.pid;
error_log $1/error.log warn;
EOF
}
nginx_temp_paths() {
  for kind in client_body proxy fastcgi uwsgi scgi; do echo "  ${kind}_temp_path $1/tmp/$kind;"; done
}
# The locations of every upstream server.
upstream_locations() {
  cat <<EOF
    default_type text/plain;
    # For the checks that every proxy adds the header and reaches the server it should; the
    # benchmark requests /.
    location = /xfcc { return 200 "\$http_x_forwarded_client_cert\n"; }
    location = /via { return 200 "\$scheme \$ssl_protocol\n"; }
    location = /port { return 200 "\$server_port\n"; }
    location / { return 200 "hello from the upstream\n"; }
EOF
}

mkdir -p "$work/upstream"
{
  nginx_prelude "$work/upstream"
  cat <<EOF
worker_processes 1;
events { worker_connections 4096; }
http {
  access_log off;
$(nginx_temp_paths "$work/upstream")
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  server {
    listen 127.0.0.1:$upstream_port;
$(upstream_locations)
  }
  # For the balanced phase: a second endpoint, the same on another port.
  server {
    listen 127.0.0.1:$upstream_b_port;
$(upstream_locations)
  }
  # For the https phase: the same over TLS with the bench server certificate, and a client
  # certificate from the bench CA required.
  server {
    listen 127.0.0.1:$upstream_tls_port ssl;
    ssl_certificate $pki/server.pem;
    ssl_certificate_key $pki/server.key;
    ssl_client_certificate $pki/ca.pem;
    ssl_verify_client on;
    ssl_protocols TLSv1.2 TLSv1.3;
$(upstream_locations)
  }
}
EOF
} >"$work/upstream/nginx.conf"

# --- nginx doing certgate's job -------------------------------------------------------------------
worker_connections=$((idle_connections + 2000))
# The mTLS settings of both of nginx's servers.
nginx_mtls() {
  cat <<EOF
    listen 127.0.0.1:$nginx_port ssl http2;
    ssl_certificate $pki/server.pem;
    ssl_certificate_key $pki/server.key;
    ssl_client_certificate $pki/ca.pem;
    ssl_verify_client on;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
EOF
}
# The headers both of nginx's routes send to the upstream.
nginx_proxy_headers() {
  cat <<EOF
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$http_host;
      # nginx's only built-in certificate hash is SHA-1.
      proxy_set_header X-Forwarded-Client-Cert "Hash=\$ssl_client_fingerprint";
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Host \$http_host;
      proxy_set_header X-Forwarded-Proto https;
EOF
}
mkdir -p "$work/nginx"
{
  nginx_prelude "$work/nginx"
  cat <<EOF
worker_processes auto;
events { worker_connections $worker_connections; }
http {
  access_log off;
$(nginx_temp_paths "$work/nginx")
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  upstream app {
    server 127.0.0.1:$upstream_port;
    keepalive 64;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
  }
  upstream app_tls {
    server 127.0.0.1:$upstream_tls_port;
    keepalive 64;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
  }
  upstream balanced {
    least_conn;
    server 127.0.0.1:$upstream_port;
    server 127.0.0.1:$upstream_b_port;
    keepalive 64;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
  }
  server {
$(nginx_mtls)
    location / {
      proxy_pass http://app;
$(nginx_proxy_headers)
    }
  }
  # The https route: the upstream's TLS server, verified against the bench CA as localhost, with
  # the bench client certificate.
  server {
$(nginx_mtls)
    server_name $tls_name;
    location / {
      proxy_pass https://app_tls;
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate $pki/ca.pem;
      proxy_ssl_name localhost;
      proxy_ssl_server_name on;
      proxy_ssl_certificate $pki/client.pem;
      proxy_ssl_certificate_key $pki/client.key;
      proxy_ssl_session_reuse on;
      # nginx 1.22 offers TLS 1.0 to 1.2 to an upstream by default; certgate and HAProxy offer
      # 1.2 and 1.3.
      proxy_ssl_protocols TLSv1.2 TLSv1.3;
$(nginx_proxy_headers)
    }
  }
  # The balanced route: the two endpoints of the upstream, least connections first.
  server {
$(nginx_mtls)
    server_name $balanced_name;
    location / {
      proxy_pass http://balanced;
$(nginx_proxy_headers)
    }
  }
}
EOF
} >"$work/nginx/nginx.conf"

# --- HAProxy doing certgate's job -----------------------------------------------------------------
maxconn=$((idle_connections + 1000))
cat >"$work/haproxy.cfg" <<EOF
global
  maxconn $maxconn
  nbthread $(nproc)
  # Idle client connections need no server side, so fewer descriptors than HAProxy reckons do.
  no strict-limits
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-request 30s
  timeout http-keep-alive 300s
frontend mtls
  bind 127.0.0.1:$haproxy_port ssl crt $pki/haproxy.pem ca-file $pki/ca.pem verify required alpn h2,http/1.1
  maxconn $maxconn
  http-request set-header X-Forwarded-Client-Cert "Hash=%[ssl_c_der,sha2(256),hex,lower]"
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header X-Forwarded-Proto https
  option forwardfor
  use_backend app_tls if { ssl_fc_sni -i $tls_name }
  use_backend balanced if { ssl_fc_sni -i $balanced_name }
  default_backend app
backend app
  http-reuse always
  server app 127.0.0.1:$upstream_port
# The https route: the upstream's TLS server, verified against the bench CA as localhost (the SNI
# sent is the name checked), with the bench client certificate.
backend app_tls
  http-reuse always
  server app 127.0.0.1:$upstream_tls_port ssl verify required ca-file $pki/ca.pem crt $pki/client-with-key.pem sni str(localhost)
# The balanced route: the two endpoints of the upstream, least connections first.
backend balanced
  balance leastconn
  http-reuse always
  server a 127.0.0.1:$upstream_port
  server b 127.0.0.1:$upstream_b_port
EOF

# --- certgate: the require app and its https and balanced twins, access log off (and the same ---
# --- with it on) ----------------------------------------------------------------------------------
# The app of an optional route: https, the app the https phase reaches over TLS; balanced, the
# app the balanced phase reaches at two endpoints, its requests split evenly between two
# revisions, the upstream's two plain HTTP servers.
certgate_app() { # $1 = https or balanced
  case "$1" in
    https)
      cat <<EOF
    {
      "name": "bench-tls",
      "hosts": ["$tls_name"],
      "upstream": "https://127.0.0.1:$upstream_tls_port",
      "upstreamTls": {
        "caFiles": ["$pki/ca.pem"],
        "serverName": "localhost",
        "certFile": "$pki/client.pem",
        "keyFile": "$pki/client.key"
      },
      "serverCertificate": { "certFile": "$pki/server.pem", "keyFile": "$pki/server.key" },
      "ingress": { "clientCertificateMode": "require" },
      "clientAuth": { "trustedCaFiles": ["$pki/ca.pem"] },
      "forwardClientCert": { "fields": ["Hash"] }
    }
EOF
      ;;
    balanced)
      cat <<EOF
    {
      "name": "bench-balanced",
      "hosts": ["$balanced_name"],
      "upstream": "http://127.0.0.1:$upstream_port",
      "revisions": { "b": "http://127.0.0.1:$upstream_b_port" },
      "serverCertificate": { "certFile": "$pki/server.pem", "keyFile": "$pki/server.key" },
      "ingress": {
        "clientCertificateMode": "require",
        "traffic": [
          { "latestRevision": true, "weight": 50 },
          { "revisionName": "b", "weight": 50 }
        ]
      },
      "clientAuth": { "trustedCaFiles": ["$pki/ca.pem"] },
      "forwardClientCert": { "fields": ["Hash"] }
    }
EOF
      ;;
  esac
}

certgate_config() { # $1 = port, $2 = 1 for "accessLog": false, then the optional apps (https, balanced)
  local listen=$1 access_log="" app
  if [ "$2" = 1 ]; then access_log=', "accessLog": false'; fi
  shift 2
  cat <<EOF
{
  "listen": "127.0.0.1:$listen",
  "apps": [
    {
      "name": "bench",
      "upstream": "http://127.0.0.1:$upstream_port",
      "serverCertificate": { "certFile": "$pki/server.pem", "keyFile": "$pki/server.key" },
      "ingress": { "clientCertificateMode": "require" },
      "clientAuth": { "trustedCaFiles": ["$pki/ca.pem"] },
      "forwardClientCert": { "fields": ["Hash"] }
    }
EOF
  for app in "$@"; do
    echo "    ,"
    certgate_app "$app"
  done
  cat <<EOF
  ],
  "timeouts": { "idleMs": 300000, "shutdownGraceMs": 2000 },
  "limits": { "maxConnections": $maxconn }$access_log
}
EOF
}

declare -A binary=([certgate]=$certgate [certgate-log]=$certgate [baseline]=${baseline:-})
declare -A quiet   # certgate builds whose access log goes off with RUST_LOG=warn
declare -A skip    # "target:phase" -> 1 for a phase the target cannot do
declare -A apps_of # certgate build -> the optional apps its config has, space-separated

# Whether certgate build $1's `check` accepts the config in $work/$1.json (its output in
# $work/$1.check).
certgate_accepts() { "${binary[$1]}" check --config "$work/$1.json" >"$work/$1.check" 2>&1; }

# Writes the config of certgate build $1 with as much of the benchmark's config as its `check`
# accepts. A build that refuses "accessLog" turns its access log off with RUST_LOG=warn. A build
# that refuses an optional app (the https app before "upstreamTls", the balanced app before
# "revisions") runs without it and sits out its phase. Without a phase no build gets its app, so
# that two builds compare with the same config.
configure_certgate() { # $1 = target
  local t=$1 access_log app accepted=() refused
  for access_log in 1 0; do
    certgate_config "${port[$t]}" "$access_log" >"$work/$t.json"
    certgate_accepts "$t" && break
    if [ "$access_log" = 0 ]; then
      cat "$work/$t.check" >&2
      die "$t: certgate check refuses the benchmark's config"
    fi
  done
  if [ "$access_log" = 1 ]; then
    log "$t: access log off with \"accessLog\": false"
  else
    log "$t: this version has no \"accessLog\" key; access log off with RUST_LOG=warn"
    quiet[$t]=1
  fi
  for app in https balanced; do
    has_phase "$app" || continue
    certgate_config "${port[$t]}" "$access_log" "$app" >"$work/$t.json"
    if certgate_accepts "$t"; then
      accepted+=("$app")
    else
      skip[$t:$app]=1
      refused=$(grep -m1 . "$work/$t.check")
      log "$t: this version refuses the $app app (${refused%%, expected*}); it sits out the $app phase, and its config leaves that app out"
    fi
  done
  apps_of[$t]="${accepted[*]}"
  certgate_config "${port[$t]}" "$access_log" "${accepted[@]}" >"$work/$t.json"
  if ! certgate_accepts "$t"; then
    cat "$work/$t.check" >&2
    die "$t: certgate check refuses the benchmark's config with the apps it accepts one by one"
  fi
}
configure_certgate certgate
[ -z "${baseline:-}" ] || configure_certgate baseline
read -ra log_apps <<<"${apps_of[certgate]}"
certgate_config "$certgate_log_port" 0 "${log_apps[@]}" >"$work/certgate-log.json"
"$certgate" check --config "$work/certgate-log.json" >/dev/null

# The access log goes to a pipe, as under a process supervisor or a container runtime. The
# pipe has a folder of its own: certgate watches its config's folder for changes, and a
# supervisor's pipe is not in it.
mkdir "$work/log"
mkfifo "$work/log/access-log"
cat "$work/log/access-log" >/dev/null &
started+=("$!")
exec 3<>"$work/log/access-log" # keeps the pipe open while certgate-log restarts

start() {
  local quiet_env=()
  case "$1" in
    upstream) spawn upstream nginx -e "$work/upstream/error.log" -p "$work/upstream" -c "$work/upstream/nginx.conf" -g 'daemon off;' ;;
    nginx) spawn nginx nginx -e "$work/nginx/error.log" -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' ;;
    haproxy) spawn haproxy haproxy -db -f "$work/haproxy.cfg" 2>>"$work/haproxy.log" ;;
    certgate | baseline)
      if [ -n "${quiet[$1]:-}" ]; then quiet_env=(RUST_LOG=warn); fi
      spawn "$1" env "${quiet_env[@]}" "${binary[$1]}" run --config "$work/$1.json" 2>>"$work/$1.log"
      ;;
    certgate-log) spawn certgate-log env -u RUST_LOG "$certgate" run --config "$work/certgate-log.json" 2>"$work/log/access-log" ;;
  esac
}

restart() {
  stop_pid "${pid[$1]}"
  start "$1"
  wait_ready "$1"
}

curl_target() { # $1 = target, $2 = host name, $3 = path, then curl arguments
  local p=${port[$1]} name=$2 path=$3
  shift 3
  curl -sS --max-time 5 --resolve "$name:$p:127.0.0.1" --cacert "$pki/ca.pem" "$@" "https://$name:$p$path"
}

wait_ready() {
  for _ in $(seq 100); do
    if [ "$1" = upstream ]; then
      curl -sf --max-time 1 "http://127.0.0.1:$upstream_port/" >/dev/null 2>&1 && return 0
    else
      curl_target "$1" localhost /xfcc --cert "$pki/client.pem" --key "$pki/client.key" -f >/dev/null 2>&1 && return 0
    fi
    kill -0 "${pid[$1]}" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 20 "$work"/*.log "$work"/*/error.log >&2 2>/dev/null || true
  die "$1 did not start"
}

# Whether target $1's route for host name $2 does the job: the upstream's server for $3 (http or
# https) sees the certificate hash, and no certificate, no entry. Sets $xfcc to what the upstream
# saw and $via to the scheme and TLS version it was reached by, or $problem to what went wrong.
route_works() { # $1 = target, $2 = host name, $3 = scheme of the upstream server
  local with_cert=(--cert "$pki/client.pem" --key "$pki/client.key" -f)
  if ! xfcc=$(curl_target "$1" "$2" /xfcc "${with_cert[@]}" 2>&1); then
    problem="failed a request with a client certificate: $xfcc"
    return 1
  fi
  case "$xfcc" in Hash=*) ;; *) problem="did not forward X-Forwarded-Client-Cert (upstream saw: '$xfcc')"; return 1 ;; esac
  via=$(curl_target "$1" "$2" /via "${with_cert[@]}" 2>&1) || true
  if [ "${via%% *}" != "$3" ]; then
    problem="did not reach the upstream's $3 server (upstream saw: '$via')"
    return 1
  fi
  if curl_target "$1" "$2" /xfcc -f >/dev/null 2>&1; then
    problem="served a client without a certificate"
    return 1
  fi
}

all_targets=(certgate certgate-log nginx haproxy)
[ -z "${baseline:-}" ] || all_targets=(certgate baseline certgate-log nginx haproxy)
start upstream
wait_ready upstream
for t in "${all_targets[@]}"; do start "$t"; done
for t in "${all_targets[@]}"; do wait_ready "$t"; done

# Every target does the job, and every target of the https phase does it over TLS to the app as
# well; a baseline that cannot sits that phase out.
for t in "${all_targets[@]}"; do
  route_works "$t" localhost http || die "$t $problem"
  log "$t forwards ${xfcc%%$'\n'*} and refuses clients without a certificate"
done
if has_phase https; then
  for t in "${all_targets[@]}"; do
    [ "$t" = certgate-log ] && continue
    [ -z "${skip[$t:https]:-}" ] || continue
    if route_works "$t" "$tls_name" https; then
      log "$t ($tls_name) forwards ${xfcc%%$'\n'*} over mutual TLS (${via#* }) to the app and refuses clients without a certificate"
    elif [ "$t" = baseline ]; then
      skip[$t:https]=1
      log "$t ($tls_name) $problem; it sits out the https phase"
    else
      die "$t ($tls_name) $problem"
    fi
  done
fi
# Whether target $1's balanced route spreads 20 requests on one keep-alive connection over both
# of the upstream's endpoints. Sets $spread to how many each answered, or $problem.
endpoints_spread() { # $1 = target
  local p=${port[$1]} urls=() answers a b
  for _ in $(seq 20); do urls+=("https://$balanced_name:$p/port"); done
  if ! answers=$(curl -sS -f --max-time 5 --resolve "$balanced_name:$p:127.0.0.1" --cacert "$pki/ca.pem" \
    --cert "$pki/client.pem" --key "$pki/client.key" "${urls[@]}" 2>&1); then
    problem="failed a request to its endpoints: $answers"
    return 1
  fi
  a=$(grep -cx "$upstream_port" <<<"$answers" || true)
  b=$(grep -cx "$upstream_b_port" <<<"$answers" || true)
  spread="$a and $b of 20 requests"
  if [ "$a" = 0 ] || [ "$b" = 0 ]; then
    problem="did not reach both endpoints: they answered $spread"
    return 1
  fi
}
# Every target of the balanced phase reaches both endpoints through its balanced route; a
# baseline that cannot sits that phase out.
if has_phase balanced; then
  for t in "${all_targets[@]}"; do
    [ "$t" = certgate-log ] && continue
    [ -z "${skip[$t:balanced]:-}" ] || continue
    if route_works "$t" "$balanced_name" http && endpoints_spread "$t"; then
      log "$t ($balanced_name) forwards ${xfcc%%$'\n'*} to both endpoints (ports $upstream_port and $upstream_b_port: $spread, one connection) and refuses clients without a certificate"
    elif [ "$t" = baseline ]; then
      skip[$t:balanced]=1
      log "$t ($balanced_name) $problem; it sits out the balanced phase"
    else
      die "$t ($balanced_name) $problem"
    fi
  done
fi
# Whether target $2 runs phase $1: it was asked for, and the target can do it.
runs() { has_phase "$1" && [ -z "${skip[$2:$1]:-}" ]; }

# --- the rounds -----------------------------------------------------------------------------------
results=${results:-"$work/results.jsonl"}
: >"$results"
clk_tck=$(getconf CLK_TCK)

measure() { # $1 = target, $2 = round, then the loadgen subcommand and its arguments
  local t=$1 round=$2
  shift 2
  "${detach[@]}" timeout 300 "$loadgen" "$1" --name "$t" --round "$round" --addr "127.0.0.1:${port[$t]}" \
    --ca "$pki/ca.pem" --cert "$pki/client.pem" --key "$pki/client.key" \
    --pids "$(pids_of "$t")" --upstream-pids "$(pids_of upstream)" --clk-tck "$clk_tck" "${@:2}" >>"$results" ||
    log "$t: loadgen $1 failed (round $round)"
}

# How busy the machine is otherwise, for the notes under the table.
machine() { echo "{\"target\":\"machine\",\"phase\":\"$1\",\"loadavg\":$(cut -d' ' -f1 /proc/loadavg),\"cores\":$(nproc)}" >>"$results"; }

window=(--warmup "$warmup" --duration "$duration")
machine start
for round in $(seq "$rounds"); do
  # Each round starts with another target, so none always runs first or last.
  shift_by=$(((round - 1) % ${#all_targets[@]}))
  order=("${all_targets[@]:shift_by}" "${all_targets[@]:0:shift_by}")
  log "round $round of $rounds: ${order[*]}"
  for t in "${order[@]}"; do
    has_phase h1 && measure "$t" "$round" h1 "${window[@]}" --connections 50
  done
  for t in "${order[@]}"; do
    has_phase h2 && measure "$t" "$round" h2 "${window[@]}" --connections 10 --streams 5
  done
  for t in "${order[@]}"; do
    [ "$t" = certgate-log ] && continue
    runs https "$t" &&
      measure "$t" "$round" h1 "${window[@]}" --connections 50 --phase https --server-name "$tls_name"
  done
  for t in "${order[@]}"; do
    [ "$t" = certgate-log ] && continue
    runs balanced "$t" &&
      measure "$t" "$round" h1 "${window[@]}" --connections 50 --phase balanced --server-name "$balanced_name"
  done
  for t in "${order[@]}"; do
    [ "$t" = certgate-log ] && continue
    has_phase full && measure "$t" "$round" handshakes "${window[@]}" --loops 16
    has_phase resumed && measure "$t" "$round" handshakes "${window[@]}" --loops 16 --resume
  done
  # Memory from a fresh process, so earlier rounds' peaks do not count as idle.
  for t in "${order[@]}"; do
    [ "$t" = certgate-log ] && continue
    has_phase idle || continue
    restart "$t"
    measure "$t" "$round" idle --connections "$idle_connections"
  done
done

machine end
log "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
log "versions: $("$certgate" --version), $(nginx -v 2>&1 | sed 's/.*: //'), $(haproxy -v | head -n1 | cut -d' ' -f1-3)"
[ -z "${baseline:-}" ] || log "baseline: $("$baseline" --version)"
"$loadgen" report "$results"
