#!/usr/bin/env bash
# Open MPI (or MPICH): mpirun only starts the processes; poseidon talks gRPC, not MPI. Each
# process reads its client id from OMPI_COMM_WORLD_RANK (PMI_RANK under MPICH), so the hosts file
# must list the machines in the same order as the MPI host list.
#
#   examples/cluster/mpirun_train.sh SOLVER.prototxt HOSTS.txt
set -euo pipefail
solver=${1:?usage: mpirun_train.sh SOLVER.prototxt HOSTS.txt}
hosts=${2:?usage: mpirun_train.sh SOLVER.prototxt HOSTS.txt}
n=$(grep -cv '^\s*\(#\|$\)' "$hosts")
hostlist=$(grep -v '^\s*\(#\|$\)' "$hosts" | sort -n | awk '{print $2}' | paste -sd, -)
exec mpirun -np "$n" --host "$hostlist" \
  poseidon train --solver "$solver" --hosts "$hosts" \
  --staleness "${STALENESS:-0}" --svb "${SVB:-auto}" --output-dir "${OUTPUT_DIR:-$PWD/output}"
