"""simclr/data."""
