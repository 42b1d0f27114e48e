"""pocketrec.runtime: the on-device side. :class:`Recommender` is what an app embeds.

Importing it never imports TensorFlow: the step model runs on ``ai_edge_litert`` or
``tflite_runtime`` (``tensorflow.lite`` only as a last resort, when TensorFlow is installed).
"""

from pocketrec.core.errors import BundleError, TitlesUnavailableError
from pocketrec.runtime.feedback import DEFAULT_DEMOTION
from pocketrec.runtime.ranking import Ranking
from pocketrec.runtime.recommender import Recommender
from pocketrec.runtime.results import Recommendations, TitledRecommendations

__all__ = [
    "DEFAULT_DEMOTION",
    "BundleError",
    "Ranking",
    "Recommendations",
    "Recommender",
    "TitledRecommendations",
    "TitlesUnavailableError",
]
