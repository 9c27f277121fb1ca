"""Files in and out: atomic writes and temporary files, checkpoints and locks, outputs marked as ours and never written
over inputs, image size limits, GeoTIFF bands (rasterio), videos (PyAV). May import: the utils root modules only."""
