"""pointseg: land-cover segmentation from sparse point labels.

Importing the package imports nothing heavy (no torch): the command line answers ``--help``
and reports a bad config before the training stack is loaded.
"""

__version__ = "0.1.0"
