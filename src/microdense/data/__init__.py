"""Data: the sources (CIFAR-10, ImageFolder, synthetic), the held-out split, and the fast small-image pipeline that
keeps a small dataset as one tensor and augments it in batches."""
