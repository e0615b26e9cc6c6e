"""--report-accuracy for this package's criterions, as fairseq's LS-CE logs it."""


def add_accuracy(criterion, model, net_output, sample, logging_output, counted=None) -> None:
    """Add ``n_correct`` and ``total`` (argmax of the main model vs target, non-pad);
    ``counted``: ``(n_correct, target)`` of a fused loss, which counted the argmax
    matches chunk by chunk (no second projection)."""
    if counted is not None:
        n_correct, target = counted
        logging_output["n_correct"] = n_correct.detach().long()
        logging_output["total"] = target.ne(criterion.padding_idx).sum().data
        return
    n_correct, total = criterion.compute_accuracy(model, net_output, sample)
    logging_output["n_correct"] = n_correct.data
    logging_output["total"] = total.data
