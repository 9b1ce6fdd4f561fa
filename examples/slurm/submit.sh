#!/bin/bash
# The four steps on a SLURM cluster: step 1 as an array (step1_dip.sbatch), steps 2-4 as one job
# (steps2to4_biqan.sbatch) that starts once every task of the array succeeded
# (--dependency=afterok). The scripts read their folders and settings from the environment
# (REAL, MEAN, RUN, FLAGS, ...; sbatch passes it on); options given here go to the array's sbatch.
# Run it from the repository root (the jobs' working folder):
#     REAL=data/PolyU/real MEAN=data/PolyU/mean RUN=runs/PolyU examples/slurm/submit.sh --array=0-7
set -euo pipefail
here=$(dirname "$0")
array=$(sbatch --parsable "$@" "$here/step1_dip.sbatch")
array=${array%%;*}
echo "step 1: array job $array"
selection=$(sbatch --parsable --dependency="afterok:$array" "$here/steps2to4_biqan.sbatch")
echo "steps 2-4: job ${selection%%;*}, starts when every task of $array succeeded"
