#!/usr/bin/env bash
# DailyDialog response generation: MLE, TaiLr, LFD and the baselines (unlikelihood, loss
# truncation, MixCE, error norm truncation) transformers (README.md).
#   bash examples/dialogue/run.sh              # full run (downloads DailyDialog)
#   SMOKE=1 bash examples/dialogue/run.sh      # every stage on a tiny local corpus
# Stages: data preprocess train_mle train_tailr train_degenerative train_lfd
#   train_unlikelihood train_loss_truncation train_mixce train_error_norm_truncation generate score
set -euo pipefail
RECIPE=dialogue
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

source "$HERE/../common/recipe.sh"

ARCH_ARGS=()
if [ "$MODE" = smoke ]; then
    ARCH_ARGS=("${SMOKE_SEQ2SEQ_ARCH[@]}")
    : "${SPM_VOCAB:=200}" "${MAX_TOKENS:=1500}" "${LR:=5e-3}" "${WARMUP:=10}"
    : "${MAX_EPOCH:=4}" "${DEGEN_MAX_EPOCH:=2}" "${TRUNCATION_WARMUP:=5}" "${LOG_INTERVAL:=10}"
    : "${LT_MIN_COUNT:=100}" "${LT_RECOMPUTE:=100}"
    : "${WITH_BASELINES:=0}"   # CI's smoke run: SYSTEMS="... unlikelihood ..." to include them
fi
: "${WITH_BASELINES:=1}"
: "${DAILYDIALOG_URL:=http://yanran.li/files/ijcnlp_dailydialog.zip}"
: "${CONTEXT_TURNS:=3}" "${SPM_VOCAB:=8000}"
: "${MAX_TOKENS:=4096}" "${UPDATE_FREQ:=1}" "${LR:=5e-4}" "${WARMUP:=4000}"
: "${MAX_EPOCH:=30}" "${MAX_UPDATE:=0}" "${LABEL_SMOOTHING:=0.1}"
: "${TAILR_GAMMA:=0.1}" "${TAILR_MIN_WEIGHT:=0.3}"   # Ji et al. 2023's from-scratch transformer setting
: "${DEGEN_MAX_EPOCH:=10}" "${TRUNCATION_RATIO:=0.5}" "${TRUNCATION_WARMUP:=1000}"
: "${LFD_BETA:=1.0}" "${LFD_MLE_WEIGHT:=3.0}"
: "${DECODINGS:=greedy}" "${TOP_P:=0.9}" "${MAX_LEN:=64}"
: "${GEN_BATCH:=128}" "${LOG_INTERVAL:=100}"
: "${FP16:=0}"
init_devices

BIN=$WORKDIR/data-bin
LANG_ARGS=(--source-lang context --target-lang response)
TRAIN_ARGS=("$BIN" "${LANG_ARGS[@]}" --arch transformer_iwslt_de_en --share-all-embeddings
    ${ARCH_ARGS[@]+"${ARCH_ARGS[@]}"}
    --optimizer adam --adam-betas "(0.9, 0.98)" --clip-norm 0.0
    --lr "$LR" --lr-scheduler inverse_sqrt --warmup-updates "$WARMUP"
    --dropout 0.3 --weight-decay 0.0001 --max-tokens "$MAX_TOKENS" --update-freq "$UPDATE_FREQ"
    --max-update "$MAX_UPDATE" --no-epoch-checkpoints --log-interval "$LOG_INTERVAL")

stage_data() {
    local archive=$WORKDIR/download/ijcnlp_dailydialog.zip
    if [ "$MODE" = smoke ]; then
        common_py smoke_data.py dailydialog "$archive"
    else
        common_py fetch.py download "$archive" "$DAILYDIALOG_URL"
    fi
    common_py fetch.py extract "$archive" "$WORKDIR/orig"
    "$PYTHON" "$HERE/prepare_dailydialog.py" "$WORKDIR/orig" "$WORKDIR/text" --context-turns "$CONTEXT_TURNS"
}

stage_preprocess() {
    local spm=$WORKDIR/spm/dailydialog split side
    mkdir -p "$WORKDIR/spm" "$WORKDIR/pieces"
    # __eou__ (the turn separator of the contexts) stays one symbol
    common_py spm.py train "$spm" "$SPM_VOCAB" "$WORKDIR/text/train.context" "$WORKDIR/text/train.response" \
        --user-symbol __eou__
    for split in train valid test; do
        for side in context response; do
            common_py spm.py encode "$spm.model" "$WORKDIR/text/$split.$side" "$WORKDIR/pieces/$split.$side"
        done
    done
    fairseq preprocess "${LANG_ARGS[@]}" --joined-dictionary \
        --trainpref "$WORKDIR/pieces/train" --validpref "$WORKDIR/pieces/valid" \
        --testpref "$WORKDIR/pieces/test" --destdir "$BIN" --workers "$NUM_WORKERS"
}

stage_train_mle() { train_system mle translation "${TRAIN_ARGS[@]}" --max-epoch "$MAX_EPOCH"; }
stage_train_tailr() { train_system tailr translation "${TRAIN_ARGS[@]}" --max-epoch "$MAX_EPOCH"; }
stage_train_degenerative() { train_system degenerative translation "${TRAIN_ARGS[@]}" --max-epoch "$DEGEN_MAX_EPOCH"; }
stage_train_lfd() { train_system lfd translation_lfd "${TRAIN_ARGS[@]}" --max-epoch "$MAX_EPOCH"; }

stage_train_unlikelihood() { train_system unlikelihood translation "${TRAIN_ARGS[@]}" --max-epoch "$MAX_EPOCH"; }
stage_train_loss_truncation() { train_system loss_truncation translation "${TRAIN_ARGS[@]}" --max-epoch "$MAX_EPOCH"; }
stage_train_mixce() { train_system mixce translation "${TRAIN_ARGS[@]}" --max-epoch "$MAX_EPOCH"; }
stage_train_error_norm_truncation() { train_system error_norm_truncation translation "${TRAIN_ARGS[@]}" --max-epoch "$MAX_EPOCH"; }

stage_generate() {
    local s d
    for s in $SYSTEMS; do
        for d in $DECODINGS; do
            decoding_args "$d"
            generate "$WORKDIR/gen/$s-$d.txt" "$BIN" --task translation "${LANG_ARGS[@]}" \
                --path "$CKPT/$s/checkpoint_best.pt" --gen-subset test --batch-size "$GEN_BATCH" \
                --max-len-a 0 --max-len-b "$MAX_LEN" --post-process sentencepiece "${DECODE_ARGS[@]}"
        done
    done
}

stage_score() {
    local s d files=()
    for s in $SYSTEMS; do
        for d in $DECODINGS; do files+=("$WORKDIR/gen/$s-$d.txt"); done
    done
    # D- lines: the responses as text; BLEU against the human response, distinct-n, self-BLEU.
    divgen_score "${files[@]}" --detok --json "$WORKDIR/gen/divgen-score.json"
    common_py collect_scores.py "$WORKDIR/scores" --divgen "$WORKDIR/gen/divgen-score.json"
}

run_stages data preprocess train_mle train_tailr train_degenerative train_lfd \
    train_unlikelihood train_loss_truncation train_mixce train_error_norm_truncation generate score
