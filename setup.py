"""Install fairseq-divgen: TaiLr and LFD criterions and tasks for fairseq."""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent


def _version() -> str:
    for line in (ROOT / "fairseq_divgen" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=")[1].strip().strip('"')
    raise RuntimeError("no __version__ in fairseq_divgen/__init__.py")


# fairseq_divgen.hf (Python >= 3.10, as transformers 5). Its tests pass with transformers
# 4.48.3, 4.50.3, 4.57.6 and 5.25.0; with 4.46.3 (the first with compute_loss_func) two
# accumulated micro-batches do not update as one larger batch. Not TRL: it pulls in
# datasets, whose pyarrow needs NumPy 2, which fairseq cannot import.
HF = [
    'transformers>=4.48; python_version >= "3.10"',
    'accelerate>=0.26; python_version >= "3.10"',
]


setup(
    name="fairseq-divgen",
    version=_version(),
    description="TaiLr and learning-from-a-degenerative-model (LFD) for fairseq and transformers",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.8",
    packages=find_packages(include=["fairseq_divgen", "fairseq_divgen.*"]),
    install_requires=[
        # fairseq 0.12.2 fails at import on Python >= 3.11 (mutable dataclass
        # defaults); fairseq-fixed is fairseq main with that fix, same import name.
        'fairseq==0.12.2; python_version < "3.11"',
        'fairseq-fixed>=0.12.3.1; python_version >= "3.11"',
        "torch",
        "sacrebleu>=2.0",
        "sentencepiece",
        # fairseq 0.12 uses np.compat.long (language modeling, token blocks), which
        # NumPy 2.0 removed.
        "numpy<2",
    ],
    extras_require={
        # ROUGE for the summarization recipe (examples/summarization)
        "rouge": ["rouge-score"],
        # the demo's quality-vs-diversity plot
        "plot": ["matplotlib>=3.5"],
        # the transformers adapter, fairseq_divgen.hf (docs/transformers.md)
        "hf": HF,
        # rouge-score is light (pure Python): CI runs the summarization recipe's ROUGE; the
        # hf tests need transformers and accelerate (they skip without them); pytest-xdist
        # runs the suite on two workers; ruff lints and formats (python3 scripts/dev.py lint)
        "test": ["pytest>=7", "pytest-xdist", "rouge-score", "hypothesis", "ruff", *HF],
    },
    entry_points={
        "console_scripts": [
            "divgen-score = fairseq_divgen.scoring.cli:main",
            "divgen-demo = fairseq_divgen.demo:main",
        ]
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
