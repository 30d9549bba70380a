#!/bin/bash
# GPT-2 124M on OpenWebText across several 8-GPU nodes under SLURM: DeepSpeed ZeRO-2 through `accelerate launch`
# with DeepSpeed's standard launcher (torchrun-style rendezvous, one launcher per node, no pdsh/ssh).
#
#   sbatch --nodes=2 accelerate_configs/slurm_multinode.sh DATA_DIR OUTPUT_DIR [--field value ...]
#
# Preemption / time limit: SLURM sends SIGTERM 300 s before the end (--signal); the launcher forwards it to the
# workers, which finish the current step, save checkpoints/stepN and exit non-zero. With --requeue the job comes
# back and `--resume_from_checkpoint auto` continues from the newest complete checkpoint (same batches, same
# schedule). The global batch stays 512 sequences at any node count (micro batch 16 x 8 GPUs x nodes must divide 512).
#SBATCH --job-name=gpt2-owt
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@300
#SBATCH --requeue
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail

DATA_DIR=${1:?usage: sbatch accelerate_configs/slurm_multinode.sh DATA_DIR OUTPUT_DIR [--field value ...]}
OUTPUT_DIR=${2:?usage: sbatch accelerate_configs/slurm_multinode.sh DATA_DIR OUTPUT_DIR [--field value ...]}
shift 2
GPUS_PER_NODE=${GPUS_PER_NODE:-8}

cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"  # the repository root: config paths below are relative to it
export MAIN_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MAIN_PORT=${MAIN_PORT:-29500}
export NUM_PROCESSES=$((SLURM_NNODES * GPUS_PER_NODE))
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}

# One task per node; SLURM_NODEID (0..nodes-1) is each launcher's machine rank, expanded on its own node.
srun --kill-on-bad-exit=1 bash -c '
  accelerate launch --config_file accelerate_configs/multinode_zero2.yaml \
    --num_machines "$SLURM_NNODES" --num_processes "$NUM_PROCESSES" --machine_rank "$SLURM_NODEID" \
    --main_process_ip "$MAIN_ADDR" --main_process_port "$MAIN_PORT" \
    -m gpt2_owt.cli train --config training/configs/gpt2-124m-owt.yaml \
    --data_dir "$0" --output_dir "$1" --resume_from_checkpoint auto "${@:2}"
' "$DATA_DIR" "$OUTPUT_DIR" "$@"
