"""Scoring metrics against values worked out by hand, and the BLEU metrics against
sacrebleu's own pairwise computation (definitions in scoring/metrics.py)."""

import json
import logging
import random
import tracemalloc

import pytest
import sacrebleu
from sacrebleu.metrics import BLEU

from fairseq_divgen.scoring import (
    corpus_bleu,
    distinct_and_seq_rep,
    distinct_n,
    length_stats,
    reference_set_bleu,
    rep_wrep,
    self_bleu,
    seq_rep_n,
    uniq,
)
from fairseq_divgen.scoring.cli import main as divgen_score
from fairseq_divgen.scoring.read import read_generate_output

HYPS = [["a", "b", "a", "b"], ["a", "c"]]
REFS = [["a", "b", "a", "c"], ["a", "c"]]


def test_distinct_n_by_hand():
    assert distinct_n(HYPS, 1) == 3 / 6  # a b a b a c -> {a, b, c}
    assert distinct_n(HYPS, 2) == 3 / 4  # ab ba ab ac -> {ab, ba, ac}
    assert distinct_n(HYPS, 5) == 0.0  # no 5-grams at all


def test_seq_rep_n_by_hand():
    assert seq_rep_n(HYPS, 2) == pytest.approx((1 - 2 / 3 + 0.0) / 2)  # ab ba ab | ac
    assert seq_rep_n(HYPS, 4) == 0.0  # one distinct 4-gram; 'a c' has none and is skipped


def test_distinct_and_seq_rep_in_one_pass_equal_their_definitions():
    rng = random.Random(4)
    hyps = [[rng.choice("abc") for _ in range(rng.randint(0, 9))] for _ in range(300)]
    distinct, seq_rep = distinct_and_seq_rep(hyps, 5)
    for n in range(1, 6):
        grams = [[tuple(h[i : i + n]) for i in range(len(h) - n + 1)] for h in hyps]
        total = sum(len(g) for g in grams)
        assert distinct[n - 1] == len({x for g in grams for x in g}) / total
        values = [1 - len(set(g)) / len(g) for g in grams if g]
        assert seq_rep[n - 1] == pytest.approx(sum(values) / len(values), abs=1e-15)
        assert (distinct_n(hyps, n), seq_rep_n(hyps, n)) == (distinct[n - 1], seq_rep[n - 1])


def test_rep_and_wrep_by_hand():
    # window 2: the 2nd 'a' (sees b a... -> [a, b]) and 2nd 'b' (sees [b, a]) repeat.
    assert rep_wrep(HYPS, 2)["rep"] == pytest.approx(2 / 6)
    assert rep_wrep(HYPS, 2)["wrep"] is None
    # window 1: each token sees only its predecessor: no repeat.
    assert rep_wrep(HYPS, 1)["rep"] == 0.0
    # with references, the repeated 'a' equals ref[2] = 'a'; the repeated 'b' != ref[3] = 'c'.
    assert rep_wrep(HYPS, 2, REFS)["wrep"] == pytest.approx(1 / 6)


def test_uniq_and_lengths():
    assert uniq(HYPS) == 3
    assert length_stats(HYPS) == {"mean_len": 3, "median_len": 3}


def test_self_bleu_is_leave_one_out_sentence_bleu():
    hyps = ["a b c d e", "a b c d f", "g h i j k", "a b x d e"]
    expected = sum(
        sacrebleu.sentence_bleu(h, hyps[:i] + hyps[i + 1 :], tokenize="none").score
        for i, h in enumerate(hyps)
    ) / len(hyps)
    assert self_bleu(hyps, tokenize="none") == pytest.approx(expected)
    assert self_bleu(["x y z w"] * 3, tokenize="none") == pytest.approx(100.0)
    assert self_bleu(["a b c d", "e f g h"], tokenize="none") == 0.0


def within_1e9(value):
    return pytest.approx(value, abs=1e-9, rel=0)


def pairwise_self_bleu(hyps, tokenize):
    """The definition, computed by sacrebleu: mean sentence BLEU of each hypothesis
    with every other hypothesis (by index) as a reference."""
    bleu = BLEU(tokenize=tokenize, effective_order=True)
    scores = [bleu.sentence_score(h, hyps[:i] + hyps[i + 1 :]).score for i, h in enumerate(hyps)]
    return sum(scores) / len(scores)


