# Shared by every examples/<recipe>/run.sh: environment, fairseq wrappers, the flags of
# the systems, and the stage runner. A recipe sets RECIPE, sources this file, sets its
# defaults, then calls init_devices.
#
# Environment (all optional):
#   PYTHON      interpreter with fairseq and fairseq_divgen (default python3)
#   WORKDIR     where everything is written (default ./divgen-runs/$RECIPE[-smoke])
#   SMOKE=1     tiny local corpus and tiny models, every stage, a minute or two on a CPU
#   STAGES      space-separated stage names to run (default: all, in order)
#   SYSTEMS     systems to generate with and score (default: mle tailr lfd, plus the
#               baselines unlikelihood loss_truncation mixce error_norm_truncation where
#               the recipe has them (WITH_BASELINES=1); a baseline not in SYSTEMS is not
#               trained either)
#   CPU=1       train and generate on the CPU (default: 1 without a GPU or in smoke mode)
#   FP16=1      --fp16 (default per recipe; ignored on the CPU)
#   SEED        fairseq's --seed (default 1, or the recipe's)
#   USER_DIR    the fairseq_divgen package directory (default: found from PYTHON)
#   NUM_WORKERS fairseq-preprocess and BPE workers (default 4)
#   TRAIN_EXTRA_ARGS, GEN_EXTRA_ARGS  more fairseq-train / fairseq-generate flags for every
#               run (word-split), e.g. TRAIN_EXTRA_ARGS="--memory-efficient-fp16 --wandb-project x"
# Smoke mode also sets OMP_NUM_THREADS=1 (unless set), --num-workers 0 --data-buffer-size 0.

: "${PYTHON:=python3}"
: "${SMOKE:=0}"
: "${STAGES:=all}"
# The comparison methods (docs/baselines.md); their train_* stages run only when they
# are in SYSTEMS.
BASELINE_SYSTEMS="unlikelihood loss_truncation mixce error_norm_truncation"
: "${NUM_WORKERS:=4}"
COMMON_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$COMMON_DIR/../.." && pwd)

die() { echo "error: $*" >&2; exit 1; }

if [ "$SMOKE" = 1 ]; then MODE=smoke; else MODE=full; fi
: "${WORKDIR:=$PWD/divgen-runs/$RECIPE$([ "$MODE" = smoke ] && echo -smoke)}"
mkdir -p "$WORKDIR"
WORKDIR=$(cd "$WORKDIR" && pwd)
CKPT=$WORKDIR/checkpoints

command -v "$PYTHON" >/dev/null 2>&1 \
    || die "PYTHON=$PYTHON not found; set PYTHON to the interpreter that has fairseq and fairseq_divgen"
"$PYTHON" -c "import importlib.util as u, sys; sys.exit(u.find_spec('fairseq_cli') is None)" \
    || die "$PYTHON cannot import fairseq; install it (python3 scripts/dev.py setup) or set PYTHON"
# From a checkout without an installed package: import it from the checkout.
"$PYTHON" -c "import importlib.util as u, sys; sys.exit(u.find_spec('fairseq_divgen') is None)" \
    || export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [ -z "${USER_DIR:-}" ]; then
    # find_spec locates the package without importing fairseq (a few seconds).
    USER_DIR=$("$PYTHON" -c "import importlib.util as u; s = u.find_spec('fairseq_divgen'); print(s.submodule_search_locations[0] if s else '')")
    [ -n "$USER_DIR" ] || USER_DIR=$REPO_ROOT/fairseq_divgen
fi
[ -f "$USER_DIR/__init__.py" ] || die "USER_DIR=$USER_DIR is not the fairseq_divgen package directory"

# A work directory holds one kind of run: never mix smoke files into a full run.
if [ -f "$WORKDIR/.mode" ] && [ "$(cat "$WORKDIR/.mode")" != "$MODE" ]; then
    die "WORKDIR=$WORKDIR holds a $(cat "$WORKDIR/.mode") run; choose another WORKDIR for a $MODE run"
fi
echo "$MODE" > "$WORKDIR/.mode"

# Smoke-mode sizes: the recipes' architectures shrunk to one layer of dimension 32.
SMOKE_SEQ2SEQ_ARCH=(--encoder-layers 1 --decoder-layers 1 --encoder-embed-dim 32 --decoder-embed-dim 32
    --encoder-ffn-embed-dim 64 --decoder-ffn-embed-dim 64 --encoder-attention-heads 2 --decoder-attention-heads 2)
SMOKE_LM_ARCH=(--decoder-layers 1 --decoder-embed-dim 32 --decoder-input-dim 32 --decoder-output-dim 32
    --decoder-ffn-embed-dim 64 --decoder-attention-heads 2)

