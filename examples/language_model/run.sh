#!/usr/bin/env bash
# WikiText-103 transformer_lm: MLE, TaiLr, LFD and the baselines (unlikelihood, loss
# truncation, MixCE, error norm truncation); continuations of test prefixes and perplexity
# (README.md).
#   bash examples/language_model/run.sh              # full run (downloads WikiText-103)
#   SMOKE=1 bash examples/language_model/run.sh      # every stage on a tiny local corpus
# Stages: data preprocess train_mle train_tailr train_degenerative train_lfd
#   train_unlikelihood train_loss_truncation train_mixce train_error_norm_truncation generate score
set -euo pipefail
RECIPE=language_model
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

source "$HERE/../common/recipe.sh"

ARCH_ARGS=()
if [ "$MODE" = smoke ]; then
    ARCH_ARGS=("${SMOKE_LM_ARCH[@]}")
    : "${TOKENS_PER_SAMPLE:=64}" "${MAX_TOKENS:=512}" "${GPU_STEPS:=1}" "${LR:=5e-3}" "${WARMUP:=10}"
    : "${MAX_UPDATE:=30}" "${DEGEN_MAX_UPDATE:=12}" "${TRUNCATION_WARMUP:=4}"
    : "${PREFIX_LEN:=8}" "${CONT_LEN:=16}" "${CONTEXT_WINDOW:=32}" "${LOG_INTERVAL:=10}"
    : "${LT_MIN_COUNT:=40}" "${LT_RECOMPUTE:=40}"   # 8 sequences an update: truncating from update 6
fi
: "${WITH_BASELINES:=1}"   # the smoke run CI checks the baselines with
: "${WIKITEXT_URLS:=https://wikitext.smerity.com/wikitext-103-v1.zip https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-v1.zip}"
# fairseq's examples/language_model recipe (2 GPUs x update-freq 16)
: "${TOKENS_PER_SAMPLE:=512}" "${MAX_TOKENS:=2048}" "${GPU_STEPS:=32}"
: "${LR:=0.0005}" "${WARMUP:=4000}" "${MAX_UPDATE:=50000}"
: "${LABEL_SMOOTHING:=0}"                       # fairseq's LM recipe: plain cross-entropy
: "${TAILR_GAMMA:=1e-7}" "${TAILR_MIN_WEIGHT:=0.2}"   # Ji et al. 2023, open-ended generation (WritingPrompts)
: "${DEGEN_MAX_UPDATE:=12500}" "${TRUNCATION_RATIO:=0.5}" "${TRUNCATION_WARMUP:=1000}"
: "${LFD_BETA:=1.0}" "${LFD_MLE_WEIGHT:=3.0}"
: "${UL_ALPHA:=1.0}"                          # Welleck et al. 2020's token-level setting on WikiText-103
: "${MIXCE_ETA:=0.1}"                         # the MixCE authors' best eta on WikiText (GPT-2)
: "${PREFIX_LEN:=50}" "${CONT_LEN:=100}"      # Welleck et al. 2020's continuation lengths
: "${DECODINGS:=greedy nucleus}" "${TOP_P:=0.9}"
: "${CONTEXT_WINDOW:=400}"                    # fairseq-eval-lm as in fairseq's README
: "${GEN_BATCH:=64}" "${LOG_INTERVAL:=100}"
: "${FP16:=1}"
init_devices
: "${UPDATE_FREQ:=$(per_gpu_update_freq "$GPU_STEPS")}"

BIN=$WORKDIR/data-bin
TRAIN_ARGS=("$BIN" --arch transformer_lm --share-decoder-input-output-embed ${ARCH_ARGS[@]+"${ARCH_ARGS[@]}"}
    --dropout 0.1 --optimizer adam --adam-betas "(0.9, 0.98)" --weight-decay 0.01 --clip-norm 0.0
    --lr "$LR" --lr-scheduler inverse_sqrt --warmup-updates "$WARMUP" --warmup-init-lr 1e-07
    --tokens-per-sample "$TOKENS_PER_SAMPLE" --sample-break-mode none
    --max-tokens "$MAX_TOKENS" --update-freq "$UPDATE_FREQ"
    --no-epoch-checkpoints --log-interval "$LOG_INTERVAL")

stage_data() {
    local archive=$WORKDIR/download/wikitext-103-v1.zip
    if [ "$MODE" = smoke ]; then
        common_py smoke_data.py wikitext103 "$archive"
    else
        # shellcheck disable=SC2086  # a list of fallback addresses
        common_py fetch.py download "$archive" $WIKITEXT_URLS
    fi
    common_py fetch.py extract "$archive" "$WORKDIR/orig"
    "$PYTHON" "$HERE/prefixes.py" make "$WORKDIR/orig/wikitext-103/wiki.test.tokens" "$WORKDIR/prefixes" \
        --prefix-len "$PREFIX_LEN" --cont-len "$CONT_LEN"
}

