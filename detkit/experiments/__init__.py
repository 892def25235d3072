"""The textbook claims about detectors, measured: each study trains (or evaluates) ordinary config overrides of the
shipped shapes recipes, one process per arm, and writes a Markdown table, a PNG plot and the raw numbers.

``tools/experiment.py <study>`` runs one. ``studies`` defines them (``background_weight`` computes the weight one arm
needs, ``config_values`` reads the shipped configs), ``runner`` runs their arms, ``arm`` is the process of one arm,
``report``, ``plots`` and ``provenance`` write the results and what produced them.
"""
