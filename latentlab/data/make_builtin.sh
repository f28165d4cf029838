#!/usr/bin/env bash
# Regenerate the built-in data sets (latentlab/data/builtin/*.h5), one run at a
# time.  Every command is resumable: rerun this script after an interruption.
#
# Usage: latentlab/data/make_builtin.sh PDB [THREADS]
#    or: LATENTLAB_CHIGNOLIN_PDB=PDB latentlab/data/make_builtin.sh [-] [THREADS]
#
#   PDB      starting structure of chignolin, PDB entry 1UAO
#            (https://files.rcsb.org/download/1UAO.pdb); latentlab does not ship
#            it.  `latentlab generate` strips water and ions and adds hydrogens.
#            Checked before anything runs, so a missing file fails at once and
#            not after the alanine dipeptide runs.
#   THREADS  OpenMM CPU threads (default 1)
#   CHIGNOLIN_NS  length of the chignolin run in ns (environment, default 6)
set -euo pipefail

usage="usage: latentlab/data/make_builtin.sh PDB [THREADS]  (or set LATENTLAB_CHIGNOLIN_PDB=PDB)"
PDB=${1:-}
if [ -z "$PDB" ] || [ "$PDB" = "-" ]; then
    PDB=${LATENTLAB_CHIGNOLIN_PDB:-}
fi
if [ -z "$PDB" ]; then
    echo "make_builtin.sh: error: PDB: no chignolin structure given. Fix: download 1UAO" \
         "(https://files.rcsb.org/download/1UAO.pdb) and pass its path as the first argument" \
         "or in LATENTLAB_CHIGNOLIN_PDB" >&2
    echo "$usage" >&2
    exit 2
fi
if [ ! -f "$PDB" ] || [ ! -r "$PDB" ]; then
    echo "make_builtin.sh: error: PDB: $PDB is not a readable file. Fix: check the path" >&2
    echo "$usage" >&2
    exit 2
fi
PDB=$(cd "$(dirname "$PDB")" && pwd)/$(basename "$PDB")
THREADS=${2:-1}
case "$THREADS" in
    ''|*[!0-9]*|0) echo "make_builtin.sh: error: THREADS: got '$THREADS'. Fix: give a positive whole number" >&2
                   exit 2 ;;
esac
if ! command -v latentlab >/dev/null 2>&1; then
    echo "make_builtin.sh: error: the latentlab command is not on PATH. Fix: pip install -e . (from the repository root)" >&2
    exit 2
fi

D=$(cd "$(dirname "$0")" && pwd)/builtin
run() {  # run OUT args...: start, or resume if a partial/finished file exists
    local out=$1; shift
    if [ -e "$out" ] || [ -d "$out.partial" ]; then latentlab generate "$@" --out "$out" --resume
    else latentlab generate "$@" --out "$out"; fi
}
# alanine dipeptide, vacuum, ff14SB, no constraints, 1 fs: 100 ns, a frame every 8 ps (12,500 frames)
run "$D/alanine-dipeptide.h5" alanine-dipeptide --ns 100 --save-every 8 --temperature 300 --seed 1 --threads "$THREADS" --name alanine-dipeptide
# the same at 350 K and 400 K (20 ns, a frame every 4 ps, 5,000 frames each)
run "$D/alanine-dipeptide-350K.h5" alanine-dipeptide --ns 20 --save-every 4 --temperature 350 --seed 2 --threads "$THREADS" --name alanine-dipeptide-350K
run "$D/alanine-dipeptide-400K.h5" alanine-dipeptide --ns 20 --save-every 4 --temperature 400 --seed 3 --threads "$THREADS" --name alanine-dipeptide-400K
# chignolin (1UAO), GBn2, ff14SB, HBonds + HMR 4 fs: 6 ns, CA every 0.5 ps (12,000 frames), all atoms every 5 ps (1,200)
# (the committed file was made as 5 ns, then extended with --resume --ns 6)
run "$D/chignolin.h5" chignolin --pdb "$PDB" --ns "${CHIGNOLIN_NS:-6}" --save-every 0.5 --allatom-every 5 --temperature 300 --seed 4 --threads "$THREADS" --name chignolin
