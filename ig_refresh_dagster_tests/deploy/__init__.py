"""deploy/ checked without a cluster: manifests, Helm values, the image and its install."""
