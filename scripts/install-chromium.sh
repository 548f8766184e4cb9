#!/usr/bin/env bash
# Browser tests drive Debian's chromium through Playwright (Playwright cannot download its own
# browser here). Install it once when it is missing.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
sudo_cmd=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo_cmd="sudo"
    else
        echo "Chromium is missing and this user cannot install it: run 'apt-get install -y chromium' as root." >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo_cmd apt-get update -qq
$sudo_cmd apt-get install -y -qq chromium >/dev/null
