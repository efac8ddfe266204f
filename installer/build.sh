#!/usr/bin/env bash
# Build the AIBA Studio PyInstaller bundle: dist/aiba-studio/aiba-studio (+ _internal/).
#   bash installer/build.sh            set up .venv (with the installer extra) and build
#   bash installer/build.sh --smoke    ... then run installer/smoke_test.py on the bundle
# Work files go to build/, the bundle to dist/ (both git-ignored). The bundle holds the CPU torch
# of .venv; for a CUDA bundle build from a .venv with a CUDA torch (see docs/INSTALL.md).
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"
case "$mode" in ""|--smoke) ;; *) echo "build: unknown option $mode (use --smoke)" >&2; exit 2;; esac

PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -c "import PyInstaller, _pyinstaller_hooks_contrib, main" 2>/dev/null; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -c installer/constraints.txt -e ".[installer]"
fi
if [ ! -d resources/models/aiba-slakh-tiny ]; then
  echo "build: note: resources/models/aiba-slakh-tiny is missing; the bundle's 'embedded' model" \
       "will be a tiny random stand-in (train it first: python main.py train-default ...)" >&2
fi

export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
start=$(date +%s)
.venv/bin/python -m PyInstaller --noconfirm --clean --log-level WARN \
  --distpath dist --workpath build installer/aiba_studio.spec
end=$(date +%s)
echo "build: dist/aiba-studio built in $((end - start)) s; $(du -sb dist/aiba-studio | cut -f1) bytes" \
     "($(du -sh dist/aiba-studio | cut -f1)) in $(find dist/aiba-studio -type f | wc -l) files"

if [ "$mode" = "--smoke" ]; then
  exec .venv/bin/python installer/smoke_test.py dist/aiba-studio/aiba-studio
fi