# Each line is there for a rule of sacrebleu's sentence BLEU that a one-pass
# computation could get wrong (word counts after 13a tokenization in brackets).
EDGE_CASES = [
    "the cat sat on the mat .",  # [7]
    "the cat sat on the mat .",  # [7] a duplicate: each copy is a reference of the other
    "the the the cat",  # [4] 'the' x3, the largest count, held by this line alone: it is
    # clipped at the others' largest, the 2 of the next line
    "the the dog",  # [3] the only length 3: the others' closest are 2 and 4, a tie that
    # goes to the shorter
    "go go go go",  # [4] 'go' x4 in two lines, a tie for the largest count: each is
    "go go go go now",  # [5] clipped at 4 by the other
    "a dog",  # [2]
    "dog",  # [1] one word
    "cat",  # [1] one word, same length: "dog" has a reference of its own length
    "",  # [0] empty: scores 0, and is a reference of length 0
    "   ",  # [0] whitespace only: empty as well
    "mat. the cat, on it",  # 13a splits '.' and ',' from the words: [7], [5] with 'none'
    "a b c d e f g h i j k",  # [11] the only long line: its closest other length is 7
]


@pytest.mark.parametrize("tokenize", ["13a", "none"])
def test_self_bleu_equals_sacrebleu_pairwise_with_ties_duplicates_empty_and_one_word_lines(
    tokenize,
):
    expected = pairwise_self_bleu(EDGE_CASES, tokenize)
    assert self_bleu(EDGE_CASES, tokenize=tokenize) == within_1e9(expected)
    # and on every subset that leaves one line out, so that no line's error can
    # hide in the mean of the others
    for i in range(len(EDGE_CASES)):
        subset = EDGE_CASES[:i] + EDGE_CASES[i + 1 :]
        expected = pairwise_self_bleu(subset, tokenize)
        assert self_bleu(subset, tokenize=tokenize) == within_1e9(expected)


@pytest.mark.parametrize("tokenize", ["13a", "none"])
def test_self_bleu_reference_length_is_the_closest_other_length_shorter_on_a_tie(tokenize):
    # The second line has length 3 and shares every n-gram with the first, so only
    # the brevity penalty differs: the others' lengths are 2 and 4, a tie, and
    # sacrebleu takes the shorter (2: no penalty). Taking 4, or its own length 3
    # (not left out), would give another number.
    hyps = ["x y", "x y z", "x y z w"]
    assert self_bleu(hyps, tokenize=tokenize) == within_1e9(pairwise_self_bleu(hyps, tokenize))
    # Only line of length 2 among lengths 2, 5, 5: its closest other length is 5
    # (brevity penalty exp(1 - 5/2)); with its own length counted, it would be 2.
    hyps = ["p q", "p q r s t", "p q r s u"]
    assert self_bleu(hyps, tokenize=tokenize) == within_1e9(pairwise_self_bleu(hyps, tokenize))


@pytest.mark.parametrize("tokenize", ["13a", "none"])
def test_self_bleu_equals_sacrebleu_pairwise_on_random_sentences_with_colliding_ngrams(tokenize):
    rng = random.Random(1)
    words = ["a", "b", "c", "d", "e", "f,", "g.", "H"]  # 8 words: n-grams collide and repeat
    hyps = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 10))) for _ in range(300)]
    hyps += hyps[:20]  # duplicates too
    assert self_bleu(hyps, tokenize=tokenize) == within_1e9(pairwise_self_bleu(hyps, tokenize))
    for k in range(2, 8):  # small sets, where one wrong hypothesis moves the mean a lot
        small = rng.sample(hyps, k)
        assert self_bleu(small, tokenize=tokenize) == within_1e9(
            pairwise_self_bleu(small, tokenize)
        )


