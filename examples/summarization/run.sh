#!/usr/bin/env bash
# BART summarization (CNN-DM, XSum or Gigaword): MLE, TaiLr and LFD fine-tuning (README.md).
#   bash examples/summarization/run.sh                    # CNN-DM, bart.large, as fairseq's recipe
#   DATASET=gigaword bash examples/summarization/run.sh   # the TaiLr authors' setting, bart.base
#   SMOKE=1 bash examples/summarization/run.sh            # every stage on a tiny local corpus
# Stages: data preprocess train_mle train_tailr train_degenerative train_lfd generate score
set -euo pipefail
RECIPE=summarization
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${DATASET:=cnn_dm}"
source "$HERE/../common/recipe.sh"

ARCH_ARGS=()
if [ "$MODE" = smoke ]; then
    # A bart_base-architecture model, shrunk, "pretrained" in this run (see README).
    ARCH_ARGS=("${SMOKE_SEQ2SEQ_ARCH[@]}")
    : "${BART_SIZE:=base}" "${LR:=5e-3}" "${WARMUP:=2}" "${GPU_STEPS:=1}"
    : "${TOTAL_UPDATES:=30}" "${DEGEN_UPDATES:=12}" "${MAX_EPOCH:=5}" "${DEGEN_MAX_EPOCH:=2}"
    : "${GEN_BATCH:=16}" "${LOG_INTERVAL:=5}"
fi
case "$DATASET" in
    cnn_dm)  # fairseq's examples/bart/README.summarization.md (8 GPUs x update-freq 4)
        : "${DATA_URL:=https://cdn-datasets.huggingface.co/summarization/cnn_dm_v2.tgz}"
        : "${BART_SIZE:=large}" "${LR:=3e-05}" "${MAX_TOKENS:=2048}" "${GPU_STEPS:=32}"
        : "${SCHEDULER:=polynomial_decay}" "${TOTAL_UPDATES:=20000}" "${WARMUP:=500}" "${WEIGHT_DECAY:=0.01}"
        : "${DEGEN_UPDATES:=5000}"
        GEN_ARGS=(--beam 4 --lenpen 2.0 --max-len-a 0 --max-len-b 140 --min-len 55 --no-repeat-ngram-size 3) ;;
    xsum)    # fairseq: TOTAL_NUM_UPDATES=15000 UPDATE_FREQ=2; summarize.py --xsum-kwargs
        : "${DATA_URL:=https://cdn-datasets.huggingface.co/summarization/xsum.tar.gz}"
        : "${BART_SIZE:=large}" "${LR:=3e-05}" "${MAX_TOKENS:=2048}" "${GPU_STEPS:=16}"
        : "${SCHEDULER:=polynomial_decay}" "${TOTAL_UPDATES:=15000}" "${WARMUP:=500}" "${WEIGHT_DECAY:=0.01}"
        : "${DEGEN_UPDATES:=4000}"
        GEN_ARGS=(--beam 6 --lenpen 1.0 --max-len-a 0 --max-len-b 60 --min-len 10 --no-repeat-ngram-size 3) ;;
    gigaword)  # the TaiLr authors' examples/bart/summarization scripts (1 GPU)
        : "${DATA_URL:=https://drive.usercontent.google.com/download?id=1USoQ8lJgN8kAWnUnRrupMGrPMLlDVqlV&export=download&confirm=t}"
        : "${BART_SIZE:=base}" "${LR:=1e-4}" "${MAX_TOKENS:=8192}" "${GPU_STEPS:=1}"
        : "${SCHEDULER:=fixed}" "${MAX_EPOCH:=5}" "${WARMUP:=0}" "${WEIGHT_DECAY:=0.0}"
        : "${DEGEN_MAX_EPOCH:=1}"
        GEN_ARGS=(--beam 5 --lenpen 1.0 --no-repeat-ngram-size 3) ;;
    *) die "DATASET=$DATASET; choose cnn_dm, xsum or gigaword" ;;
