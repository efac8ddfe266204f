#!/usr/bin/env bash
# Set up AIBA Studio on a fresh Debian/Ubuntu machine into .venv, then run something.
#   bash installer/setup.sh --run     set up, then start the GUI (or the headless analysis without a display)
#   bash installer/setup.sh --test    set up, then run the test suite
#   bash installer/setup.sh           set up only
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"

need_apt=()
for pkg in libportaudio2 fluidsynth xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 desktop-file-utils; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_apt[@]}"
  else
    echo "setup: please install these system packages first: ${need_apt[*]}" >&2
  fi
fi

PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# pyproject.toml holds compatible ranges; installer/constraints.txt the exact tested set, with
# torch pinned to the CPU build 2.13.0+cpu (an unconstrained torch pulls a multi-GB CUDA build).
# --test adds the cluster extra (Ray) so the Ray tests run too; the tool itself works without it.
extras="test"
[ "$mode" = "--test" ] && extras="test,cluster"
.venv/bin/python -m pip install -q --disable-pip-version-check -c installer/constraints.txt -e ".[$extras]"

export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
case "$mode" in
  --test)
    exec .venv/bin/python -m pytest -q tests
    ;;
  --run)
    shift || true
    if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] || [ "$#" -gt 0 ]; then
      exec .venv/bin/python main.py "$@"
    fi
    echo "setup: no display found; running the headless analysis instead (out/demo)." >&2
    rm -rf out/demo
    exec .venv/bin/python main.py analyze --prompt "bass and drums" --steps 25 --seed 0 --out out/demo
    ;;
  "") echo "setup: done (.venv ready)";;
  *) echo "setup: unknown option $mode (use --run or --test)" >&2; exit 2;;
esac
