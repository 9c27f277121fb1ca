"""Files in and out: atomic writes, checkpoints, locks, outputs marked as ours and never written over inputs, image
size limits, GeoTIFF bands, videos, the optional packages and their pins. May import: the utils root modules only."""
