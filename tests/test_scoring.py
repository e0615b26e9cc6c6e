"""Scoring metrics against values worked out by hand (definitions in scoring/metrics.py)."""
import json

import pytest
import sacrebleu

from fairseq_divgen.scoring import (
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


def test_self_bleu_subset_is_seeded():
    hyps = [f"w{i} w{i + 1} w{i + 2} w{(i * 7) % 13}" for i in range(40)]
    a = self_bleu(hyps, max_hyps=10, seed=3, tokenize="none")
    assert a == self_bleu(hyps, max_hyps=10, seed=3, tokenize="none")


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
    assert reference_set_bleu(["x y z w"], ["q q", "x y z w"], tokenize="none") == pytest.approx(100)


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
    assert divgen_score(["--hyps", str(tmp_path / "h.txt"), "--refs", str(tmp_path / "r.txt"),
                         "--window", "2", "--tokenize", "none", "--json", str(out)]) == 0  # fmt: skip
    row = json.loads(out.read_text())[str(tmp_path / "h.txt")]
    assert row["distinct_2"] == 0.75 and row["rep_2"] == pytest.approx(1 / 3)
    assert row["wrep_2"] == pytest.approx(1 / 6) and row["uniq"] == 3
    assert "| system |" in capsys.readouterr().out
