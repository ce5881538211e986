"""Datasets, label maps and file formats (ScanNet, ScanRefer, RGB-D sequences)."""
