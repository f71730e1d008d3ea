"""The frozen reference π_ref and its rollouts, in one place.

rollouts.py  the `Reference` seam the step reads: `SampledReference`, `CachedReference`
frozen.py    the frozen model: a deep copy of the initial weights, or LoRA's disabled adapters
cache.py     the reference cache's format: shards, manifest, fingerprint, lookup
build.py     `aapo reference`: sample and score the frozen model into a cache
importer.py  `aapo reference --completions`: a cache from completions sampled elsewhere
"""

from aapo.training.reference.rollouts import CachedReference, Reference, SampledReference

__all__ = ["CachedReference", "Reference", "SampledReference"]
