#!/usr/bin/env bash
# Every GPU check of issue 17 in one call on a bare NVIDIA machine (see bench/gpu_check.py for
# the steps and targets): install what pip can, probe the device, pytest -m gpu, the engine
# benchmark (AlexNet b128, GoogLeNet b32 vs PyTorch cuDNN FP32), poseidon time --json profiles,
# a 2-client --gpu digits cluster; one table on stdout, every log/JSON under OUTDIR.
#
# Usage: bench/gpu_check.sh [OPTIONS] [OUTDIR]
#   OUTDIR               where results go (default: $OUT if set, else bench/results/gpu_check)
#   --budget SECONDS     wall-clock budget for everything, installs included (default 540)
#   --wheels DIR         install the wheels in DIR first (no index is contacted); make the
#                        folder elsewhere with the command that --print-wheels prints
#   --python PY          interpreter to use (default: python3)
#   --conformance DIR    folder holding bvlc/... (default: shared/conformance in the checkout,
#                        else ../shared/conformance beside it)
#   --only STEPS         comma-separated subset of probe,pytest,engine,profiles,digits
#   --cpu-dry-run        every step on the CPU at toy sizes: tests the plumbing, not a GPU
#   --print-wheels [DIR] print the pip download command that fills DIR (default wheels) and exit
#   -h, --help           this text
# Exit status: 0 every target met, 1 a target missed, 2 bad usage, 3 no GPU or no CuPy.
set -u

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ME="gpu_check.sh"

usage() { sed -n '2,/^# Exit status/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }
bad() { echo "$ME: error: $1 (see $ME --help)" >&2; exit 2; }

BUDGET=540
WHEELS=""
PY=python3
CONF=""
ONLY=""
DRY=0
PRINT_WHEELS=""
OUTDIR=""

while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --budget) [ $# -ge 2 ] || bad "--budget needs a number of seconds"; BUDGET="$2"; shift 2 ;;
    --budget=*) BUDGET="${1#*=}"; shift ;;
    --wheels) [ $# -ge 2 ] || bad "--wheels needs a folder"; WHEELS="$2"; shift 2 ;;
    --python) [ $# -ge 2 ] || bad "--python needs an interpreter"; PY="$2"; shift 2 ;;
    --conformance) [ $# -ge 2 ] || bad "--conformance needs a folder"; CONF="$2"; shift 2 ;;
    --only) [ $# -ge 2 ] || bad "--only needs a list of steps"; ONLY="$2"; shift 2 ;;
    --cpu-dry-run) DRY=1; shift ;;
    --print-wheels)
      PRINT_WHEELS="wheels"
      if [ $# -ge 2 ] && [ "${2#-}" = "$2" ]; then PRINT_WHEELS="$2"; shift; fi
      shift ;;
    --) shift; break ;;
    -*) bad "unknown option $1" ;;
    *) [ -z "$OUTDIR" ] || bad "one OUTDIR only (got '$OUTDIR' and '$1')"; OUTDIR="$1"; shift ;;
  esac
done
if [ $# -gt 0 ]; then   # after --
  { [ -z "$OUTDIR" ] && [ $# -eq 1 ]; } || bad "one OUTDIR only"
  OUTDIR="$1"
fi

case "$BUDGET" in
  ''|*[!0-9]*) bad "--budget '$BUDGET': give whole seconds, e.g. --budget 540" ;;
esac
[ "$BUDGET" -ge 1 ] || bad "--budget $BUDGET: give a positive number of seconds"
if [ -n "$ONLY" ]; then
  IFS=',' read -r -a _steps <<< "$ONLY"
  for s in "${_steps[@]}"; do
    case "$s" in probe|pytest|engine|profiles|digits) ;;
      *) bad "--only: unknown step '$s' (steps: probe,pytest,engine,profiles,digits)" ;; esac
  done
fi
command -v "$PY" >/dev/null 2>&1 || bad "--python $PY: no such interpreter"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null \
  || bad "--python $PY: Python 3.10 or newer is needed"
[ -z "$WHEELS" ] || [ -d "$WHEELS" ] || bad "--wheels $WHEELS: no such folder"
[ -z "$CONF" ] || [ -d "$CONF/bvlc" ] || bad "--conformance $CONF: no bvlc/ folder in it"

if [ -n "$PRINT_WHEELS" ]; then
  exec "$PY" "$ROOT/bench/gpu_check.py" --print-wheels "$PRINT_WHEELS"
fi

OUTDIR="${OUTDIR:-${OUT:-$ROOT/bench/results/gpu_check}}"
mkdir -p "$OUTDIR" || bad "cannot create OUTDIR $OUTDIR"
LOG="$OUTDIR/check.log"
: > "$LOG"
log() { echo "$*" | tee -a "$LOG"; }

# Installs go to a private folder put first on PYTHONPATH: the image's own packages (NumPy, CuPy,
# PyTorch) stay as they are, and nothing lands in OUTDIR.
SITE="$(mktemp -d "${TMPDIR:-/tmp}/poseidon_gpu_site.XXXXXX")"
export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
have_timeout() { command -v timeout >/dev/null 2>&1; }
limited() {  # limited SECONDS CMD...: run CMD, killed after SECONDS where timeout(1) exists
  local s="$1"; shift
  if have_timeout; then timeout "$s" "$@"; else "$@"; fi
}
pip_target() {
  limited 120 "$PY" -m pip install -q --no-deps --no-compile --no-cache-dir --upgrade \
    --disable-pip-version-check --target "$SITE" "$@" >>"$LOG" 2>&1
}

if [ -n "$WHEELS" ]; then
  shopt -s nullglob
  whl=("$WHEELS"/*.whl)
  shopt -u nullglob
  if [ ${#whl[@]} -eq 0 ]; then
    log "$ME: --wheels $WHEELS holds no .whl files; installing nothing from it"
  elif pip_target --no-index "${whl[@]}"; then
    log "$ME: installed ${#whl[@]} wheel(s) from $WHEELS"
  else
    log "$ME: installing the wheels from $WHEELS failed (see $LOG); going on with what is there"
  fi
fi

# The [gpu] extra (CuPy): use the image's CuPy when it imports; else install the extra from the
# wheel folder or, where an index answers, from there.
if [ "$DRY" -eq 0 ] && ! "$PY" -c 'import cupy' >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >>"$LOG" 2>&1; then
    extra="$("$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); import gpu_check; print("\n".join(gpu_check.gpu_extra()))' "$ROOT/bench" 2>>"$LOG")"
    mapfile -t reqs <<< "$extra"
    if [ -n "$WHEELS" ]; then
      pip_target --no-index --find-links "$WHEELS" "${reqs[@]}" && log "$ME: installed ${reqs[*]} from $WHEELS"
    else
      pip_target --retries 0 --timeout 15 "${reqs[@]}" && log "$ME: installed ${reqs[*]}"
    fi
  else
    log "$ME: no NVIDIA driver answers (nvidia-smi); not installing CuPy"
  fi
fi

LEFT=$((BUDGET - SECONDS))
[ "$LEFT" -ge 1 ] || LEFT=1
args=("$OUTDIR" --budget "$LEFT" --python "$PY")
[ "$DRY" -eq 0 ] || args+=(--cpu-dry-run)
[ -z "$ONLY" ] || args+=(--only "$ONLY")
[ -z "$CONF" ] || args+=(--conformance "$CONF")
"$PY" "$ROOT/bench/gpu_check.py" "${args[@]}"
rc=$?
rm -rf "$SITE"
exit $rc
