"""simclr/losses."""
