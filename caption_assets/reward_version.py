"""The reward head's code version, apart from the torch code so the asset definition can carry it.

Bump it whenever ``caption_assets/reward.py`` changes what a trained head computes.
"""

REWARD_CODE_VERSION = "reward-head-v1"
