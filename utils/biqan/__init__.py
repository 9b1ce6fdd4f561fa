"""Steps 2 to 4: quality labels, the BIQAN network's data, training, evaluation and report."""
