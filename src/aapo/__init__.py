"""aapo: reinforcement-learning post-training of language models on reasoning tasks.

AAPO (Advantage-Augmented Policy Optimization, arXiv 2505.14264) beside the baselines it is
measured against (GRPO, Dr. GRPO, DAPO, GPG), on one trainer.
"""

__version__ = "0.1.0"
