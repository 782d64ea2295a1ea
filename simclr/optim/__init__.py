"""simclr/optim."""
