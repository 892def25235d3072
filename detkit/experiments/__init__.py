"""The textbook claims about detectors, measured: each study trains (or evaluates) ordinary config overrides of the
shipped shapes recipes, one process per arm, and writes a Markdown table, a PNG plot and the raw numbers.

``tools/experiment.py <study>`` runs one; ``detkit.experiments.studies`` defines them, ``runner`` runs their arms,
``arm`` is the process of one arm, ``report`` and ``plots`` write the results.
"""
