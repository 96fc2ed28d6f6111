#!/usr/bin/env bash
# Start one poseidon client per line of a hosts file over ssh, in the spirit of Poseidon's
# train_imagenet.sh. Every machine needs poseidon installed, the same solver/net files at the same
# path, and its own data partition (<source>_<client id>, see `poseidon data partition`), or one
# shared copy with `shared_file_system: true` in the data layer.
#
#   examples/cluster/train_cluster.sh SOLVER.prototxt HOSTS.txt
#
# A hosts file has one line per client: "<client_id> <ip> <port>"; the port is that client's
# parameter-server shard. For a cluster of loopback addresses you need none of this:
#   poseidon train --solver SOLVER --hosts HOSTS   # starts every client itself
set -euo pipefail

# ---- parameters -----------------------------------------------------------------------------
solver=${1:?usage: train_cluster.sh SOLVER.prototxt HOSTS.txt}
hosts=${2:?usage: train_cluster.sh SOLVER.prototxt HOSTS.txt}
staleness=${STALENESS:-0}          # SSP bound: 0 = bulk synchronous
svb=${SVB:-auto}                   # sufficient-factor broadcasting: auto | on | off
devices=${DEVICES:-}               # e.g. "0" to train on GPU 0 of every machine; empty = CPU
output_dir=${OUTPUT_DIR:-$(pwd)/output}
deadline=${DEADLINE:-120}          # seconds any wait may take before failing with a name
poseidon=${POSEIDON:-poseidon}     # the command on the remote machines (e.g. a venv's bin/poseidon)
ssh=${SSH:-ssh}                    # how to reach a machine (a test substitutes a local shell)
ssh_opts=${SSH_OPTS:-"-o BatchMode=yes -o StrictHostKeyChecking=no"}
# ----------------------------------------------------------------------------------------------

solver=$(readlink -f "$solver")
hosts=$(readlink -f "$hosts")
device_flag="--cpu"
[ -n "$devices" ] && device_flag="--gpu $devices"

# The job secret every client proves it knows (README, "Job secret"): a file on the shared
# folder, readable by this user only, unless secret_file is set.
secret_file=${SECRET_FILE:-$output_dir/job.secret}   # the job secret every client proves it knows
mkdir -p "$output_dir"
if [ ! -f "$secret_file" ]; then
  (umask 077 && python3 -c 'import secrets; print(secrets.token_hex(32))' > "$secret_file")
fi
secret_file=$(readlink -f "$secret_file")

pids=()
cleanup() {
  # Ctrl-C here stops every client we started.
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup INT TERM

while read -r id ip port _; do
  case "$id" in ''|\#*) continue ;; esac
  cmd="cd $(pwd) && $poseidon train --solver $solver --hosts $hosts --client-id $id \
--staleness $staleness --svb $svb $device_flag --deadline $deadline --output-dir $output_dir \
--secret-file $secret_file"
  echo "client $id on $ip: $cmd"
  if [ "$id" = "0" ]; then
    $ssh $ssh_opts "$ip" "$cmd" &
  else
    $ssh $ssh_opts "$ip" "$cmd" > "client_$id.ssh.log" 2>&1 &
  fi
  pids+=($!)
done < <(grep -v '^\s*#' "$hosts" | grep -v '^\s*$')

status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=$?
done
exit $status
