#!/usr/bin/env bash
# Makes sure a Docker engine runs and a PostgreSQL image is available, then
# prints the image name on stdout (everything else goes to stderr).
# With --pgbouncer it prints an image that also has PgBouncer instead.
#
# Idempotent: a running engine and an existing image are reused. It starts an
# engine only when none answers, and builds only the pgtenant/postgres:15-r2
# image; it never stops, removes or changes an engine or image it did not
# create.
#
# Image choice: $PGTENANT_POSTGRES_IMAGE if set and present (or pullable);
# otherwise postgres:17-alpine if present or pullable; otherwise the local
# image pgtenant/postgres:15-r2, built from Debian's postgresql-15 and
# pgbouncer packages. With --pgbouncer: $PGTENANT_PGBOUNCER_IMAGE if set and
# present, otherwise the local image.
#
# The local image's tag changes whenever its content does (r2: PgBouncer),
# so a machine holding an older build gets a new one.
set -euo pipefail

log() { echo "ensure-postgres: $*" >&2; }
here=$(cd "$(dirname "$0")" && pwd)
local_image=pgtenant/postgres:15-r2
default_image=postgres:17-alpine

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_packages() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v docker >/dev/null 2>&1 || missing+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt_get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt_get install -y -qq "${missing[@]}" >&2
  fi
}

# apt_get runs apt-get, waiting up to 10 minutes for another apt or dpkg
# process (unattended upgrades, a second make) to release its locks instead
# of failing at once. DPkg::Lock::Timeout covers the dpkg lock; the lists
# lock of "apt-get update" is retried here.
apt_get() {
  local deadline=$((SECONDS + 600))
  while true; do
    if as_root apt-get -o DPkg::Lock::Timeout=600 "$@" 2>/tmp/pgtenant-apt.err; then
      return 0
    fi
    if grep -q "Could not get lock" /tmp/pgtenant-apt.err && [ $SECONDS -lt $deadline ]; then
      log "apt is busy (another process holds its lock); waiting"
      sleep 5
      continue
    fi
    cat /tmp/pgtenant-apt.err >&2
    log "apt-get $* failed"
    return 1
  done
}

ensure_engine() {
  if docker info >/dev/null 2>&1; then
    return
  fi
  ensure_packages
  if docker info >/dev/null 2>&1; then
    return
  fi
  log "starting dockerd (log: /tmp/pgtenant-dockerd.log)"
  as_root bash -c 'nohup dockerd --iptables=false --storage-driver=vfs >/tmp/pgtenant-dockerd.log 2>&1 &'
  for _ in $(seq 1 120); do
    if docker info >/dev/null 2>&1; then
      return
    fi
    sleep 0.5
  done
  log "dockerd did not answer within 60 s; see /tmp/pgtenant-dockerd.log"
  exit 1
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

try_pull() {
  log "trying to pull $1"
  timeout 60 docker pull -q "$1" >/dev/null 2>&1
}

apt_mirror() {
  # The first Debian archive URI configured on this machine (never the
  # security archive), so the image is built from the same mirror apt uses.
  local uri=""
  if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
    uri=$(awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}' /etc/apt/sources.list.d/*.sources |
      grep -v security | grep -m1 -E '/debian/?$' || true)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' /etc/apt/sources.list)
  fi
  [ -n "$uri" ] || { log "no Debian mirror found in the apt sources"; exit 1; }
  echo "$uri"
}

build_local_image() {
  ensure_packages
  local suite mirror rootfs
  suite=$(. /etc/os-release && echo "${VERSION_CODENAME:?}")
  mirror=$(apt_mirror)
  rootfs=$(mktemp -d /tmp/pgtenant-rootfs.XXXXXX)
  chmod 0755 "$rootfs" # mktemp makes it 0700; it becomes the image's /
  trap 'as_root rm -rf "$rootfs"' RETURN
  log "building $local_image from $suite via debootstrap (2 to 8 minutes, depending on the mirror)"
  as_root debootstrap --variant=minbase --include=postgresql-15,pgbouncer "$suite" "$rootfs" "$mirror" >/tmp/pgtenant-debootstrap.log 2>&1 &
  local pid=$! started=$SECONDS
  # Progress every 20 s: the long step must not look hung.
  while kill -0 "$pid" 2>/dev/null; do
    for _ in $(seq 1 40); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "debootstrap: $((SECONDS - started)) s, $(grep -c '^I: \(Retrieving\|Validating\|Unpacking\|Configuring\)' /tmp/pgtenant-debootstrap.log || true) steps done; last: $(tail -n 1 /tmp/pgtenant-debootstrap.log | cut -c 1-60)"
    fi
  done
  wait "$pid" || { log "debootstrap failed; see /tmp/pgtenant-debootstrap.log"; exit 1; }
  log "debootstrap done in $((SECONDS - started)) s"
  as_root rm -rf "$rootfs"/usr/share/doc "$rootfs"/usr/share/man "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/lib/postgresql/15 "$rootfs"/etc/postgresql/15
  as_root install -m 0755 "$here/postgres-image/docker-entrypoint.sh" "$rootfs/usr/local/bin/docker-entrypoint.sh"
  as_root mkdir -p "$rootfs/docker-entrypoint-initdb.d"
  as_root tar -C "$rootfs" -c . | docker import \
    -c 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
    -c 'CMD ["postgres"]' -c 'EXPOSE 5432' \
    -c 'ENV PGDATA=/var/lib/postgresql/data' - "$local_image" >/dev/null
}

ensure_engine

if [ "${1:-}" = --pgbouncer ]; then
  if [ -n "${PGTENANT_PGBOUNCER_IMAGE:-}" ] && have_image "$PGTENANT_PGBOUNCER_IMAGE"; then
    echo "$PGTENANT_PGBOUNCER_IMAGE"
    exit 0
  fi
  have_image "$local_image" || build_local_image
  echo "$local_image"
  exit 0
fi

if [ -n "${PGTENANT_POSTGRES_IMAGE:-}" ]; then
  if have_image "$PGTENANT_POSTGRES_IMAGE" || try_pull "$PGTENANT_POSTGRES_IMAGE"; then
    echo "$PGTENANT_POSTGRES_IMAGE"
    exit 0
  fi
  if [ "$PGTENANT_POSTGRES_IMAGE" != "$local_image" ]; then
    log "image $PGTENANT_POSTGRES_IMAGE is neither present nor pullable"
    exit 1
  fi
elif have_image "$default_image" || try_pull "$default_image"; then
  echo "$default_image"
  exit 0
fi

have_image "$local_image" || build_local_image
echo "$local_image"
