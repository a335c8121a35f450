#!/usr/bin/env bash
# Debian packages the end-to-end tests need, installed when missing and this user can (root with
# apt-get): PostgreSQL (the team set-up's throw-away cluster) and chromium (the MLflow UI's browser
# test, driven by Playwright: no browser download). Elsewhere it says what to install.
need=()
command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null) || echo "could not install ${need[*]}" >&2
else
  echo "the end-to-end tests need Debian's ${need[*]}: sudo apt-get install ${need[*]}" >&2
fi
exit 0
