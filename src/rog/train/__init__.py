"""Training: patch sampling and augmentation, Dice+CE, clean / Free / PGD adversarial
training, checkpoint and resume, distributed data parallel."""