def test_self_bleu_max_and_seed_select_a_seeded_subset(tmp_path):
    rng = random.Random(0)
    hyps = [" ".join(rng.choice("abcdefghij") for _ in range(rng.randint(1, 8))) for _ in range(40)]
    subset = random.Random(3).sample(hyps, 10)
    expected = pairwise_self_bleu(subset, "none")
    assert self_bleu(hyps, max_hyps=10, seed=3, tokenize="none") == within_1e9(expected)
    # the seed and the size matter, and the default is the whole set
    assert expected != pytest.approx(pairwise_self_bleu(random.Random(4).sample(hyps, 10), "none"))
    assert expected != pytest.approx(pairwise_self_bleu(hyps, "none"))
    assert self_bleu(hyps, tokenize="none") == within_1e9(pairwise_self_bleu(hyps, "none"))
    # the same through divgen-score's options
    (tmp_path / "h.txt").write_text("\n".join(hyps) + "\n")
    base = [
        "--hyps",
        str(tmp_path / "h.txt"),
        "--tokenize",
        "none",
        "--json",
        str(tmp_path / "s.json"),
    ]

    def cli_self_bleu(*extra):
        assert divgen_score(base + list(extra)) == 0
        return json.loads((tmp_path / "s.json").read_text())[str(tmp_path / "h.txt")]["self_bleu"]

    assert cli_self_bleu("--self-bleu-max", "10", "--seed", "3") == within_1e9(expected)
    assert cli_self_bleu() == within_1e9(pairwise_self_bleu(hyps, "none"))
    with pytest.raises(SystemExit):
        divgen_score(base + ["--self-bleu-max", "1"])


def test_divgen_score_default_is_every_hypothesis_not_the_old_500_subset(tmp_path):
    rng = random.Random(5)
    hyps = [
        " ".join(rng.choice("abcdefghijklmnop") for _ in range(rng.randint(1, 6)))
        for _ in range(600)
    ]
    (tmp_path / "h.txt").write_text("\n".join(hyps) + "\n")
    out = tmp_path / "s.json"
    assert (
        divgen_score(["--hyps", str(tmp_path / "h.txt"), "--tokenize", "none", "--json", str(out)])
        == 0
    )
    value = json.loads(out.read_text())[str(tmp_path / "h.txt")]["self_bleu"]
    assert value == self_bleu(hyps, tokenize="none")
    assert value != pytest.approx(self_bleu(hyps, max_hyps=500, tokenize="none"))


