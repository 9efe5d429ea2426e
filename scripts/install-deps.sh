#!/bin/sh
# install-deps.sh: installs the Debian 12 packages quan builds and tests with.
set -eu
pkgs="build-essential pkg-config liblua5.4-dev lua-cjson-dev libcurl4-openssl-dev
libssl-dev libmicrohttpd-dev libsqlite3-dev libedit-dev lua-busted openssl
ca-certificates curl tmux perl python3 python3-cryptography procps valgrind strace
chromium fonts-wqy-microhei"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq $missing
