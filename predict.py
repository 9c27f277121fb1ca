"""Predict segmentation masks for images and folders (not implemented yet)."""
import sys

if __name__ == "__main__":
    sys.exit("main.py: prediction is not implemented yet")
