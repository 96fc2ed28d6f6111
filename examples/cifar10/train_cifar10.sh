#!/usr/bin/env bash
# Train a CIFAR-10 net (models/cifar10_quick, or NET=cifar10_full) on the clients of a hosts
# file, like Poseidon's
# examples/cifar10/train_cifar10.sh.
# Edit the parameter block (or set the upper-case variables).
. "$(dirname "$0")/../lib/common.sh"

# ---- parameters ------------------------------------------------------------------------------
net=${NET:-cifar10_quick}
solver=${SOLVER:-$ROOT/models/$net/solver.prototxt}
hosts=${HOSTS:-$ROOT/examples/cifar10/hosts.txt}   # "<client_id> <ip> <port>" per line
staleness=${STALENESS:-0}                         # SSP bound: 0 = bulk synchronous
svb=${SVB:-auto}                                  # sufficient-factor broadcasting: auto | on | off
devices=${DEVICES:-}                              # GPU ids, e.g. "0"; empty = CPU
threads=${THREADS:-1}                             # workers per client (T)
output=${OUTPUT:-$ROOT/output}                    # runs go to $output/<net>.S<s>.M<clients>.T<threads>/
snapshot=${SNAPSHOT:-}                            # resume, e.g.:
# snapshot=$ROOT/models/cifar10_quick/cifar10_quick_iter_4000.solverstate
weights=${WEIGHTS:-}                              # fine-tune from a .caffemodel instead
deadline=${DEADLINE:-120}                         # seconds any wait may take before failing
ssh=${SSH:-ssh}; ssh_opts=${SSH_OPTS:-"-o BatchMode=yes -o StrictHostKeyChecking=no"}
# ----------------------------------------------------------------------------------------------

cd "$ROOT"
need_poseidon
mkdir -p "$output"
train "$solver" "$hosts" "$net"
