"""The built-in world: synthetic curves, CurveNet, toy models, training any model on them.

Importing it registers its named data sets (``curves``) with the engine's image source.
"""

import mti_lightning.world.sources  # noqa: F401
