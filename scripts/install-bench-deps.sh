#!/usr/bin/env bash
# Debian packages the benchmarks need: nginx with the echo module (the shared nginx mock) and
# wrk. A temporary policy-rc.d keeps the nginx package from starting a system nginx on :80.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
made_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
fi
trap '[ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends nginx libnginx-mod-http-echo wrk curl >/dev/null
