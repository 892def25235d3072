"""Every picture detkit makes, in one place: boxes on images and image grids (``boxes``), anchors as a matcher sees
them (``anchors``), the evaluation pictures (``evaluation``) and the study plots (``studies``).

Imports nothing of detkit but ``detkit.ops`` (the callers compute; these modules draw), so any layer may use it.
"""
