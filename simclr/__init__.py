"""simclr."""
