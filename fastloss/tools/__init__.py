"""Tooling, not runtime: the ``fastloss`` command (``info``, ``demo``, ``bench``) and what it runs.

* ``cli``       -- the command line (``fastloss ...`` / ``python -m fastloss ...``);
* ``benchmark`` -- the ``fastloss bench`` sweep (every peer checked, then timed);
* ``bandwidth`` -- this machine's streaming bandwidth, the yardstick for the sweep;
* ``demo``      -- ``fastloss demo``: small models trained on scikit-learn's bundled data.

Nothing here is imported by ``import fastloss``.
"""
