"""Train and evaluate DeepLab models (filled in by the training issue)."""
import sys

if __name__ == "__main__":
    sys.exit("main.py: training is not implemented yet")
