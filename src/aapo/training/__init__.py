"""The training loop: `train(TrainConfig)`; one step of Algorithm 1 lives in `step.py`."""
