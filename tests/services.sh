#!/usr/bin/env bash
# Make sure the services the tests use are there: Mosquitto (the binary; tests start
# their own brokers, and the system broker on 1883 is started when installed) and
# PostgreSQL on 127.0.0.1:5432. Installs Debian packages when missing and running as root.
set -euo pipefail

is_root() { [ "$(id -u)" = 0 ]; }
apt_updated=0
apt_install() {
  if ! is_root; then
    echo "tests/services.sh: $* missing and not root: install it (apt-get install $*) and run again" >&2
    exit 1
  fi
  if [ "$apt_updated" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq -o DPkg::Lock::Timeout=300
    apt_updated=1
  fi
  echo "tests/services.sh: installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 "$@" >/dev/null
}

# --- Mosquitto ---------------------------------------------------------------
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  apt_install mosquitto mosquitto-clients
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then
  echo "tests/services.sh: starting the system Mosquitto on 127.0.0.1:1883"
  if is_root && [ -f /etc/mosquitto/mosquitto.conf ]; then
    mosquitto -d -c /etc/mosquitto/mosquitto.conf || echo "tests/services.sh: could not start the system Mosquitto (tests start their own)" >&2
  fi
fi

# --- Node.js (the tests run a real OpenID provider, panva/node-oidc-provider) ---
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt_install nodejs npm
fi

# --- systemd-analyze verifies the units in systemd/ (tests/systemd); node.js evaluates the polkit rule ---
if ! command -v systemd-analyze >/dev/null 2>&1; then
  apt_install systemd
fi

# --- OpenSSH's sshd (the SFTP upload provider's tests start their own on loopback) ---
if [ ! -x /usr/sbin/sshd ]; then
  apt_install openssh-server
fi

# --- Audio (PortAudio for sounddevice/pyaudio, PulseAudio with a null sink, an ALSA file PCM) ---
# libportaudio2 is what sounddevice loads; portaudio19-dev builds pyaudio; the tests start their
# own PulseAudio and capture from the ALSA PCM `harkfile`, whose samples come from the raw
# S16_LE file named by HARK_ALSA_INFILE (see tests/audio/conftest.py). libopus0 is the Opus
# encoder a node's live listen loads (opuslib-next).
audio_missing=()
for pkg in libportaudio2 libopus0 portaudio19-dev sox pulseaudio pulseaudio-utils libasound2-plugins espeak-ng; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || audio_missing+=("$pkg")
done
if [ "${#audio_missing[@]}" -gt 0 ]; then
  apt_install "${audio_missing[@]}"
fi
asound_conf=/etc/asound.conf
hark_pcm=$(cat <<'ASOUND'
# hark-test-pcm begin (written by hark tests/services.sh; replaced when it changes)
# Capture from `harkfile` gives the raw S16_LE samples of the file named by HARK_ALSA_INFILE,
# bit-exact and as fast as they are read (not paced), in whatever format the client asks for
# (the plug converts; S16 to float is a division by 32768). Playback into it is discarded.
pcm.harkfile_raw {
    type file
    slave.pcm "null"
    file "/dev/null"
    infile {
        @func getenv
        vars [ HARK_ALSA_INFILE ]
        default "/dev/zero"
    }
    format "raw"
}
pcm.harkfile {
    type plug
    slave {
        pcm "harkfile_raw"
        format S16_LE
    }
}
# hark-test-pcm end
ASOUND
)
current_pcm=$(sed -n '/^# hark-test-pcm begin/,/^# hark-test-pcm end/p' "$asound_conf" 2>/dev/null || true)
if [ "$current_pcm" != "$hark_pcm" ]; then
  if ! is_root; then
    echo "tests/services.sh: $asound_conf lacks the current hark test PCM and not root: run this script as root once" >&2
    exit 1
  fi
  echo "tests/services.sh: writing the hark test PCM 'harkfile' into $asound_conf"
  if [ -f "$asound_conf" ]; then
    sed -i '/^# hark-test-pcm begin/,/^# hark-test-pcm end/d' "$asound_conf"
  fi
  printf '%s\n' "$hark_pcm" >>"$asound_conf"
fi

# --- Chromium (tests/console drive Debian's headless chromium through Playwright; no browser download) ---
if [ ! -x /usr/bin/chromium ]; then
  apt_install chromium
fi

# --- HAProxy (tests/e2e/test_multi_hub.py puts two hubs behind Debian's HAProxy on loopback) ---
if ! command -v haproxy >/dev/null 2>&1 && [ ! -x /usr/sbin/haproxy ]; then
  apt_install haproxy
fi

# --- PostgreSQL --------------------------------------------------------------
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if ! command -v pg_isready >/dev/null 2>&1 || ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  if ! pg_up 2>/dev/null; then
    apt_install postgresql
    installed_pg=1
  fi
fi
if ! pg_up; then
  if is_root && command -v pg_ctlcluster >/dev/null 2>&1; then
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    echo "tests/services.sh: starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  fi
fi
for _ in $(seq 1 30); do pg_up && break; sleep 1; done
if ! pg_up; then
  echo "tests/services.sh: PostgreSQL is not answering on 127.0.0.1:5432; start it (or set HARK_TEST_POSTGRES_URL)" >&2
  exit 1
fi
if [ "${installed_pg:-0}" = 1 ]; then
  # A fresh Debian cluster asks for passwords over TCP: give the tests a known one.
  su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
fi
echo "tests/services.sh: Mosquitto $(mosquitto -h 2>/dev/null | head -n 1 | awk '{print $3}'), PostgreSQL, HAProxy and audio ready"