# init_devices: CPU or GPUs, fp16, the seed, the systems and the baselines' settings,
# after the recipe's defaults.
init_devices() {
    : "${SEED:=1}"
    if [ -z "${SYSTEMS:-}" ]; then
        SYSTEMS="mle tailr lfd"
        if [ "${WITH_BASELINES:-0}" = 1 ]; then SYSTEMS="$SYSTEMS $BASELINE_SYSTEMS"; fi
    fi
    # The baselines' settings (docs/baselines.md): the papers' / authors' defaults
    # unless the recipe sets others. ENT starts after the recipe's truncation warm-up.
    : "${UL_ALPHA:=1.0}"                                              # --rank-alpha
    : "${LT_DROPC:=0.4}" "${LT_MIN_COUNT:=10000}" "${LT_RECOMPUTE:=10000}"  # LossDropper's
    : "${MIXCE_ETA:=0.5}"                                             # --mixing-ratio
    : "${ENT_THRESHOLD:=1.3}" "${ENT_START:=${TRUNCATION_WARMUP:-0}}"  # no published default
    if [ -z "${CPU:-}" ]; then
        if [ "$MODE" = smoke ]; then CPU=1
        else CPU=$("$PYTHON" -c "import torch; print(0 if torch.cuda.is_available() else 1)"); fi
    fi
    NUM_GPUS=0
    if [ "$CPU" != 1 ]; then NUM_GPUS=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())"); fi
    DEVICE_ARGS=()
    if [ "$MODE" = smoke ]; then
        # Tiny models: one thread and no loader processes are faster, and far faster on a
        # busy machine (threads spinning against each other). Without loader processes,
        # fairseq's prefetch thread runs the dataset code itself and, still running at
        # exit, can abort the process ("terminate called without an active exception"):
        # --data-buffer-size 0 turns that thread off.
        export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
        DEVICE_ARGS+=(--num-workers 0 --data-buffer-size 0)
    fi
    if [ "$CPU" = 1 ]; then
        DEVICE_ARGS+=(--cpu)
        if [ "${FP16:-0}" = 1 ]; then echo "note: FP16=1 ignored on the CPU"; fi
    elif [ "${FP16:-0}" = 1 ]; then
        DEVICE_ARGS+=(--fp16)
    fi
}

# per_gpu_update_freq TOTAL: gradient accumulation that keeps the effective batch of
# a recipe written for TOTAL GPU-steps per update (TOTAL = GPUs x update_freq).
per_gpu_update_freq() {
    local gpus=$NUM_GPUS
    [ "$gpus" -ge 1 ] || gpus=1
    local f=$(( $1 / gpus ))
    [ "$f" -ge 1 ] || f=1
    echo "$f"
}

# fairseq TOOL ARGS...: run fairseq-TOOL with $PYTHON (no console scripts needed on PATH).
fairseq() {
    local tool=$1; shift
    "$PYTHON" -m "fairseq_cli.$tool" "$@"
}

# train SAVE_DIR ARGS...: fairseq-train into SAVE_DIR with the plugin, seed and device
# flags; the command and its log go to SAVE_DIR/train.log. A rerun resumes from
# checkpoint_last.pt.
train() {
    local save=$1; shift
    local args=("$@" --user-dir "$USER_DIR" --save-dir "$save" --seed "$SEED" --no-progress-bar
                --log-format simple ${DEVICE_ARGS[@]+"${DEVICE_ARGS[@]}"})
    # shellcheck disable=SC2206  # extra flags are word-split on purpose
    args+=(${TRAIN_EXTRA_ARGS:-})
    mkdir -p "$save"
    echo "+ fairseq-train ${args[*]}" | tee -a "$save/train.log"
    fairseq train "${args[@]}" 2>&1 | tee -a "$save/train.log"
}

