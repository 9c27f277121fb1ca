"""Files in and out: atomic writes (no stop signal cuts a commit), checkpoints, locks, our outputs never over inputs,
image size limits, GeoTIFF bands, videos, optional packages and their pins. May import: the utils root modules only."""
