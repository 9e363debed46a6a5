#!/usr/bin/env bash
# Install hark from this checkout as systemd services: the `hark` system user, its directories,
# a virtual environment in /opt/hark, the units, the polkit rule for the node's lifecycle
# actions, then daemon-reload and enable. Safe to run again (an upgrade): existing users,
# environment files and the venv are kept, code and units are replaced.
#
#   sudo systemd/install.sh --node            # a recording box
#   sudo systemd/install.sh --hub             # the hub
#   systemd/install.sh --hub --node --dry-run # print every step, change nothing
set -euo pipefail

PREFIX=/opt/hark
VENV=$PREFIX/.venv
UNIT_DIR=/etc/systemd/system
POLKIT_DIR=/etc/polkit-1/rules.d
CONFIG_DIR=/etc/hark
USER_NAME=hark
checkout=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

hub=0
node=0
dry_run=0

usage() {
  echo "usage: $0 [--hub] [--node] [--dry-run]   (at least one of --hub, --node)"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --hub) hub=1 ;;
    --node) node=1 ;;
    --dry-run) dry_run=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      echo "install.sh: unknown option $1" >&2
      usage >&2
      exit 2
      ;;
  esac
  shift
done
if [ "$hub" = 0 ] && [ "$node" = 0 ]; then
  echo "install.sh: say what to install: --hub, --node or both" >&2
  usage >&2
  exit 2
fi

step() { printf '== %s\n' "$*"; }
run() {
  if [ "$dry_run" = 1 ]; then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}
have_package() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }

if [ "$dry_run" = 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (or add --dry-run to see what it would do)" >&2
    exit 1
  fi
  if [ ! -d /run/systemd/system ]; then
    echo "install.sh: systemd is not running here (a container?): nothing installed" >&2
    exit 1
  fi
fi

units=()
[ "$hub" = 1 ] && units+=(hark-hub.service)
[ "$node" = 1 ] && units+=(hark-node.service)

# --- 1. system packages -------------------------------------------------------
packages=(python3-venv)
if [ "$hub" = 1 ]; then
  packages+=(mosquitto)  # the hub runs it as its embedded broker (HARK_EMBEDDED_BROKER=auto)
fi
if [ "$node" = 1 ]; then
  packages+=(libportaudio2 libsndfile1 libopus0 polkitd)  # libopus0: live listen's Opus encoder
fi
missing=()
for package in "${packages[@]}"; do
  have_package "$package" || missing+=("$package")
done
step "packages: ${packages[*]} (missing: ${missing[*]:-none})"
if [ "${#missing[@]}" -gt 0 ]; then
  run apt-get update -qq
  run apt-get install -y "${missing[@]}"
  if [[ " ${missing[*]} " == *" mosquitto "* ]]; then
    # The hub starts its own Mosquitto; the distro's service would only hold port 1883.
    step "packages: mosquitto installed for the hub: the distribution's mosquitto.service disabled"
    run systemctl disable --now mosquitto.service
  fi
fi

# --- 2. user and groups ---------------------------------------------------------
groups=()
if [ "$node" = 1 ]; then
  for group in audio dialout video; do  # ALSA; serial devices; /dev/vchiq (vcgencmd) on a Pi
    getent group "$group" >/dev/null && groups+=("$group")
  done
fi
group_list=$(IFS=,; echo "${groups[*]:-}")
step "user: system user $USER_NAME${group_list:+ in groups $group_list}"
if getent passwd "$USER_NAME" >/dev/null; then
  if [ -n "$group_list" ]; then
    run usermod --append --groups "$group_list" "$USER_NAME"
  fi
else
  run useradd --system --user-group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin \
    ${group_list:+--groups "$group_list"} "$USER_NAME"
fi

# --- 3. directories -------------------------------------------------------------
data_dirs=()
[ "$hub" = 1 ] && data_dirs+=(/var/lib/hark-hub)
[ "$node" = 1 ] && data_dirs+=(/var/lib/hark-node)
step "directories: ${data_dirs[*]} (data, owned by $USER_NAME), $CONFIG_DIR (settings), $PREFIX (code)"
run install -d -o "$USER_NAME" -g "$USER_NAME" -m 0750 "${data_dirs[@]}"
run install -d -o root -g "$USER_NAME" -m 0750 "$CONFIG_DIR"
run install -d -o root -g root -m 0755 "$PREFIX" "$PREFIX/bin"

# --- 4. environment files (written once, never overwritten: they hold credentials) ---
for role in hub node; do
  [ "$role" = hub ] && [ "$hub" = 0 ] && continue
  [ "$role" = node ] && [ "$node" = 0 ] && continue
  if [ -e "$CONFIG_DIR/$role.env" ]; then
    step "settings: $CONFIG_DIR/$role.env exists, kept"
  else
    step "settings: $CONFIG_DIR/$role.env from systemd/$role.env.example (edit it before starting)"
    run install -o root -g "$USER_NAME" -m 0640 "$checkout/systemd/$role.env.example" "$CONFIG_DIR/$role.env"
  fi
done

# --- 5. virtual environment -----------------------------------------------------------
step "venv: $VENV with hark from $checkout"
if [ ! -x "$VENV/bin/python" ]; then
  run python3 -m venv "$VENV"
fi
extras=()  # a recording box gets the node's dependencies only, never the hub's stack
[ "$hub" = 1 ] && extras+=(hub)
[ "$node" = 1 ] && extras+=(node)
run "$VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade "$checkout[$(IFS=,; echo "${extras[*]}")]"
run install -m 0644 "$checkout/README.md" "$PREFIX/README.md"

# --- 6. units, the privileged runner and the polkit rule ----------------------------------
step "units: ${units[*]} into $UNIT_DIR"
for unit in "${units[@]}"; do
  run install -m 0644 "$checkout/systemd/$unit" "$UNIT_DIR/$unit"
done
if [ "$node" = 1 ]; then
  step "lifecycle: $PREFIX/bin/hark-privileged, hark-time-step.service, polkit rule $POLKIT_DIR/49-hark-node.rules"
  run install -m 0755 "$checkout/systemd/hark-privileged" "$PREFIX/bin/hark-privileged"
  run install -m 0644 "$checkout/systemd/hark-time-step.service" "$UNIT_DIR/hark-time-step.service"
  run install -d -m 0755 "$POLKIT_DIR"
  run install -m 0644 "$checkout/systemd/polkit/49-hark-node.rules" "$POLKIT_DIR/49-hark-node.rules"
fi

# --- 7. systemd -----------------------------------------------------------------------------
step "systemd: daemon-reload, enable ${units[*]}"
run systemctl daemon-reload
run systemctl enable "${units[@]}"

step "done: edit $CONFIG_DIR/*.env, then: systemctl restart ${units[*]}"
