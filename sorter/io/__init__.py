"""Everything that touches files: scan, decode, place, the index, the manifest, the bundle, labels."""
