# Shared by examples/*/create_*.sh and train_*.sh; source it, do not run it.
#
#   . "$(dirname "$0")/../lib/common.sh"
#
# Sets ROOT (the repository root: the models/ and examples/ paths inside the prototxts are
# relative to it, as in Caffe) and POSEIDON (the command; override with POSEIDON=/path/to/poseidon).
# Every script cd's to ROOT, so it works from any directory.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
POSEIDON=${POSEIDON:-poseidon}

die() { echo "$(basename "$0"): error: $*" >&2; exit 2; }

need_poseidon() {
  command -v "$POSEIDON" >/dev/null 2>&1 ||
    die "'$POSEIDON' not found: pip install the project (or set POSEIDON=/path/to/poseidon)"
}

# The client lines of a hosts file ("<client_id> <ip> <port>"), comments and blanks dropped.
host_lines() { grep -v '^[[:space:]]*\(#\|$\)' "$1"; }

# Number of clients in a hosts file (1 when the file does not exist: train on this machine).
num_clients() {
  if [ -n "${1:-}" ] && [ -f "$1" ]; then host_lines "$1" | wc -l | tr -d ' '; else echo 1; fi
}

# True when every client of the hosts file is on this machine (127.x, ::1, localhost).
all_loopback() {
  local ip
  while read -r _ ip _; do
    case "$ip" in 127.*|::1|localhost) ;; *) return 1 ;; esac
  done < <(host_lines "$1")
}

# rm -rf each LMDB (and its partitions <db>_<k>) so a converter starts afresh, as Caffe's scripts do.
fresh_db() {
  local db
  for db in "$@"; do rm -rf "$db" "$db"_[0-9]*; done
}

# partition_for_clients HOSTS DB...: one partition <db>_<k> per client when HOSTS has more than
# one (for data layers with shared_file_system: false, Poseidon's default).
partition_for_clients() {
  local hosts=$1 n db
  shift
  n=$(num_clients "$hosts")
  [ "$n" -gt 1 ] || return 0
  for db in "$@"; do "$POSEIDON" data partition "$db" --parts "$n"; done
}

# train SOLVER HOSTS NET: the body of every train_*.sh; reads the caller's parameter block
# (staleness, svb, devices, threads, output, snapshot, weights, deadline, ssh, ssh_opts).
#  - no hosts file, or one loopback client: `poseidon train` on this machine;
#  - every client loopback: `poseidon train --hosts` starts them all here;
#  - otherwise one `poseidon train --client-id K` per host over ssh (Poseidon's train_*.sh).
# Output: $output/<net>.S<staleness>.M<clients>.T<threads>/ (the log, .netoutputs, curves); with
# several clients, client 0's console (the training log) is also kept there as <net>.log.
train() {
  local solver=$1 hosts=$2 net=$3
  local n dev resume=() run_dir
  n=$(num_clients "$hosts")
  [ -f "$solver" ] || die "solver '$solver' does not exist (set SOLVER= or net= in the parameter block)"
  run_dir="$output/$net.S$staleness.M$n.T$threads"
  dev=(--cpu)
  [ -n "$devices" ] && dev=(--gpu "$devices")
  [ -n "$snapshot" ] && resume=(--snapshot "$snapshot")
  [ -n "$weights" ] && resume+=(--weights "$weights")
  echo "training $net: $n client(s), staleness $staleness, svb $svb, output $run_dir" >&2
  if [ "$n" -eq 1 ] && { [ ! -f "$hosts" ] || all_loopback "$hosts"; }; then
    exec "$POSEIDON" train --solver "$solver" "${dev[@]}" "${resume[@]}" --output-dir "$run_dir"
  fi
  local common=(--solver "$solver" --hosts "$hosts" --staleness "$staleness" --svb "$svb"
                --workers-per-client "$threads" --deadline "$deadline" "${dev[@]}" "${resume[@]}"
                --output-dir "$output")
  mkdir -p "$run_dir"
  if all_loopback "$hosts"; then
    "$POSEIDON" train "${common[@]}" 2>&1 | tee "$run_dir/$net.log"
    return
  fi
  # every client proves it knows the job secret: a file in the (shared) output folder, readable
  # by this user only, unless the parameter block names one (secret_file=)
  local secret=${secret_file:-$run_dir/job.secret}
  if [ ! -f "$secret" ]; then
    (umask 077 && "${PYTHON:-python3}" -c 'import secrets; print(secrets.token_hex(32))' > "$secret")
  fi
  common+=(--secret-file "$secret")
  local pids=() id ip status=0 cmd
  trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' INT TERM
  while read -r id ip _; do
    cmd="cd $ROOT && $POSEIDON train ${common[*]} --client-id $id"
    echo "client $id on $ip: $cmd" >&2
    if [ "$id" = 0 ]; then
      $ssh $ssh_opts "$ip" "$cmd" 2>&1 | tee "$run_dir/$net.log" &
    else
      $ssh $ssh_opts "$ip" "$cmd" > "$run_dir/client_$id.ssh.log" 2>&1 &
    fi
    pids+=($!)
  done < <(host_lines "$hosts")
  for p in "${pids[@]}"; do wait "$p" || status=$?; done
  return $status
}