def test_reference_set_bleu_by_hand():
    refs = ["a b c d f", "a b c x e"]
    # 'a b c d e' against both references (clipped by the max count over references):
    # 1-grams 5/5, 2-grams ab bc cd (not de) 3/4, 3-grams abc bcd 2/3, 4-grams abcd 1/2;
    # closest reference length 5 -> no brevity penalty.
    first = 100 * (1 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25
    assert reference_set_bleu(["a b c d e"], refs, tokenize="none") == pytest.approx(first)
    # a hypothesis without a single matching word scores 0; the result is the mean.
    both = reference_set_bleu(["a b c d e", "q r s t"], refs, tokenize="none")
    assert both == pytest.approx(first / 2)
    assert reference_set_bleu(["x y z w"], ["q q", "x y z w"], tokenize="none") == pytest.approx(
        100
    )


WORDS = "a b c d e f, g. H".split()


def random_texts(rng, n, words=WORDS):
    return [" ".join(rng.choice(words) for _ in range(rng.randint(0, 9))) for _ in range(n)]


@pytest.mark.parametrize("tokenize", ["13a", "none"])
def test_reference_set_bleu_equals_sacrebleu_sentence_bleu_against_all_references(tokenize):
    rng = random.Random(2)
    hyps = random_texts(rng, 200) + ["", "a", "b"]
    refs = random_texts(rng, 150) + ["", "a"]
    bleu = BLEU(tokenize=tokenize, effective_order=True)
    expected = sum(bleu.sentence_score(h, refs).score for h in hyps) / len(hyps)
    assert reference_set_bleu(hyps, refs, tokenize=tokenize) == within_1e9(expected)
    subset = random.Random(7).sample(hyps, 50)
    expected = sum(bleu.sentence_score(h, refs).score for h in subset) / len(subset)
    got = reference_set_bleu(hyps, refs, max_hyps=50, seed=7, tokenize=tokenize)
    assert got == within_1e9(expected)


@pytest.mark.parametrize("tokenize", ["13a", "none"])
def test_corpus_bleu_equals_sacrebleu_corpus_bleu(tokenize):
    rng = random.Random(3)
    hyps, refs = random_texts(rng, 300), random_texts(rng, 300)
    hyps[:3], refs[3:6] = ["", "a", "   "], ["", "b", "a a"]  # empty and one-word lines
    expected = sacrebleu.corpus_bleu(hyps, [refs], tokenize=tokenize).score
    assert corpus_bleu(hyps, refs, tokenize) == within_1e9(expected)
    # a tiny corpus whose higher orders have no n-gram at all (no effective order here)
    expected = sacrebleu.corpus_bleu(["a b", "c"], [["a b", "c d"]], tokenize=tokenize).score
    assert corpus_bleu(["a b", "c"], ["a b", "c d"], tokenize) == within_1e9(expected)


def test_corpus_bleu_warns_like_sacrebleu_about_tokenized_periods(caplog):
    hyps = ["a b ."] * 100
    with caplog.at_level(logging.WARNING, logger="sacrebleu"):
        sacrebleu.corpus_bleu(hyps, [hyps])
    expected = [r.getMessage() for r in caplog.records]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sacrebleu"):
        corpus_bleu(hyps, hyps)
    assert expected and [r.getMessage() for r in caplog.records] == expected


GENERATE_OUTPUT = """S-1\tw1 w2
T-1\tv2 v1
H-1\t-0.5\tv2 v1
D-1\t-0.5\tv2 v1
H-1\t-0.9\tv2 v2
S-0\tw3
H-0\t-0.1\tv3
T-0\tv3
P-0\t-0.1 -0.1
Generate test with beam=2: BLEU4 = 0.00
"""


def test_reads_generate_output_in_any_order_with_nbest(tmp_path):
    path = tmp_path / "gen.txt"
    path.write_text(GENERATE_OUTPUT)
    assert read_generate_output(path) == (["v3", "v2 v1"], ["v3", "v2 v1"])
    assert read_generate_output(path, all_nbest=True) == (
        ["v3", "v2 v1", "v2 v2"],
        ["v3", "v2 v1", "v2 v1"],
    )


def test_cli_on_plain_text_writes_json(tmp_path, capsys):
    (tmp_path / "h.txt").write_text("a b a b\na c\n")
    (tmp_path / "r.txt").write_text("a b a c\na c\n")
    out = tmp_path / "scores.json"
    assert (
        divgen_score(
            [
                "--hyps",
                str(tmp_path / "h.txt"),
                "--refs",
                str(tmp_path / "r.txt"),
                "--window",
                "2",
                "--tokenize",
                "none",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    row = json.loads(out.read_text())[str(tmp_path / "h.txt")]
    assert row["distinct_2"] == 0.75 and row["rep_2"] == pytest.approx(1 / 3)
    assert row["wrep_2"] == pytest.approx(1 / 6) and row["uniq"] == 3
    assert "| system |" in capsys.readouterr().out


def test_counts_are_exact_with_more_than_65536_distinct_tokens():
    # Above 2**16 distinct tokens the 1-grams are sorted as 32-bit ids, not 16-bit ones,
    # and V**4 passes 2**64: each order's n-grams must still be told apart exactly.
    rng = random.Random(6)
    words = [f"t{i}" for i in range(70000)]
    rng.shuffle(words)
    base = [words[i : i + 20] for i in range(0, len(words), 20)]  # 3500 lines, every word once
    toks = base + [rng.choice(base) for _ in range(300)]  # duplicated lines
    toks += [rng.choice(base)[:10] + rng.choice(base)[10:] for _ in range(300)]  # shared halves
    distinct, seq_rep = distinct_and_seq_rep(toks, 4)
    for n in range(1, 5):
        grams = [tuple(t[i : i + n]) for t in toks for i in range(len(t) - n + 1)]
        assert distinct[n - 1] == len(set(grams)) / len(grams)
    hyps = [" ".join(t) for t in toks]
    refs = [" ".join(t[::-1]) if i % 3 else h for i, (t, h) in enumerate(zip(toks, hyps))]
    expected = sacrebleu.corpus_bleu(hyps, [refs], tokenize="none").score
    assert corpus_bleu(hyps, refs, "none") == within_1e9(expected)


def test_scoring_memory_is_a_few_integers_per_token_not_python_objects_per_ngram():
    # Counting keeps token ids and n-gram numbers in numpy arrays; a Python object per
    # n-gram occurrence (a set entry, a tuple) alone costs more than this bound.
    from fairseq_divgen.scoring.cli import score_texts

    rng = random.Random(8)
    words = [f"w{i}" for i in range(3000)]
    hyps = [" ".join(rng.choices(words, k=rng.randint(10, 30))) for _ in range(5000)]
    refs = [" ".join(rng.choices(words, k=rng.randint(10, 30))) for _ in range(5000)]
    score_texts(hyps[:3], refs[:3], tokenize="none")  # imports done before measuring
    tracemalloc.start()
    try:
        score_texts(hyps, refs, tokenize="none")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    n_tokens = sum(len(t.split()) for t in hyps + refs)
    assert peak / n_tokens < 120  # bytes per token; about 65 here, 300 when counting in sets