# The criterion flags of each system (README tables), from the recipe's settings:
# LABEL_SMOOTHING (eps), TAILR_GAMMA, TAILR_MIN_WEIGHT, TRUNCATION_RATIO,
# TRUNCATION_WARMUP, LFD_BETA, LFD_MLE_WEIGHT, UL_ALPHA, LT_DROPC, LT_MIN_COUNT,
# LT_RECOMPUTE, MIXCE_ETA, ENT_THRESHOLD, ENT_START (unlikelihood and mixce have no label
# smoothing: their papers define none). Checkpoint selection: SELECT_ARGS if the
# recipe sets it, else the lowest validation NLL of the model that generates
# (cross_entropy logs it as "loss"; the others as "nll_loss", comparable across them).
# The degenerative model is used as last trained.
criterion_args() {
    local eps=${LABEL_SMOOTHING:-0} best=(--best-checkpoint-metric nll_loss)
    case "$1" in
        mle)
            if [ "$eps" = 0 ]; then
                CRITERION_ARGS=(--criterion cross_entropy); best=(--best-checkpoint-metric loss)
            else
                CRITERION_ARGS=(--criterion label_smoothed_cross_entropy --label-smoothing "$eps")
            fi ;;
        tailr)
            CRITERION_ARGS=(--criterion tailr --label-smoothing "$eps"
                --density-ratio-threshold "$TAILR_GAMMA" --density-min-weight "$TAILR_MIN_WEIGHT") ;;
        degenerative)
            CRITERION_ARGS=(--criterion truncated_ce --truncation-ratio "$TRUNCATION_RATIO"
                --truncation-warmup-updates "$TRUNCATION_WARMUP")
            return ;;
        lfd)
            CRITERION_ARGS=(--degenerative-checkpoint "$CKPT/degenerative/checkpoint_last.pt"
                --criterion lfd_poe --degenerative-scale "$LFD_BETA" --mle-weight "$LFD_MLE_WEIGHT"
                --label-smoothing "$eps") ;;
        unlikelihood)
            CRITERION_ARGS=(--criterion unlikelihood --rank-alpha "$UL_ALPHA") ;;
        loss_truncation)
            CRITERION_ARGS=(--criterion loss_truncation --label-smoothing "$eps" --dropc "$LT_DROPC"
                --min-count "$LT_MIN_COUNT" --recompute "$LT_RECOMPUTE") ;;
        mixce)
            CRITERION_ARGS=(--criterion mixce --mixing-ratio "$MIXCE_ETA") ;;
        error_norm_truncation)
            CRITERION_ARGS=(--criterion error_norm_truncation --label-smoothing "$eps"
                --token-prune-threshold "$ENT_THRESHOLD" --start-prune-iteration "$ENT_START") ;;
        *) die "unknown system '$1'" ;;
    esac
    if [ -n "${SELECT_ARGS+x}" ]; then best=("${SELECT_ARGS[@]}"); fi
    CRITERION_ARGS+=("${best[@]}")
}

# train_system NAME TASK ARGS...: train system NAME into $CKPT/NAME with fairseq task
# TASK, its criterion flags and ARGS (the recipe's model, optimizer and data flags).
train_system() {
    local name=$1 task=$2; shift 2
    criterion_args "$name"
    train "$CKPT/$name" "$@" --task "$task" "${CRITERION_ARGS[@]}"
}

# generate OUT ARGS...: fairseq-generate into OUT (its stdout), log to OUT.log;
# skipped when OUT exists (it is written under another name and renamed when complete).
generate() {
    local out=$1; shift
    if [ -f "$out" ]; then echo "$out: present, not generated again"; return; fi
    mkdir -p "$(dirname "$out")"
    # shellcheck disable=SC2086  # extra flags are word-split on purpose
    fairseq generate "$@" --user-dir "$USER_DIR" --seed "$SEED" --required-batch-size-multiple 1 \
        ${DEVICE_ARGS[@]+"${DEVICE_ARGS[@]}"} ${GEN_EXTRA_ARGS:-} > "$out.part" 2> "$out.log"
    mv "$out.part" "$out"
    grep -E "Translated|Generate test" "$out" | tail -n 2 || true
}

# decoding_args NAME: DECODE_ARGS = the fairseq-generate flags of one decoding.
decoding_args() {
    case "$1" in
        greedy) DECODE_ARGS=(--beam 1) ;;
        nucleus) DECODE_ARGS=(--beam 1 --sampling --sampling-topp "${TOP_P:-0.9}") ;;
        beam5) DECODE_ARGS=(--beam 5) ;;
        *) die "unknown decoding '$1' in DECODINGS (greedy, nucleus, beam5)" ;;
    esac
}

# divgen_score ARGS...: the package's divgen-score command.
divgen_score() {
    "$PYTHON" -m fairseq_divgen.scoring.cli "$@"
}

# common_py SCRIPT ARGS...: a helper script of examples/common.
common_py() {
    local script=$1; shift
    "$PYTHON" "$COMMON_DIR/$script" "$@"
}

# run_stages NAME...: run stage_NAME for each NAME in order, unless $WORKDIR/.done/NAME
# exists (delete it to redo a stage) or STAGES names other stages; train_X of a baseline
# X not in SYSTEMS is skipped without being marked done.
run_stages() {
    mkdir -p "$WORKDIR/.done"
    local s
    if [ "$STAGES" != all ]; then
        for s in $STAGES; do
            [[ " $* " == *" $s "* ]] || die "unknown stage '$s' in STAGES; stages: $*"
        done
    fi
    for s in "$@"; do
        if [ "$STAGES" != all ] && [[ " $STAGES " != *" $s "* ]]; then continue; fi
        if [[ $s == train_* && " $BASELINE_SYSTEMS " == *" ${s#train_} "* && " $SYSTEMS " != *" ${s#train_} "* ]]; then
            echo "== stage $s: skipped (${s#train_} is not in SYSTEMS)"
            continue
        fi
        if [ -e "$WORKDIR/.done/$s" ]; then
            echo "== stage $s: already done, skipped (rm $WORKDIR/.done/$s to redo)"
            continue
        fi
        echo "== stage $s ($RECIPE, $MODE, $(date '+%H:%M:%S'))"
        "stage_$s"
        touch "$WORKDIR/.done/$s"
    done
    if [ -f "$WORKDIR/scores.md" ]; then echo "== $RECIPE: scores in $WORKDIR/scores.md"; fi
}
