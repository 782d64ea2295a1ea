"""simclr/train."""
