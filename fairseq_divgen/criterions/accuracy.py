"""--report-accuracy for this package's criterions, as fairseq's LS-CE logs it."""


def add_accuracy(criterion, model, net_output, sample, logging_output) -> None:
    """Add ``n_correct`` and ``total`` (argmax of the main model vs target, non-pad)."""
    n_correct, total = criterion.compute_accuracy(model, net_output, sample)
    logging_output["n_correct"] = n_correct.data
    logging_output["total"] = total.data
