"""Generic models and the one training loop; nothing study-specific.

- ``training``: the torch training loop, checkpoints and model cards
- ``nets``: image CNNs
- ``inn``: conditional invertible networks and the shape classifier + per-shape INN model
- ``regress``: XGBoost regression with quantile intervals
- ``ood``: out-of-distribution scores
"""