esac
: "${BART_URL:=https://dl.fbaipublicfiles.com/fairseq/models/bart.$BART_SIZE.tar.gz}"
: "${GPT2_BPE_URL:=https://dl.fbaipublicfiles.com/fairseq/gpt2_bpe}"
: "${LABEL_SMOOTHING:=0.1}" "${SEED:=42}"
: "${TAILR_GAMMA:=0.8}" "${TAILR_MIN_WEIGHT:=0.2}"   # Ji et al. 2023, BART-base on Gigaword
: "${TRUNCATION_RATIO:=0.5}" "${TRUNCATION_WARMUP:=0}"   # from a pretrained model the ranking is meaningful at once
: "${LFD_BETA:=1.0}" "${LFD_MLE_WEIGHT:=3.0}"
: "${TOTAL_UPDATES:=0}" "${DEGEN_UPDATES:=0}" "${MAX_EPOCH:=0}" "${DEGEN_MAX_EPOCH:=0}"
: "${GEN_BATCH:=32}" "${LOG_INTERVAL:=100}"
: "${FP16:=1}"   # as fairseq's and the authors' BART recipes
init_devices
: "${UPDATE_FREQ:=$(per_gpu_update_freq "$GPU_STEPS")}"
: "${BART_DIR:=$WORKDIR/download/bart.$([ "$MODE" = smoke ] && echo smoke || echo "$BART_SIZE")}"
BPE_DIR=$WORKDIR/download/gpt2_bpe
BIN=$WORKDIR/data-bin
BPE_ARGS=(--bpe gpt2 --gpt2-encoder-json "$BPE_DIR/encoder.json" --gpt2-vocab-bpe "$BPE_DIR/vocab.bpe")

# schedule UPDATES EPOCHS: the learning-rate schedule and stopping rule of one run.
schedule() {
    if [ "$SCHEDULER" = polynomial_decay ]; then
        echo --lr-scheduler polynomial_decay --total-num-update "$1" --max-update "$1"
    else
        echo --lr-scheduler "$SCHEDULER" --max-epoch "$2"
    fi
}
FINETUNE_ARGS=("$BIN" --source-lang source --target-lang target --truncate-source
    --arch "bart_$BART_SIZE" ${ARCH_ARGS[@]+"${ARCH_ARGS[@]}"}
    --layernorm-embedding --share-all-embeddings --share-decoder-input-output-embed
    --finetune-from-model "$BART_DIR/model.pt" --required-batch-size-multiple 1
    --dropout 0.1 --attention-dropout 0.1 --weight-decay "$WEIGHT_DECAY"
    --optimizer adam --adam-betas "(0.9, 0.999)" --adam-eps 1e-08 --clip-norm 0.1
    --lr "$LR" --warmup-updates "$WARMUP" --max-tokens "$MAX_TOKENS" --update-freq "$UPDATE_FREQ"
    --skip-invalid-size-inputs-valid-test --find-unused-parameters
    --no-epoch-checkpoints --log-interval "$LOG_INTERVAL")

stage_data() {
    local archive=$WORKDIR/download/$DATASET-archive
    if [ "$MODE" = smoke ]; then
        common_py smoke_data.py "$DATASET" "$archive"
    else
        common_py fetch.py download "$archive" "$DATA_URL"
    fi
    common_py fetch.py extract "$archive" "$WORKDIR/orig"
    "$PYTHON" "$HERE/prepare_summarization.py" "$DATASET" "$WORKDIR/orig" "$WORKDIR/text"
    if [ "$MODE" = smoke ]; then
        # No download: GPT-2-format BPE files learned from the tiny corpus.
        "$PYTHON" "$HERE/gpt2_bpe.py" learn-tiny "$BPE_DIR" "$WORKDIR/text/train.source" "$WORKDIR/text/train.target"
    else
        common_py fetch.py download "$BPE_DIR/encoder.json" "$GPT2_BPE_URL/encoder.json"
        common_py fetch.py download "$BPE_DIR/vocab.bpe" "$GPT2_BPE_URL/vocab.bpe"
        if [ ! -f "$BART_DIR/model.pt" ]; then
            common_py fetch.py download "$WORKDIR/download/bart.$BART_SIZE.tar.gz" "$BART_URL"
            common_py fetch.py extract "$WORKDIR/download/bart.$BART_SIZE.tar.gz" "$WORKDIR/download"
        fi
    fi
}

