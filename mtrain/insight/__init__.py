"""Pictures and pages about a model: attention, alignments, plots, the run report."""
