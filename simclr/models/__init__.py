"""simclr/models."""