# Smoke mode only: the pretrained model. A bart_base-architecture model (ARCH_ARGS
# shrink it) trained here for a few updates with fairseq's BART denoising task, so its
# embeddings carry <mask> like bart.base/bart.large and fine-tuning drops that row.
make_smoke_bart() {
    local split ext
    mkdir -p "$BART_DIR/denoising-bin"
    cp "$BPE_DIR/dict.txt" "$BART_DIR/dict.txt"
    # the denoising task reads monolingual DIR/{train,valid}: the binarized sources
    cp "$BPE_DIR/dict.txt" "$BART_DIR/denoising-bin/dict.txt"
    for split in train valid; do
        for ext in bin idx; do
            cp "$BIN/$split.source-target.source.$ext" "$BART_DIR/denoising-bin/$split.$ext"
        done
    done
    train "$BART_DIR/pretrain" "$BART_DIR/denoising-bin" --task denoising --arch bart_base "${SMOKE_SEQ2SEQ_ARCH[@]}" \
        --mask 0.3 --mask-length span-poisson --poisson-lambda 3.5 --replace-length 1 --rotate 0 \
        --tokens-per-sample 512 --sample-break-mode eos --criterion cross_entropy --optimizer adam --lr 1e-3 \
        --max-tokens 2048 --max-update 30 --no-epoch-checkpoints --log-interval 10
    cp "$BART_DIR/pretrain/checkpoint_last.pt" "$BART_DIR/model.pt"
}

stage_preprocess() {
    local split side inputs=() outputs=()
    [ -f "$BPE_DIR/dict.txt" ] || [ "$MODE" = smoke ] || cp "$BART_DIR/dict.txt" "$BPE_DIR/dict.txt"
    mkdir -p "$WORKDIR/bpe"
    for split in train valid test; do
        for side in source target; do
            inputs+=("$WORKDIR/text/$split.$side"); outputs+=("$WORKDIR/bpe/$split.$side")
        done
    done
    "$PYTHON" "$HERE/gpt2_bpe.py" encode "$BPE_DIR/encoder.json" "$BPE_DIR/vocab.bpe" \
        --inputs "${inputs[@]}" --outputs "${outputs[@]}" --workers "$NUM_WORKERS"
    fairseq preprocess --source-lang source --target-lang target \
        --trainpref "$WORKDIR/bpe/train" --validpref "$WORKDIR/bpe/valid" --testpref "$WORKDIR/bpe/test" \
        --destdir "$BIN" --srcdict "$BPE_DIR/dict.txt" --tgtdict "$BPE_DIR/dict.txt" --workers "$NUM_WORKERS"
    if [ "$MODE" = smoke ]; then make_smoke_bart; fi
}

stage_train_mle() { train_system mle translation "${FINETUNE_ARGS[@]}" $(schedule "$TOTAL_UPDATES" "$MAX_EPOCH"); }
stage_train_tailr() { train_system tailr translation "${FINETUNE_ARGS[@]}" $(schedule "$TOTAL_UPDATES" "$MAX_EPOCH"); }
stage_train_degenerative() {
    train_system degenerative translation "${FINETUNE_ARGS[@]}" $(schedule "$DEGEN_UPDATES" "$DEGEN_MAX_EPOCH")
}
stage_train_lfd() { train_system lfd translation_lfd "${FINETUNE_ARGS[@]}" $(schedule "$TOTAL_UPDATES" "$MAX_EPOCH"); }

stage_generate() {
    local s
    for s in $SYSTEMS; do
        generate "$WORKDIR/gen/$s.txt" "$BIN" --task translation --source-lang source --target-lang target \
            --truncate-source --path "$CKPT/$s/checkpoint_best.pt" --gen-subset test \
            --batch-size "$GEN_BATCH" "${GEN_ARGS[@]}" "${BPE_ARGS[@]}"
    done
}

stage_score() {
    local s files=() rouge=() rouge_rc=0
    for s in $SYSTEMS; do files+=("$WORKDIR/gen/$s.txt"); done
    divgen_score "${files[@]}" --detok --json "$WORKDIR/gen/divgen-score.json"
    rm -f "$WORKDIR/gen/rouge.json"
    "$PYTHON" "$HERE/rouge.py" "${files[@]}" --refs "$WORKDIR/text/test.target" \
        --json "$WORKDIR/gen/rouge.json" || rouge_rc=$?
    if [ -f "$WORKDIR/gen/rouge.json" ]; then rouge=(--extra "$WORKDIR/gen/rouge.json"); fi
    common_py collect_scores.py "$WORKDIR/scores" --divgen "$WORKDIR/gen/divgen-score.json" \
        ${rouge[@]+"${rouge[@]}"}
    if [ "$rouge_rc" != 0 ]; then
        echo "error: the score stage wrote $WORKDIR/scores.json WITHOUT ROUGE (see above)" >&2
        return 1
    fi
}

run_stages data preprocess train_mle train_tailr train_degenerative train_lfd generate score
