#!/usr/bin/env bash
# IWSLT14 German->English: MLE, TaiLr, LFD and the baselines (unlikelihood, loss truncation,
# MixCE, error norm truncation) with transformer_iwslt_de_en (README.md).
#   bash examples/translation/run.sh              # full run (downloads IWSLT14)
#   SMOKE=1 bash examples/translation/run.sh      # every stage on a tiny local corpus
# Stages: data preprocess train_mle train_tailr train_degenerative train_lfd
#   train_unlikelihood train_loss_truncation train_mixce train_error_norm_truncation generate score
set -euo pipefail
RECIPE=translation
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

source "$HERE/../common/recipe.sh"

ARCH_ARGS=()
if [ "$MODE" = smoke ]; then
    # Same flags as the full run; only sizes change.
    ARCH_ARGS=("${SMOKE_SEQ2SEQ_ARCH[@]}")
    : "${SPM_VOCAB:=300}" "${MAX_TOKENS:=1000}" "${LR:=3e-3}" "${WARMUP:=20}"
    : "${MAX_EPOCH:=4}" "${DEGEN_MAX_EPOCH:=2}" "${TRUNCATION_WARMUP:=5}" "${LOG_INTERVAL:=10}"
    : "${LT_MIN_COUNT:=100}" "${LT_RECOMPUTE:=100}"
    : "${WITH_BASELINES:=0}"   # CI's smoke run: SYSTEMS="... unlikelihood ..." to include them
fi
: "${WITH_BASELINES:=1}"
: "${IWSLT14_URL:=http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz}"
: "${SPM_VOCAB:=10000}"          # fairseq's script learns 10000 joint BPE codes
: "${MAX_TOKENS:=4096}" "${UPDATE_FREQ:=1}"
: "${LR:=3e-4}" "${WARMUP:=4000}" "${SEED:=42}"   # the TaiLr authors' IWSLT14 scripts
: "${MAX_EPOCH:=80}" "${MAX_UPDATE:=0}"          # 80 epochs as the TaiLr authors; 0 = no update limit
: "${LABEL_SMOOTHING:=0.1}"
: "${TAILR_GAMMA:=0.1}" "${TAILR_MIN_WEIGHT:=0.3}"          # Ji et al. 2023, IWSLT14
: "${DEGEN_MAX_EPOCH:=20}" "${TRUNCATION_RATIO:=0.5}" "${TRUNCATION_WARMUP:=1000}"
: "${LFD_BETA:=1.0}" "${LFD_MLE_WEIGHT:=3.0}"
: "${BEAM:=5}" "${GEN_BATCH:=128}" "${LOG_INTERVAL:=100}"
: "${FP16:=0}"   # the authors' IWSLT14 TaiLr runs are fp32; from scratch TaiLr overflows in fp16
init_devices

BIN=$WORKDIR/data-bin
TRAIN_ARGS=("$BIN" --source-lang de --target-lang en
    --arch transformer_iwslt_de_en --share-decoder-input-output-embed ${ARCH_ARGS[@]+"${ARCH_ARGS[@]}"}
    --optimizer adam --adam-betas "(0.9, 0.98)" --clip-norm 0.0
    --lr "$LR" --lr-scheduler inverse_sqrt --warmup-updates "$WARMUP"
    --dropout 0.3 --weight-decay 0.0001
    --max-tokens "$MAX_TOKENS" --update-freq "$UPDATE_FREQ" --max-update "$MAX_UPDATE"
    --no-epoch-checkpoints --log-interval "$LOG_INTERVAL")
# Checkpoint selection by validation BLEU, as fairseq's IWSLT14 recipe.
SELECT_ARGS=(--eval-bleu --eval-bleu-args '{"beam": 5, "max_len_a": 1.2, "max_len_b": 10}'
    --eval-bleu-remove-bpe sentencepiece --best-checkpoint-metric bleu --maximize-best-checkpoint-metric)

stage_data() {
    local archive=$WORKDIR/download/de-en.tgz
    if [ "$MODE" = smoke ]; then
        common_py smoke_data.py iwslt14 "$archive"
    else
        common_py fetch.py download "$archive" "$IWSLT14_URL"
    fi
    common_py fetch.py extract "$archive" "$WORKDIR/orig"
    "$PYTHON" "$HERE/prepare_iwslt14.py" "$WORKDIR/orig/de-en" "$WORKDIR/text"
}

stage_preprocess() {
    local spm=$WORKDIR/spm/iwslt14 split lang
    mkdir -p "$WORKDIR/spm" "$WORKDIR/pieces"
    common_py spm.py train "$spm" "$SPM_VOCAB" "$WORKDIR/text/train.de" "$WORKDIR/text/train.en"
    for split in train valid test; do
        for lang in de en; do
            common_py spm.py encode "$spm.model" "$WORKDIR/text/$split.$lang" "$WORKDIR/pieces/$split.$lang"
        done
    done
    fairseq preprocess --source-lang de --target-lang en \
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
    local s
    for s in $SYSTEMS; do
        generate "$WORKDIR/gen/$s.txt" "$BIN" --task translation --source-lang de --target-lang en \
            --path "$CKPT/$s/checkpoint_best.pt" --gen-subset test \
            --beam "$BEAM" --max-len-a 1.2 --max-len-b 10 --batch-size "$GEN_BATCH" \
            --post-process sentencepiece --scoring sacrebleu
    done
}

stage_score() {
    local s files=()
    for s in $SYSTEMS; do files+=("$WORKDIR/gen/$s.txt"); done
    # D- lines: detokenized (sentencepiece-decoded) hypotheses; sacrebleu's 13a BLEU.
    divgen_score "${files[@]}" --detok --json "$WORKDIR/gen/divgen-score.json"
    common_py collect_scores.py "$WORKDIR/scores" --divgen "$WORKDIR/gen/divgen-score.json"
}

run_stages data preprocess train_mle train_tailr train_degenerative train_lfd \
    train_unlikelihood train_loss_truncation train_mixce train_error_norm_truncation generate score
