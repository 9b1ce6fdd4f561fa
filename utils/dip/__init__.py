"""Step 1: Deep Image Prior fitting of noisy images, snapshots, runs over folders and devices."""
