#!/usr/bin/env bash
# Train an ImageNet net (models/bvlc_alexnet; NET=bvlc_reference_caffenet, bvlc_googlenet or
# resnet_50) on the clients of a hosts file, like Poseidon's
# examples/imagenet/train_imagenet.sh.
# Edit the parameter block (or set the upper-case variables).
. "$(dirname "$0")/../lib/common.sh"

# ---- parameters ------------------------------------------------------------------------------
net=${NET:-bvlc_alexnet}
solver=${SOLVER:-$ROOT/models/$net/solver.prototxt}
hosts=${HOSTS:-$ROOT/examples/imagenet/hosts.txt}   # "<client_id> <ip> <port>" per line
staleness=${STALENESS:-0}                         # SSP bound: 0 = bulk synchronous
svb=${SVB:-auto}                                  # sufficient-factor broadcasting: auto | on | off
devices=${DEVICES:-}                              # GPU ids, e.g. "0"; empty = CPU
threads=${THREADS:-1}                             # workers per client (T)
output=${OUTPUT:-$ROOT/output}                    # runs go to $output/<net>.S<s>.M<clients>.T<threads>/
snapshot=${SNAPSHOT:-}                            # resume, e.g.:
# snapshot=$ROOT/models/bvlc_alexnet/bvlc_alexnet_train_iter_10000.solverstate
weights=${WEIGHTS:-}                              # fine-tune from a .caffemodel instead
deadline=${DEADLINE:-120}                         # seconds any wait may take before failing
ssh=${SSH:-ssh}; ssh_opts=${SSH_OPTS:-"-o BatchMode=yes -o StrictHostKeyChecking=no"}
# ----------------------------------------------------------------------------------------------

cd "$ROOT"
need_poseidon
mkdir -p "$output"
train "$solver" "$hosts" "$net"
