"""Read hypotheses and references from fairseq-generate output or plain text files."""
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Tuple


def read_generate_output(path: Path, all_nbest: bool = False, detok: bool = False) -> Tuple[List[str], Optional[List[str]]]:
    """Hypotheses (and references, from T- lines) of a fairseq-generate output.

    Lines may come in any order; they are sorted by sentence id. With ``--nbest``
    > 1, fairseq prints a sentence's hypotheses best first: by default only the
    first is kept; ``all_nbest`` keeps them all (each paired with its sentence's
    reference). ``detok`` reads the D- (detokenized) lines instead of H-.
    """
    hyp_tag = "D" if detok else "H"
    hyps: Dict[int, List[str]] = defaultdict(list)
    refs: Dict[int, str] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            tag, _, rest = line.partition("-")
            if tag not in (hyp_tag, "T") or "\t" not in rest:
                continue
            sid, _, payload = rest.partition("\t")
            if not sid.isdigit():
                continue
            if tag == "T":
                refs[int(sid)] = payload
            else:
                _score, _, text = payload.partition("\t")
                hyps[int(sid)].append(text)
    if not hyps:
        raise ValueError(f"{path}: no {hyp_tag}- lines; is this fairseq-generate output?")
    out_h, out_r = [], []
    for sid in sorted(hyps):
        chosen = hyps[sid] if all_nbest else hyps[sid][:1]
        out_h.extend(chosen)
        out_r.extend([refs.get(sid)] * len(chosen))
    if any(r is None for r in out_r):
        return out_h, None
    return out_h, out_r


def read_lines(path: Path) -> List[str]:
    """One text per line."""
    return Path(path).read_text(encoding="utf-8").splitlines()
