"""Training: the step loop, train state, optimizers, Mixup, the Task protocol and the trainers."""
