#!/usr/bin/env bash
# Installs Debian's Chromium and its chromedriver for the web view's browser tests
# (tests/integration/test_ui.py drives /usr/bin/chromium through Selenium; no browser
# download is reachable from CI). A no-op when both are there; prints the paths.
set -euo pipefail
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo ">> installing chromium and chromium-driver (apt)" >&2
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >&2
  $sudo apt-get install -y -qq chromium chromium-driver >&2
fi
echo /usr/bin/chromium
echo /usr/bin/chromedriver
