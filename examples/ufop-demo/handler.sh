#!/bin/sh
# ufop-demo's request handler: `nc -ll -p $PORT -e handler.sh` runs it once per connection with
# the connection on stdin/stdout. It answers the UFOP contract (vendor-docs/ufop-author.md):
#   GET /health                                 -> 200 "ok"
#   POST /handler?cmd=ufop-demo/<params>&url=U  -> 200, a few lines about the request
#   anything else                               -> 404
# POSIX sh only: it runs under busybox ash in the image and under dash in the tests.
PATH=/bin:/usr/bin:$PATH

here=$(cd "$(dirname "$0")" && pwd)
version=${DEMO_VERSION:-$(cat "$here/VERSION" 2>/dev/null || echo unknown)}
host=$(cat /proc/sys/kernel/hostname 2>/dev/null || hostname)

# respond STATUS TEXT BODY: one response, then the connection closes.
respond() {
  printf 'HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' \
    "$1" "${#3}" "$3"
  exit 0
}

# The request line: "POST /handler?cmd=... HTTP/1.1".
IFS=' ' read -r method target proto || exit 0
length=0
while IFS= read -r line; do
  line=$(printf '%s' "$line" | tr -d '\r')
  [ -z "$line" ] && break
  name=$(printf '%s' "${line%%:*}" | tr 'A-Z' 'a-z')
  if [ "$name" = content-length ]; then
    length=$(printf '%s' "${line#*:}" | tr -d ' \t')
  fi
done
case $length in '' | *[!0-9]*) respond "400 Bad Request" "" "bad Content-Length
" ;; esac

path=${target%%\?*}
query=
case $target in *\?*) query=${target#*\?} ;; esac

# param NAME: the raw value of NAME in the query string (not percent-decoded).
param() {
  printf '%s' "$query" | tr '&' '\n' | sed -n "s/^$1=//p" | head -n 1
}

if [ "$method" = GET ] && [ "$path" = /health ]; then
  respond "200 OK" "" "ok
"
fi
if [ "$method" = POST ] && [ "$path" = /handler ]; then
  cmd=$(param cmd)
  case $cmd in
    ufop-demo | ufop-demo/*) ;;
    *) respond "400 Bad Request" "" "cmd must be ufop-demo/<params>, got '$cmd'
" ;;
  esac
  params=${cmd#ufop-demo}
  params=${params#/}
  bytes=$(head -c "$length" | wc -c | tr -d ' ')
  respond "200 OK" "" "ufop-demo version $version on $host
params: $params
url: $(param url)
body bytes: $bytes
"
fi
respond "404 Not Found" "" "no such path: $method $path
"
