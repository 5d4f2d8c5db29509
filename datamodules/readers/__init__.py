"""Readers of standard on-disk formats: Karpathy/COCO caption JSON, UCF101/HMDB51 video folders and split
files, TIMIT and JSONL speech manifests, MNIST idx, frame arrays (.npy/.npz). They read what a user has."""
