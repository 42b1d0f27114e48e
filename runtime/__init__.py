"""pocketrec.runtime: the on-device side. :class:`Recommender` is what an app embeds.

Importing it never imports TensorFlow: the step model runs on ``ai_edge_litert`` or
``tflite_runtime`` (``tensorflow.lite`` only as a last resort, when TensorFlow is installed).
"""

from pocketrec.core.errors import BundleError
from pocketrec.runtime.feedback import DEFAULT_DEMOTION
from pocketrec.runtime.ranking import Ranking
from pocketrec.runtime.recommender import Recommender

__all__ = ["DEFAULT_DEMOTION", "BundleError", "Ranking", "Recommender"]
