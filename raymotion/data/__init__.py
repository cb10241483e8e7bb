"""Video frame pairs and labelled frames: manifests, decoding, crops, and the Ray Data pipeline."""