stage_preprocess() {
    # WikiText-103 is already tokenized (word level, <unk> for rare words), as fairseq
    # uses it. The second test prefix binarizes the prefixes with the same dictionary
    # as split "test1".
    local text=$WORKDIR/orig/wikitext-103
    fairseq preprocess --only-source --trainpref "$text/wiki.train.tokens" \
        --validpref "$text/wiki.valid.tokens" --testpref "$text/wiki.test.tokens,$WORKDIR/prefixes/prefix.tokens" \
        --destdir "$BIN" --workers "$NUM_WORKERS"
}

stage_train_mle() { train_system mle language_modeling "${TRAIN_ARGS[@]}" --max-update "$MAX_UPDATE"; }
stage_train_tailr() { train_system tailr language_modeling "${TRAIN_ARGS[@]}" --max-update "$MAX_UPDATE"; }
stage_train_degenerative() {
    train_system degenerative language_modeling "${TRAIN_ARGS[@]}" --max-update "$DEGEN_MAX_UPDATE"
}
stage_train_lfd() { train_system lfd language_modeling_lfd "${TRAIN_ARGS[@]}" --max-update "$MAX_UPDATE"; }

stage_train_unlikelihood() { train_system unlikelihood language_modeling "${TRAIN_ARGS[@]}" --max-update "$MAX_UPDATE"; }
stage_train_loss_truncation() { train_system loss_truncation language_modeling "${TRAIN_ARGS[@]}" --max-update "$MAX_UPDATE"; }
stage_train_mixce() { train_system mixce language_modeling "${TRAIN_ARGS[@]}" --max-update "$MAX_UPDATE"; }
stage_train_error_norm_truncation() { train_system error_norm_truncation language_modeling "${TRAIN_ARGS[@]}" --max-update "$MAX_UPDATE"; }

stage_generate() {
    local s d total=$((PREFIX_LEN + CONT_LEN))
    mkdir -p "$WORKDIR/cont" "$WORKDIR/eval"
    for s in $SYSTEMS; do
        for d in $DECODINGS; do
            decoding_args "$d"
            # Exactly CONT_LEN new tokens after the forced prefix: end of sentence is
            # blocked before, and generation stops at, PREFIX_LEN + CONT_LEN tokens.
            generate "$WORKDIR/gen/$s-$d.txt" "$BIN" --task language_modeling --gen-subset test1 \
                --path "$CKPT/$s/checkpoint_best.pt" --sample-break-mode eos \
                --tokens-per-sample "$TOKENS_PER_SAMPLE" --max-len-a 0 --max-len-b "$total" \
                --min-len "$total" --batch-size "$GEN_BATCH" "${DECODE_ARGS[@]}"
            "$PYTHON" "$HERE/prefixes.py" cut "$WORKDIR/gen/$s-$d.txt" "$WORKDIR/prefixes/continuation.ref" \
                "$WORKDIR/cont/$s-$d.txt" --prefix-len "$PREFIX_LEN"
        done
        [ -f "$WORKDIR/eval/$s.log" ] || fairseq eval_lm "$BIN" --user-dir "$USER_DIR" --gen-subset test \
            --path "$CKPT/$s/checkpoint_best.pt" --batch-size 2 --tokens-per-sample "$TOKENS_PER_SAMPLE" \
            --context-window "$CONTEXT_WINDOW" --required-batch-size-multiple 1 \
            ${DEVICE_ARGS[@]+"${DEVICE_ARGS[@]}"} > "$WORKDIR/eval/$s.log.part" 2>&1
        [ -f "$WORKDIR/eval/$s.log" ] || mv "$WORKDIR/eval/$s.log.part" "$WORKDIR/eval/$s.log"
        grep -h "Perplexity" "$WORKDIR/eval/$s.log" | tail -n 1
    done
}

stage_score() {
    local s d files=() ppl=()
    for s in $SYSTEMS; do
        for d in $DECODINGS; do files+=("$WORKDIR/cont/$s-$d.txt"); done
        ppl+=(--eval-lm "$s=$WORKDIR/eval/$s.log")
    done
    # Word-level text: no further tokenization for BLEU; wrep against the human continuation.
    divgen_score "${files[@]}" --tokenize none --json "$WORKDIR/cont/divgen-score.json"
    common_py collect_scores.py "$WORKDIR/scores" --divgen "$WORKDIR/cont/divgen-score.json" "${ppl[@]}"
}

run_stages data preprocess train_mle train_tailr train_degenerative train_lfd \
    train_unlikelihood train_loss_truncation train_mixce train_error_norm_truncation generate score
